"""One run's charts, a function a chart: each takes the run's rounds (or its per-step records) and returns a
plotly figure. CHARTS names them in the order the page shows them (run_charts)."""
from __future__ import annotations

import re

import plotly.graph_objects as go

from pipelines.dashboard.arena_figures import arena_charts
from pipelines.dashboard.plots import COLOURS, error_bars, layout, round_marks, step_traces, winrate_traces
from pipelines.dashboard.runs import Run
from pipelines.dashboard.values import as_dict, as_list, finite, interval, latest, num, nums
from pipelines.layout import STAGES

CHARTS = ("chart-winrate", "chart-matrix", "chart-ratings", "chart-length", "chart-loss", "chart-steps",
          "chart-steps-pref", "chart-judge", "chart-throughput", "chart-stages")


def run_charts(run: Run) -> list[tuple[str, go.Figure]]:
    """(div id, figure) for every chart of the run's page: CHARTS, with the arena's next to the win rates."""
    rounds = run.rounds
    charts = list(zip(CHARTS, (winrate_figure(rounds), matrix_figure(rounds, run.versus), ratings_figure(rounds),
                               length_figure(rounds), loss_figure(rounds), steps_figure(run.steps),
                               steps_pref_figure(run.steps), judge_figure(rounds),
                               throughput_figure(rounds, run.tokens_per_s), stages_figure(rounds))))
    charts[1:1] = arena_charts(run)   # next to the win rates: what they cannot show
    return charts


def _first(rounds: list[dict], *keys: str) -> tuple[int, float] | None:
    return next(((m["round"], num(m, *keys)) for m in rounds if num(m, *keys) is not None), None)


def winrate_figure(rounds: list[dict]) -> go.Figure:
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    for (key, label), colour in zip((("winrate_vs_initial", "vs initial"), ("winrate_vs_previous", "vs previous")),
                                    COLOURS):
        winrate_traces(fig, rounds, key, label, colour, raw_name=f"{label} (raw)",
                       lc_name=f"{label} (length-controlled)", round0=key == "winrate_vs_initial")
    # Round 0, the initial policy, against itself: ½ by definition. Its own trace (the per-round traces
    # keep one point per evaluated round), joined to the first evaluated round by thin connectors.
    for keys, dash in ((("winrate_vs_initial", "mean"), "solid"), (("winrate_vs_initial", "lc"), "dot")):
        first = _first(rounds, *keys)
        if first:
            fig.add_scatter(x=[0, first[0]], y=[0.5, first[1]], mode="lines", showlegend=False, hoverinfo="skip",
                            line={"color": COLOURS[0], "dash": dash, "width": 1})
    fig.add_scatter(x=[0], y=[0.5], mode="markers", name="round 0 (initial policy)",
                    marker={"size": 10, "color": "white", "line": {"color": COLOURS[0], "width": 2}},
                    hovertemplate="round 0, the initial policy: ½ against itself by definition<extra></extra>")
    fig.add_hline(y=0.5, line={"color": "grey", "dash": "dash", "width": 1})
    return layout(fig, [0] + xs, "Win rate of each round's policy (95% intervals)", "win rate")


def _matrix_hover(names: list[str], z: list[list], versus: dict[int, dict]) -> list[list[str]]:
    """Per cell: the pair's raw and length-controlled intervals from the newer round's versus.json
    (row vs column; the older row's cell is the complement: 1 − x, interval ends swapped)."""
    idx = [int(m.group(1)) if (m := re.fullmatch(r"round_(\d+)", nm)) else None for nm in names]
    out = []
    for i, ri in enumerate(idx):
        row = []
        for j, rj in enumerate(idx):
            if i == j:
                row.append("the same policy")
                continue
            if ri is None or rj is None or ri == rj:
                row.append("no interval")
                continue
            s = as_dict(as_dict(versus.get(max(ri, rj))).get(f"round_{min(ri, rj)}"))
            if not s:
                row.append(f"no interval (round_{max(ri, rj)}/eval/versus.json has no round_{min(ri, rj)})")
                continue
            if ri < rj:   # the complement: P(older ≻ newer)
                s = {k: (1 - v if (v := num(s, k)) is not None else None) for k in
                     ("mean", "ci_low", "ci_high", "lc", "lc_ci_low", "lc_ci_high")} | {"n": s.get("n")}
                s["ci_low"], s["ci_high"] = s["ci_high"], s["ci_low"]
                s["lc_ci_low"], s["lc_ci_high"] = s["lc_ci_high"], s["lc_ci_low"]
            n = num(s, "n")
            row.append(f"raw {interval(s, 'mean', 'ci_low', 'ci_high')}<br>"
                       f"LC {interval(s, 'lc', 'lc_ci_low', 'lc_ci_high')}"
                       + (f"<br>{int(n)} prompts" if n is not None else ""))
        out.append(row)
    return out


def matrix_figure(rounds: list[dict], versus: dict[int, dict] | None = None) -> go.Figure:
    src = latest(rounds, "winrate_matrix", "winrate")
    wm = as_dict(src.get("winrate_matrix"))
    z = [nums(row) for row in as_list(wm.get("winrate"))]
    names = [str(p) for p in as_list(wm.get("policies"))] or [f"policy {i}" for i in range(len(z))]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, zmin=0, zmax=1, zmid=0.5, colorscale="RdBu",
                               text=_matrix_hover(names, z, versus or {}), texttemplate="%{z:.2f}",
                               hovertemplate="%{y} vs %{x}: %{z:.3f}<br>%{text}<extra></extra>"))
    cycles = as_list(src.get("cycles"))
    title = f"Win rate of row vs column (round {src['round']}; hover: 95% CIs)" if src else "Win-rate matrix (none yet)"
    title += f" — {len(cycles)} intransitive cycle(s)" if cycles else ""
    fig.update_yaxes(autorange="reversed")
    return layout(fig, None, title, "policy", "opponent")


def ratings_figure(rounds: list[dict]) -> go.Figure:
    src = latest(rounds, "ratings", "elo")
    r = as_dict(src.get("ratings"))
    elo = nums(r.get("elo"))
    lo, hi = nums(r.get("ci_low"), len(elo)), nums(r.get("ci_high"), len(elo))
    names = [str(p) for p in as_list(r.get("policies"))] or list(range(len(elo)))
    fig = go.Figure(go.Scatter(x=names, y=elo, mode="markers", marker={"size": 9, "color": COLOURS[2]},
                               error_y=error_bars(elo, lo, hi)))
    title = "Bradley–Terry ratings" + (f" (round {src['round']})" if src else "")
    return layout(fig, None, title, "Elo, initial = 1000 (95% CI)", "policy")


def length_figure(rounds: list[dict]) -> go.Figure:
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    fig.add_scatter(x=xs, y=[num(m, "mean_response_tokens") for m in rounds], mode="lines+markers",
                    name="mean eval response (tokens)", line={"color": COLOURS[0]})
    for k, label, colour in (("mean_winner_chars", "judge's winners (chars)", COLOURS[2]),
                             ("mean_loser_chars", "judge's losers (chars)", COLOURS[3])):
        ys = [num(m, "judge", k) for m in rounds]
        if any(y is not None for y in ys):   # why: a winner/loser length gap is the judge's length bias
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=label, yaxis="y2",
                            line={"color": colour, "dash": "dot"})
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "tickmode": "auto", "title": "characters",
                              "showgrid": False})
    return layout(fig, xs, "Response length", "tokens")


def loss_figure(rounds: list[dict]) -> go.Figure:
    """Round n's training runs between policy n−1 and policy n, so its curve spans (n−1, n]."""
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    cx, cy = [], []
    for m in rounds:
        curve = nums(m.get("train_loss_curve"))
        cx += [m["round"] - 1 + (i + 1) / len(curve) for i in range(len(curve))] + [None]
        cy += curve + [None]
    if cx:
        fig.add_scatter(x=cx, y=cy, mode="lines", name="loss during the round", line={"color": "#9ab"})
    fig.add_scatter(x=xs, y=[num(m, "train_loss") for m in rounds], mode="markers",
                    name="final loss", marker={"size": 9, "color": COLOURS[0]})
    return layout(fig, xs, "Training loss per round", "loss")


def steps_figure(steps: list[dict]) -> go.Figure:
    """Per-step training loss over all rounds (one global step axis), grad norm on the right."""
    fig = go.Figure()
    if steps:
        step_traces(fig, steps, "loss", "loss", COLOURS[0])
        if any(finite(s.get("grad_norm")) is not None for s in steps):
            step_traces(fig, steps, "grad_norm", "grad norm", "#999", yaxis="y2", width=1, opacity=0.6)
            fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "grad norm", "showgrid": False,
                                      "type": "log", "tickformat": ".2~g", "tickmode": "auto"})
        round_marks(fig, steps)
    title = "Training loss per optimizer step" if steps else "Training loss per step (no train_log.jsonl yet)"
    return layout(fig, None, title, "loss", "optimizer step (all rounds)")


def steps_pref_figure(steps: list[dict]) -> go.Figure:
    """Per-step preference margin and log-ratios (left), pair accuracy (right, 0–1)."""
    fig = go.Figure()
    if steps:
        step_traces(fig, steps, "margin", "margin (chosen − rejected log-ratio)", COLOURS[4])
        step_traces(fig, steps, "chosen_logratio", "chosen log-ratio", COLOURS[2], dash="dot", width=1)
        step_traces(fig, steps, "rejected_logratio", "rejected log-ratio", COLOURS[3], dash="dot", width=1)
        step_traces(fig, steps, "accuracy", "accuracy", COLOURS[1], yaxis="y2", width=1.5)
        round_marks(fig, steps)
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "accuracy", "range": [0, 1.02],
                                  "showgrid": False, "tickmode": "auto", "tickformat": ".0%"})
    title = "Preference margin and accuracy per step" + ("" if steps else " (no train_log.jsonl yet)")
    return layout(fig, None, title, "log-ratio vs reference", "optimizer step (all rounds)")


def judge_figure(rounds: list[dict]) -> go.Figure:
    """The judges' rates: abstentions and position disagreement, for the training and the eval judge."""
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    for src, dash in (("judge", "solid"), ("eval_judge", "dot")):
        if not any(isinstance(m.get(src), dict) for m in rounds):
            continue
        who = "training" if src == "judge" else "eval"
        for k, label, colour in (("abstain_rate", "abstain rate", COLOURS[3]),
                                 ("position_disagreement_rate", "position disagreement", COLOURS[4])):
            fig.add_scatter(x=xs, y=[num(m, src, k) for m in rounds], mode="lines+markers",
                            name=f"{who}: {label}", line={"color": colour, "dash": dash})
    fig.update_layout(yaxis={"rangemode": "tozero", "tickformat": ".0%"})
    return layout(fig, xs, "Judge rates", "share of comparisons")


def throughput_figure(rounds: list[dict], tokens_per_s: dict[int, float] | None = None) -> go.Figure:
    """Judge pairs/s (training and eval judge, left) and generation tokens/s (right), both log scale."""
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    tokens_per_s = tokens_per_s or {}
    for src, label, colour in (("judge", "training judge: pairs/s", COLOURS[5]),
                               ("eval_judge", "eval judge: pairs/s", COLOURS[6])):
        ys = [num(m, src, "pairs_per_s") for m in rounds]
        if any(y is not None for y in ys):
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=label, line={"color": colour})
    # the metrics may carry it (generation.tokens_per_s); else the round's generations manifest
    toks = [num(m, "generation", "tokens_per_s") or tokens_per_s.get(m["round"]) for m in rounds]
    if any(t is not None for t in toks):
        fig.add_scatter(x=xs, y=toks, mode="lines+markers", name="generation: tokens/s", yaxis="y2",
                        line={"color": COLOURS[7], "dash": "dash"}, marker={"symbol": "square"})
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "tokens/s", "type": "log",
                                  "showgrid": False, "tickformat": ".3~s", "tickmode": "auto"})
    fig.update_layout(yaxis={"type": "log", "tickformat": ".3~s"})
    return layout(fig, xs, "Throughput", "pairs/s")


def stages_figure(rounds: list[dict]) -> go.Figure:
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    seen = {str(k) for m in rounds for k in as_dict(m.get("stage_seconds"))}
    for s in [s for s in STAGES if s in seen] + sorted(seen - set(STAGES)):
        fig.add_bar(x=xs, y=[num(m, "stage_seconds", s) for m in rounds], name=s)
    fig.update_layout(barmode="stack")
    return layout(fig, xs, "Stage wall time", "seconds")
