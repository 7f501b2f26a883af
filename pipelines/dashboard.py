"""`make dashboard [RUN_DIR=…]` or `python -m pipelines.dashboard --run-dir DIR`: one self-contained
DIR/dashboard.html from every DIR/round_<n>/eval/metrics.json.

plotly.js is inlined from the installed plotly package, so the page opens from disk with no server
and no network. `make iterate` rebuilds it after each round. Every key but `round` may be missing
from a round's metrics (older runs wrote fewer): charts show what exists and leave gaps elsewhere.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from pipelines.layout import STAGES

CHARTS = ("chart-winrate", "chart-matrix", "chart-ratings", "chart-length", "chart-loss", "chart-judge", "chart-stages")
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
MAX_SAMPLES_PER_ROUND = 6
MAX_SAMPLE_CHARS = 800


def load_rounds(run_dir: Path) -> list[dict]:
    """Every round's metrics, sorted by round; unreadable files are reported and skipped, since a
    half-written metrics.json of the round in progress must not take the whole page down."""
    rounds = []
    for f in run_dir.glob("round_*/eval/metrics.json"):
        name = f.parents[1].name
        if not re.fullmatch(r"round_\d+", name):
            continue
        try:
            m = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            print(f"dashboard: skipping {f}: {e}", file=sys.stderr)
            continue
        if isinstance(m, dict):
            rounds.append({**m, "round": int(name.split("_")[1])})   # the directory is the truth
    return sorted(rounds, key=lambda m: m["round"])


def _get(m: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(m, dict):
            return None
        m = m.get(k)
    return m


def _finite(v: Any) -> float | None:
    """v as a float if it is a finite number, else None (plotly draws None as a gap)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _num(m: Any, *keys: str) -> float | None:
    return _finite(_get(m, *keys))


def _nums(v: Any, n: int | None = None) -> list[float | None]:
    """A list of numbers, padded or cut to n; anything else becomes gaps."""
    v = [_finite(x) for x in v] if isinstance(v, list) else []
    return v if n is None else v[:n] + [None] * (n - len(v[:n]))


def _list(v: Any) -> list:
    return v if isinstance(v, list) else []


def _dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _latest(rounds: list[dict], *keys: str) -> dict:
    """The newest round with a non-empty list at keys: a round missing it falls back to the one before."""
    return next((m for m in reversed(rounds) if _list(_get(m, *keys))), {})


def _band(fig: go.Figure, xs: list, lo: list, hi: list, colour: str, name: str) -> None:
    """A shaded interval, drawn only through rounds that have both ends (a gap would tear the polygon)."""
    pts = [(x, a, b) for x, a, b in zip(xs, lo, hi) if a is not None and b is not None]
    if pts:
        x, a, b = zip(*pts)
        fig.add_scatter(x=list(x) + list(x)[::-1], y=list(b) + list(a)[::-1], fill="toself", fillcolor=colour,
                        opacity=0.18, line={"width": 0}, hoverinfo="skip", name=name, legendgroup=name)


def winrate_figure(rounds: list[dict]) -> go.Figure:
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    for (key, label), colour in zip((("winrate_vs_initial", "vs initial"), ("winrate_vs_previous", "vs previous")),
                                    COLOURS):
        _band(fig, xs, [_num(m, key, "ci_low") for m in rounds], [_num(m, key, "ci_high") for m in rounds],
              colour, f"{label} 95% CI")
        fig.add_scatter(x=xs, y=[_num(m, key, "mean") for m in rounds], mode="lines+markers",
                        name=f"{label} (raw)", line={"color": colour})
        fig.add_scatter(x=xs, y=[_num(m, key, "lc") for m in rounds], mode="lines+markers",
                        name=f"{label} (length-controlled)", line={"color": colour, "dash": "dot"},
                        marker={"symbol": "diamond-open"})
    fig.add_hline(y=0.5, line={"color": "grey", "dash": "dash", "width": 1})
    return _layout(fig, xs, "Win rate of each round's policy", "win rate")


def matrix_figure(rounds: list[dict]) -> go.Figure:
    src = _latest(rounds, "winrate_matrix", "winrate")
    wm = _dict(src.get("winrate_matrix"))
    z = [_nums(row) for row in _list(wm.get("winrate"))]
    names = [str(p) for p in _list(wm.get("policies"))] or [f"policy {i}" for i in range(len(z))]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, zmin=0, zmax=1, zmid=0.5, colorscale="RdBu",
                               texttemplate="%{z:.2f}",
                               hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>"))
    cycles = _list(src.get("cycles"))
    title = f"Win rate of row vs column (round {src['round']})" if src else "Win-rate matrix (none yet)"
    title += f" — {len(cycles)} intransitive cycle(s)" if cycles else ""
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, None, title, "policy", "opponent")


def ratings_figure(rounds: list[dict]) -> go.Figure:
    src = _latest(rounds, "ratings", "elo")
    r = _dict(src.get("ratings"))
    elo = _nums(r.get("elo"))
    lo, hi = _nums(r.get("ci_low"), len(elo)), _nums(r.get("ci_high"), len(elo))
    up = [h - e if h is not None and e is not None else None for h, e in zip(hi, elo)]
    down = [e - l if l is not None and e is not None else None for l, e in zip(lo, elo)]
    names = [str(p) for p in _list(r.get("policies"))] or list(range(len(elo)))
    fig = go.Figure(go.Scatter(x=names, y=elo, mode="markers",
                               marker={"size": 9, "color": COLOURS[2]},
                               error_y={"type": "data", "array": up, "arrayminus": down, "symmetric": False}))
    title = "Bradley–Terry ratings" + (f" (round {src['round']})" if src else "")
    return _layout(fig, None, title, "Elo, initial = 1000 (95% CI)", "policy")


def length_figure(rounds: list[dict]) -> go.Figure:
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    fig.add_scatter(x=xs, y=[_num(m, "mean_response_tokens") for m in rounds], mode="lines+markers",
                    name="mean eval response (tokens)", line={"color": COLOURS[0]})
    for k, label, colour in (("mean_winner_chars", "judge's winners (chars)", COLOURS[2]),
                             ("mean_loser_chars", "judge's losers (chars)", COLOURS[3])):
        ys = [_num(m, "judge", k) for m in rounds]
        if any(y is not None for y in ys):   # why: a winner/loser length gap is the judge's length bias
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=label, yaxis="y2",
                            line={"color": colour, "dash": "dot"})
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "tickmode": "auto", "title": "characters",
                              "showgrid": False})
    return _layout(fig, xs, "Response length", "tokens")


def loss_figure(rounds: list[dict]) -> go.Figure:
    """Round n's training runs between policy n−1 and policy n, so its curve spans (n−1, n]."""
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    cx, cy = [], []
    for m in rounds:
        curve = _nums(m.get("train_loss_curve"))
        cx += [m["round"] - 1 + (i + 1) / len(curve) for i in range(len(curve))] + [None]
        cy += curve + [None]
    if cx:
        fig.add_scatter(x=cx, y=cy, mode="lines", name="loss during the round", line={"color": "#9ab"})
    fig.add_scatter(x=xs, y=[_num(m, "train_loss") for m in rounds], mode="markers",
                    name="final loss", marker={"size": 9, "color": COLOURS[0]})
    return _layout(fig, xs, "Training loss", "loss")


def judge_figure(rounds: list[dict]) -> go.Figure:
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    for src, dash in (("judge", "solid"), ("eval_judge", "dot")):
        if not any(isinstance(m.get(src), dict) for m in rounds):
            continue
        who = "training" if src == "judge" else "eval"
        for k, label, colour in (("abstain_rate", "abstain rate", COLOURS[3]),
                                 ("position_disagreement_rate", "position disagreement", COLOURS[4]),
                                 ("pairs_per_s", "pairs/s", COLOURS[5])):
            fig.add_scatter(x=xs, y=[_num(m, src, k) for m in rounds], mode="lines+markers",
                            name=f"{who}: {label}", line={"color": colour, "dash": dash},
                            yaxis="y2" if k == "pairs_per_s" else "y")
    fig.update_layout(yaxis={"rangemode": "tozero"},
                      yaxis2={"overlaying": "y", "side": "right", "tickmode": "auto", "title": "pairs/s", "type": "log",
                              "showgrid": False})
    return _layout(fig, xs, "Judge diagnostics", "rate")


def stages_figure(rounds: list[dict]) -> go.Figure:
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    seen = {str(k) for m in rounds for k in _dict(m.get("stage_seconds"))}
    for s in [s for s in STAGES if s in seen] + sorted(seen - set(STAGES)):
        fig.add_bar(x=xs, y=[_num(m, "stage_seconds", s) for m in rounds], name=s)
    fig.update_layout(barmode="stack")
    return _layout(fig, xs, "Stage wall time", "seconds")


def _layout(fig: go.Figure, rounds: list[int] | None, title: str, ytitle: str, xtitle: str = "round") -> go.Figure:
    """Shared look; a round axis gets exactly one tick per round that has metrics."""
    fig.update_layout(title={"text": title, "x": 0.02}, xaxis_title=xtitle, yaxis_title=ytitle, height=420,
                      margin={"l": 70, "r": 70, "t": 50, "b": 40}, template="plotly_white",
                      legend={"orientation": "h", "y": -0.18, "x": 0}, font={"size": 12})
    if rounds is not None:
        fig.update_xaxes(tickmode="array", tickvals=rounds, ticktext=[str(n) for n in rounds])
        # why: a round missing one metric should not hide the trend; its markers show what exists
        fig.update_traces(connectgaps=True, selector={"type": "scatter", "mode": "lines+markers"})
    return fig


def summary_table(rounds: list[dict]) -> str:
    """The headline numbers as text, for reading without hovering."""
    def cell(m: dict, *keys: str, fmt: str = "{:.3f}") -> str:
        v = _num(m, *keys)
        return fmt.format(v) if v is not None else "–"

    def wr(m: dict, key: str) -> str:
        lo, hi = cell(m, key, "ci_low"), cell(m, key, "ci_high")
        return f"{cell(m, key, 'mean')} [{lo}, {hi}]"

    head = ("round", "vs initial [95% CI]", "LC vs initial", "vs previous [95% CI]", "LC vs previous",
            "tokens", "train loss")
    rows = "".join(f"<tr><td>{m['round']}</td><td>{wr(m, 'winrate_vs_initial')}</td>"
                   f"<td>{cell(m, 'winrate_vs_initial', 'lc')}</td><td>{wr(m, 'winrate_vs_previous')}</td>"
                   f"<td>{cell(m, 'winrate_vs_previous', 'lc')}</td>"
                   f"<td>{cell(m, 'mean_response_tokens', fmt='{:.1f}')}</td><td>{cell(m, 'train_loss')}</td></tr>"
                   for m in rounds)
    return f"<table id='summary'><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{rows}</table>"


def samples_table(rounds: list[dict]) -> str:
    """Sample generations; everything model-written is escaped (a response may well contain HTML)."""
    def text(s: dict, k: str) -> str:
        v = str(s.get(k, ""))
        return html.escape(v if len(v) <= MAX_SAMPLE_CHARS else v[:MAX_SAMPLE_CHARS] + " …")

    rows = "".join(f"<tr data-round='{m['round']}'><td>{m['round']}</td><td>{text(s, 'policy')}</td>"
                   f"<td>{text(s, 'prompt')}</td><td class='resp'>{text(s, 'response')}</td></tr>"
                   for m in rounds for s in _list(m.get("samples"))[:MAX_SAMPLES_PER_ROUND] if isinstance(s, dict))
    return ("<table id='samples'><tr><th>round</th><th>policy</th><th>prompt</th><th>response</th></tr>"
            f"{rows}</table>")


def build_dashboard(run_dir: Path) -> Path:
    """Write run_dir/dashboard.html (atomically: a browser reloading mid-write sees the old page)."""
    run_dir = Path(run_dir)
    rounds = load_rounds(run_dir)
    figs = (winrate_figure(rounds), matrix_figure(rounds), ratings_figure(rounds), length_figure(rounds),
            loss_figure(rounds), judge_figure(rounds), stages_figure(rounds))
    config = {"displaylogo": False, "responsive": True}
    divs = "".join(f"<div class='card'>{f.to_html(full_html=False, include_plotlyjs=False, div_id=cid, config=config)}"
                   "</div>" for cid, f in zip(CHARTS, figs))
    algos = sorted({str(m["algorithm"]) for m in rounds if m.get("algorithm")})
    page = (f"<!doctype html><html><head><meta charset='utf-8'><meta name='rounds' content='{len(rounds)}'>"
            f"<title>selfplay: {html.escape(run_dir.name)}</title><style>{_CSS}</style>"
            f"<script>{get_plotlyjs()}</script><script>window.DASHBOARD_ROUNDS = {len(rounds)};</script></head>"
            f"<body><h1>selfplay run <code>{html.escape(str(run_dir))}</code></h1>"
            f"<p>{len(rounds)} evaluated round(s); algorithm {html.escape(', '.join(algos) or '?')}. "
            "Win rates are P(policy ≻ opponent) from the eval judge, ties ½; bands are 95% intervals; "
            "length-controlled = at zero length difference (AlpacaEval 2.0 style).</p>"
            f"{summary_table(rounds)}<div class='grid'>{divs}</div>"
            f"<h2>Sample generations</h2>{samples_table(rounds)}<script>{_RESIZE}</script></body></html>")
    out = run_dir / "dashboard.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


# why: each chart is sized when its script runs, before the rest of the page exists; re-fit once all is laid out
# (DASHBOARD_READY tells tests and screenshot tools that no redraw is pending).
_RESIZE = ("window.addEventListener('load', () => Promise.all([...document.querySelectorAll('.js-plotly-plot')]"
           ".map(d => Plotly.Plots.resize(d))).then(() => { window.DASHBOARD_READY = true; }));")
_CSS = ("body{font-family:system-ui,sans-serif;margin:20px;background:#fafafa;color:#222}"
        ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(620px,1fr));gap:12px;margin-top:12px}"
        ".card{background:white;padding:6px;border:1px solid #ddd;border-radius:4px}"
        "table{border-collapse:collapse;background:white;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
        "th{background:#f0f0f0}td.resp{white-space:pre-wrap;max-width:60em}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write RUN_DIR/dashboard.html from every round's metrics.json.")
    ap.add_argument("--run-dir", default="runs/arena")
    print(build_dashboard(Path(ap.parse_args(argv).run_dir)))


if __name__ == "__main__":
    main()
