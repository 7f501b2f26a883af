"""Several runs on one page (`make dashboard RUN_DIR="runs/a runs/b"`): each chart overlays the runs, a
trace per run named by its directory, and the config panel shows the keys whose values differ."""
from __future__ import annotations

import html
import json
import re
from dataclasses import replace
from pathlib import Path

import plotly.graph_objects as go

from pipelines.dashboard.page import INTRO, page_html, write_page
from pipelines.dashboard.plots import COLOURS, cycle, error_bars, layout, step_traces, winrate_traces
from pipelines.dashboard.runs import Run, load_run, run_names
from pipelines.dashboard.tables import parse_config, show_value
from pipelines.dashboard.values import as_dict, as_list, fmt, interval, latest, num, nums

COMPARE_CHARTS = ("chart-winrate", "chart-previous", "chart-elo", "chart-length", "chart-steps")


def build_comparison(run_dirs: list[Path], out: Path | None = None) -> Path:
    """Write one page overlaying several runs (out, by default dashboard.html in the first run dir's parent)."""
    dirs = [Path(d) for d in run_dirs]
    runs = [replace(load_run(d), name=name) for d, name in zip(dirs, run_names(dirs))]
    charts = list(zip(COMPARE_CHARTS, (
        compare_winrate_figure(runs, "winrate_vs_initial", "Win rate vs the initial policy"),
        compare_winrate_figure(runs, "winrate_vs_previous", "Win rate vs the previous round"),
        compare_elo_figure(runs), compare_length_figure(runs), compare_steps_figure(runs))))
    names = ", ".join(f"<code>{html.escape(str(r.dir))}</code> ({len(r.rounds)} rounds)" for r in runs)
    page = page_html(f"selfplay: {' vs '.join(r.name for r in runs)}", f"selfplay: {len(runs)} runs compared",
                     f"{names}. Each run's policies are judged against its own initial policy. {INTRO}", charts,
                     compare_summary_table(runs), compare_config_panel(runs),
                     {"DASHBOARD_ROUNDS": max((len(r.rounds) for r in runs), default=0),
                      "DASHBOARD_RUNS": {r.name: len(r.rounds) for r in runs}})
    return write_page(Path(out) if out else dirs[0].resolve().parent / "dashboard.html", page, "comparison dashboard")


def compare_winrate_figure(runs: list[Run], key: str, title: str) -> go.Figure:
    """One raw trace per run (named by the run) with its 95% band, its LC curve dotted with error bars;
    vs initial starts every run at round 0 (½)."""
    fig = go.Figure()
    vs_initial = key == "winrate_vs_initial"
    for run, colour in zip(runs, cycle(COLOURS, len(runs))):
        rounds = ([{"round": 0, key: {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5, "lc": 0.5, "lc_ci_low": 0.5,
                                      "lc_ci_high": 0.5}}] if vs_initial else []) + run.rounds
        winrate_traces(fig, rounds, key, run.name, colour, raw_name=run.name, lc_name=f"{run.name} (LC)",
                       group=run.name)
    fig.add_hline(y=0.5, line={"color": "grey", "dash": "dash", "width": 1})
    xs = ([0] if vs_initial else []) + [x for r in runs for x in r.xs]
    return layout(fig, xs, title, "win rate")


def compare_elo_figure(runs: list[Run]) -> go.Figure:
    """Each run's latest Bradley–Terry ratings of its own rounds' policies (each anchored on its initial)."""
    fig = go.Figure()
    ticks = []
    for run, colour in zip(runs, cycle(COLOURS, len(runs))):
        r = as_dict(latest(run.rounds, "ratings", "elo").get("ratings"))
        elo = nums(r.get("elo"))
        lo, hi = nums(r.get("ci_low"), len(elo)), nums(r.get("ci_high"), len(elo))
        names = [str(p) for p in as_list(r.get("policies"))][:len(elo)]
        xs = [int(m.group(1)) if (m := re.fullmatch(r"round_(\d+)", nm)) else i
              for i, nm in enumerate(names + [""] * (len(elo) - len(names)))]
        ticks += xs
        fig.add_scatter(x=xs, y=elo, mode="lines+markers", name=run.name, legendgroup=run.name,
                        line={"color": colour}, error_y={**error_bars(elo, lo, hi), "color": colour})
    return layout(fig, ticks, "Bradley–Terry ratings (latest round of each run)", "Elo, initial = 1000 (95% CI)")


def compare_length_figure(runs: list[Run]) -> go.Figure:
    fig = go.Figure()
    for run, colour in zip(runs, cycle(COLOURS, len(runs))):
        fig.add_scatter(x=run.xs, y=[num(m, "mean_response_tokens") for m in run.rounds], mode="lines+markers",
                        name=run.name, line={"color": colour})
    return layout(fig, [x for r in runs for x in r.xs], "Mean eval response length", "tokens")


def compare_steps_figure(runs: list[Run]) -> go.Figure:
    fig = go.Figure()
    for run, colour in zip(runs, cycle(COLOURS, len(runs))):
        if run.steps:
            step_traces(fig, run.steps, "loss", run.name, colour, width=1.5)
    return layout(fig, None, "Training loss per optimizer step", "loss", "optimizer step (all rounds)")


def compare_config_panel(runs: list[Run]) -> str:
    """The config keys whose values differ between the runs, side by side; each full config below."""
    head = "<h2>Config <small>(config.yaml: the keys that differ)</small></h2>"
    flats = [parse_config(r.config) for r in runs]
    have = [f for f in flats if f is not None]
    keys = list(dict.fromkeys(k for f in have for k in f))
    differ = [k for k in keys if len({json.dumps(f.get(k, "<missing>"), sort_keys=True, default=str)
                                      for f in have}) > 1]
    cols = "".join(f"<th>{html.escape(r.name)}</th>" for r in runs)

    def cell(f: dict | None, k: str) -> str:
        if f is None:
            return "<td class='muted'>no config.yaml</td>"
        return f"<td>{html.escape(show_value(f[k]))}</td>" if k in f else "<td class='muted'>–</td>"

    rows = "".join(f"<tr><td>{html.escape(k)}</td>{''.join(cell(f, k) for f in flats)}</tr>" for k in differ)
    missing = [r.name for r, f in zip(runs, flats) if f is None]
    note = (f"<p>{len(differ)} of {len(keys)} keys differ"
            + (f"; no readable config.yaml in {html.escape(', '.join(missing))}" if missing else "") + ".</p>")
    full = "".join(f"<div><h3>{html.escape(r.name)}</h3><pre>{html.escape(r.config or 'no config.yaml')}</pre></div>"
                   for r in runs)
    return (f"<section id='config' class='card'>{head}{note}<table id='config-diff'><tr><th>key</th>{cols}</tr>"
            f"{rows}</table><details><summary>each run's full config.yaml</summary>"
            f"<div class='cfgside'>{full}</div></details></section>")


def compare_summary_table(runs: list[Run]) -> str:
    head = ("run", "rounds", "algorithm", "last round", "vs initial [95% CI]", "LC vs initial [95% CI]",
            "vs previous [95% CI]", "train loss")
    rows = ""
    for r in runs:
        last = r.rounds[-1] if r.rounds else {}
        algos = ", ".join(sorted({str(m["algorithm"]) for m in r.rounds if m.get("algorithm")})) or "?"
        rows += (f"<tr data-run='{html.escape(r.name)}'><td>{html.escape(r.name)}</td><td>{len(r.rounds)}</td>"
                 f"<td>{html.escape(algos)}</td><td>{last.get('round', '–')}</td>"
                 f"<td>{interval(last.get('winrate_vs_initial'), 'mean', 'ci_low', 'ci_high')}</td>"
                 f"<td>{interval(last.get('winrate_vs_initial'), 'lc', 'lc_ci_low', 'lc_ci_high')}</td>"
                 f"<td>{interval(last.get('winrate_vs_previous'), 'mean', 'ci_low', 'ci_high')}</td>"
                 f"<td>{fmt(num(last, 'train_loss'))}</td></tr>")
    return f"<table id='summary'><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{rows}</table>"

