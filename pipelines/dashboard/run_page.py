"""One run's page, RUN_DIR/dashboard.html: its charts, headline numbers, config and sample generations.
The round driver rebuilds it after every round (pipelines/round.py) and warms plotly up beforehand."""
from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go

from pipelines.dashboard.figures import run_charts
from pipelines.dashboard.page import INTRO, page_html, write_page
from pipelines.dashboard.runs import load_run
from pipelines.dashboard.tables import config_panel, samples_table, summary_table


def warm_up() -> None:
    """Plotly's lazy imports and first-figure setup (0.1-0.2 s here), done by the round driver while it waits
    on a stage, so that a refresh after the round costs only its own figures."""
    fig = go.Figure(go.Scatter(x=[0], y=[0]), layout={"template": "plotly_white"})
    fig.add_hline(y=0.5)
    fig.add_trace(go.Heatmap(z=[[0.5]]))
    fig.to_html(include_plotlyjs=False, full_html=False)


def build_dashboard(run_dir: Path, out: Path | None = None) -> Path:
    """Write run_dir/dashboard.html (or out) for one run; PageWriteError if it cannot be written."""
    run = load_run(Path(run_dir))
    rounds = run.rounds
    algos = sorted({str(m["algorithm"]) for m in rounds if m.get("algorithm")})
    intro = (f"{len(rounds)} evaluated round(s); algorithm {html.escape(', '.join(algos) or '?')}; "
             f"{len(run.steps)} optimizer step(s) logged. {INTRO}")
    page = page_html(f"selfplay: {run.name}", f"selfplay run <code>{html.escape(str(run.dir))}</code>", intro,
                     run_charts(run), summary_table(rounds),
                     f"{config_panel(run)}<h2>Sample generations</h2>{samples_table(rounds)}",
                     {"DASHBOARD_ROUNDS": len(rounds), "DASHBOARD_STEPS": len(run.steps)})
    return write_page(Path(out) if out else run.dir / "dashboard.html", page, "dashboard")
