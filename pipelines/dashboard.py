"""`make dashboard [RUN_DIR=…]`: one self-contained RUN_DIR/dashboard.html from every round's metrics.json.

plotly.js is inlined from the installed plotly package, so the page opens from disk with no server
and no network. `make iterate` rebuilds it after each round.
"""
from __future__ import annotations

import argparse
import html
import json
import re
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

CHARTS = ("chart-winrate", "chart-matrix", "chart-ratings", "chart-length", "chart-loss", "chart-judge", "chart-stages")


def load_rounds(run_dir: Path) -> list[dict]:
    rounds = []
    for f in run_dir.glob("round_*/eval/metrics.json"):
        if re.fullmatch(r"round_\d+", f.parents[1].name):
            rounds.append(json.loads(f.read_text()))
    return sorted(rounds, key=lambda m: m["round"])


def _get(m: dict, *keys, default=None):
    for k in keys:
        if not isinstance(m, dict) or m.get(k) is None:
            return default
        m = m[k]
    return m


def winrate_figure(rounds: list[dict]) -> go.Figure:
    fig = go.Figure()
    xs = [m["round"] for m in rounds]
    for key, name, colour in (("winrate_vs_initial", "vs initial", "31,119,180"), ("winrate_vs_previous", "vs previous", "255,127,14")):
        mean = [_get(m, key, "mean") for m in rounds]
        lo, hi = [_get(m, key, "ci_low") for m in rounds], [_get(m, key, "ci_high") for m in rounds]
        fig.add_scatter(x=xs + xs[::-1], y=hi + lo[::-1], fill="toself", fillcolor=f"rgba({colour},0.15)",
                        line={"width": 0}, hoverinfo="skip", name=f"{name} 95% CI")
        fig.add_scatter(x=xs, y=mean, mode="lines+markers", name=f"{name} (raw)", line={"color": f"rgb({colour})"})
        fig.add_scatter(x=xs, y=[_get(m, key, "lc") for m in rounds], mode="lines+markers",
                        name=f"{name} (length-controlled)", line={"color": f"rgb({colour})", "dash": "dot"})
    fig.add_hline(y=0.5, line={"color": "grey", "dash": "dash"})
    return _layout(fig, "Win rate per round", "round", "win rate")


def matrix_figure(last: dict) -> go.Figure:
    wm = last.get("winrate_matrix") or {"policies": [], "winrate": []}
    fig = go.Figure(go.Heatmap(z=wm["winrate"], x=wm["policies"], y=wm["policies"], zmin=0, zmax=1,
                               colorscale="RdBu", texttemplate="%{z:.2f}"))
    cycles = last.get("cycles") or []
    title = "Win rate of row vs column" + (f" — {len(cycles)} intransitive cycle(s)" if cycles else "")
    return _layout(fig, title, "opponent", "policy")


def ratings_figure(last: dict) -> go.Figure:
    r = last.get("ratings") or {"policies": [], "elo": [], "ci_low": [], "ci_high": []}
    err = [h - e for h, e in zip(r["ci_high"], r["elo"])]
    fig = go.Figure(go.Scatter(x=r["policies"], y=r["elo"], mode="markers",
                               error_y={"type": "data", "array": err}))
    return _layout(fig, "Bradley–Terry ratings (Elo scale, initial = 1000)", "policy", "rating")


def series_figure(rounds: list[dict], key: str, title: str, ytitle: str) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[m["round"] for m in rounds], y=[m.get(key) for m in rounds], mode="lines+markers"))
    return _layout(fig, title, "round", ytitle)


def judge_figure(rounds: list[dict]) -> go.Figure:
    fig = go.Figure()
    xs = [m["round"] for m in rounds]
    for k in ("abstain_rate", "position_disagreement_rate"):
        fig.add_scatter(x=xs, y=[_get(m, "judge", k) for m in rounds], mode="lines+markers", name=k)
    fig.add_scatter(x=xs, y=[_get(m, "judge", "pairs_per_s") for m in rounds], mode="lines+markers",
                    name="pairs/s", yaxis="y2")
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "pairs/s"})
    return _layout(fig, "Training judge diagnostics", "round", "rate")


def stages_figure(rounds: list[dict]) -> go.Figure:
    fig = go.Figure()
    names = sorted({k for m in rounds for k in (m.get("stage_seconds") or {})})
    for s in names:
        fig.add_bar(x=[m["round"] for m in rounds], y=[_get(m, "stage_seconds", s, default=0) for m in rounds], name=s)
    fig.update_layout(barmode="stack")
    return _layout(fig, "Stage wall time", "round", "seconds")


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=400, margin={"l": 60, "r": 30, "t": 50, "b": 50},
                      template="plotly_white", legend={"orientation": "h", "y": -0.25})
    if x == "round":
        fig.update_xaxes(dtick=1)
    return fig


def samples_table(rounds: list[dict]) -> str:
    rows = "".join(f"<tr data-round='{m['round']}'><td>{m['round']}</td><td>{html.escape(s.get('prompt', ''))}</td>"
                   f"<td>{html.escape(s.get('response', ''))}</td></tr>"
                   for m in rounds for s in (m.get("samples") or []))
    return f"<table id='samples'><tr><th>round</th><th>prompt</th><th>response</th></tr>{rows}</table>"


def build_dashboard(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    rounds = load_rounds(run_dir)
    last = rounds[-1] if rounds else {}
    figs = [winrate_figure(rounds), matrix_figure(last), ratings_figure(last),
            series_figure(rounds, "mean_response_tokens", "Mean response length", "tokens"),
            series_figure(rounds, "train_loss", "Training loss", "loss"), judge_figure(rounds), stages_figure(rounds)]
    divs = "".join(f"<div class='card'>{f.to_html(full_html=False, include_plotlyjs=False, div_id=cid)}</div>"
                   for cid, f in zip(CHARTS, figs))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><meta name='rounds' content='{len(rounds)}'>"
            f"<title>selfplay: {html.escape(run_dir.name)}</title><style>{_CSS}</style>"
            f"<script>{get_plotlyjs()}</script><script>window.DASHBOARD_ROUNDS = {len(rounds)};</script></head>"
            f"<body><h1>selfplay run <code>{html.escape(str(run_dir))}</code></h1>"
            f"<p>{len(rounds)} round(s), algorithm {html.escape(str(last.get('algorithm', '?')))}</p>"
            f"<div class='grid'>{divs}</div><h2>Sample generations</h2>{samples_table(rounds)}</body></html>")
    out = run_dir / "dashboard.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(out)
    return out


_CSS = ("body{font-family:sans-serif;margin:20px;background:#fafafa}.grid{display:grid;"
        "grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:12px}.card{background:white;padding:6px;"
        "border:1px solid #ddd}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run-dir", default="runs/arena")
    print(build_dashboard(Path(ap.parse_args().run_dir)))


if __name__ == "__main__":
    main()
