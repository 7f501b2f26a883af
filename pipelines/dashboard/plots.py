"""The pieces every chart is drawn with (one run's, several runs', the league's): the colours, interval
bands and error bars, the win-rate and per-step traces, and the shared look of a chart."""
from __future__ import annotations

import html

import plotly.graph_objects as go

from pipelines.dashboard.values import finite, num

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
MARKERS_UP_TO = 400            # per-step charts draw markers only while they stay readable
PHASE_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x")


def cycle(seq: tuple, n: int) -> list:
    return [seq[i % len(seq)] for i in range(n)]


def band(fig: go.Figure, xs: list, lo: list, hi: list, colour: str, name: str, group: str | None = None,
         **kw) -> None:
    """A shaded interval, drawn only through rounds that have both ends (a gap would tear the polygon)."""
    pts = [(x, a, b) for x, a, b in zip(xs, lo, hi) if a is not None and b is not None]
    if pts:
        x, a, b = zip(*pts)
        fig.add_scatter(x=list(x) + list(x)[::-1], y=list(b) + list(a)[::-1], fill="toself", fillcolor=colour,
                        opacity=0.18, line={"width": 0}, hoverinfo="skip", name=name,
                        legendgroup=group or name, **kw)


def error_bars(ys: list, lo: list, hi: list) -> dict:
    """Asymmetric error bars from interval ends (no bar where either end or the point is missing)."""
    up = [h - y if h is not None and y is not None else None for y, h in zip(ys, hi)]
    down = [y - l if l is not None and y is not None else None for y, l in zip(ys, lo)]
    return {"type": "data", "array": up, "arrayminus": down, "symmetric": False, "thickness": 1.2, "width": 4}


def winrate_traces(fig: go.Figure, rounds: list[dict], key: str, label: str, colour: str, *,
                   raw_name: str, lc_name: str, group: str | None = None, round0: bool = False) -> None:
    """Raw win rate (line, 95% band) and length-controlled (dotted, 95% error bars) for one opponent.

    round0 prepends the initial policy against itself (½, a zero-width interval) to the band; the
    caller decides how the point itself is drawn."""
    xs = [m["round"] for m in rounds]
    mean, lo, hi = ([num(m, key, k) for m in rounds] for k in ("mean", "ci_low", "ci_high"))
    lc, lc_lo, lc_hi = ([num(m, key, k) for m in rounds] for k in ("lc", "lc_ci_low", "lc_ci_high"))
    bx, blo, bhi = ([0] + xs, [0.5] + lo, [0.5] + hi) if round0 else (xs, lo, hi)
    band(fig, bx, blo, bhi, colour, f"{label} 95% CI", group, showlegend=group is None)
    hover = "round %{x}: %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
    fig.add_scatter(x=xs, y=mean, mode="lines+markers", name=raw_name, line={"color": colour},
                    customdata=[[a, b] for a, b in zip(lo, hi)], legendgroup=group,
                    hovertemplate=hover + f"<extra>{html.escape(raw_name)}</extra>")
    fig.add_scatter(x=xs, y=lc, mode="lines+markers", name=lc_name, line={"color": colour, "dash": "dot"},
                    marker={"symbol": "diamond-open", "size": 8}, error_y={**error_bars(lc, lc_lo, lc_hi),
                                                                          "color": colour},
                    customdata=[[a, b] for a, b in zip(lc_lo, lc_hi)], legendgroup=group,
                    hovertemplate=hover + f"<extra>{html.escape(lc_name)}</extra>")


def by_round(steps: list[dict]) -> list[tuple[int, list[dict]]]:
    groups: dict[int, list[dict]] = {}
    for s in steps:
        groups.setdefault(s["round"], []).append(s)
    return sorted(groups.items())


def step_traces(fig: go.Figure, steps: list[dict], key: str, name: str, colour: str, *, yaxis: str = "y",
                dash: str = "solid", width: float = 2, opacity: float = 1.0) -> None:
    """One trace per round (so rounds do not join up), one legend entry: global step against steps[key]."""
    markers = len(steps) <= MARKERS_UP_TO
    phases = sorted({str(s.get("phase", "train")) for s in steps})
    for i, (n, rs) in enumerate(by_round(steps)):
        fig.add_scatter(
            x=[s["global_step"] for s in rs], y=[finite(s.get(key)) for s in rs],
            mode="lines+markers" if markers else "lines", name=name, legendgroup=name, showlegend=i == 0,
            line={"color": colour, "dash": dash, "width": width}, opacity=opacity, yaxis=yaxis,
            marker={"size": 5, "symbol": [PHASE_SYMBOLS[phases.index(str(s.get("phase", "train"))) % 5] for s in rs]},
            customdata=[[n, s.get("step"), str(s.get("phase", "")), finite(s.get("lr")), finite(s.get("grad_norm"))]
                        for s in rs],
            hovertemplate=(f"{html.escape(name)} %{{y:.4g}}<br>round %{{customdata[0]}}, step %{{customdata[1]}} "
                           "(%{customdata[2]})<br>lr %{customdata[3]:.3g}, grad norm %{customdata[4]:.3g}<extra></extra>"))


def round_marks(fig: go.Figure, steps: list[dict]) -> None:
    """A dotted line where each round's training starts, labelled with the round."""
    for n, rs in by_round(steps):
        fig.add_vline(x=rs[0]["global_step"] - 0.5, line={"color": "#bbb", "dash": "dot", "width": 1},
                      annotation_text=f"round {n}", annotation_position="top right", annotation_font_size=10)


def layout(fig: go.Figure, rounds: list[int] | None, title: str, ytitle: str, xtitle: str = "round") -> go.Figure:
    """Shared look; a round axis gets exactly one tick per round that has metrics."""
    fig.update_layout(title={"text": title, "x": 0.02}, xaxis_title=xtitle, yaxis_title=ytitle, height=420,
                      margin={"l": 70, "r": 70, "t": 50, "b": 40}, template="plotly_white",
                      legend={"orientation": "h", "y": -0.18, "x": 0}, font={"size": 12})
    if rounds is not None:
        rounds = sorted(set(rounds))
        fig.update_xaxes(tickmode="array", tickvals=rounds, ticktext=[str(n) for n in rounds])
        # why: a round missing one metric should not hide the trend; its markers show what exists
        fig.update_traces(connectgaps=True, selector={"type": "scatter", "mode": "lines+markers"})
    return fig
