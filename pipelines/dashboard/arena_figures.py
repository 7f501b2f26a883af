"""The arena's charts (configs/arena_*.yaml): what the win rates cannot show. The exploitability a Nash
learner drives to 0, the style mix that cycles, and the training judge against the oracle's truth."""
from __future__ import annotations

import plotly.graph_objects as go

from pipelines.dashboard.plots import COLOURS, band, layout
from pipelines.dashboard.runs import Run
from pipelines.dashboard.values import num


def exploitability_figure(points: list[dict]) -> go.Figure:
    """The curve a Nash learner drives to 0 (round 0 included), its 95% band, and its two parts."""
    fig, xs = go.Figure(), [m["round"] for m in points]
    mean, lo, hi = ([num(m, "exploitability", k) for m in points] for k in ("mean", "ci_low", "ci_high"))
    band(fig, xs, lo, hi, COLOURS[3], "exploitability 95% CI")
    fig.add_scatter(x=xs, y=mean, mode="lines+markers", name="exploitability", line={"color": COLOURS[3]})
    # beside it, what an ideal policy reads with the same samples (an exact Nash policy: selfplay/exploitability.py),
    # and the plug-in estimate, which a max over noisy means biases upward
    if any(num(m, "exploitability", "floor") is not None for m in points):
        fig.add_scatter(x=xs, y=[num(m, "exploitability", "floor") for m in points], mode="lines",
                        name="floor: what an exact Nash policy reads", line={"color": "grey", "dash": "dash", "width": 1})
        fig.add_scatter(x=xs, y=[num(m, "exploitability", "plugin") for m in points], mode="lines",
                        name="plug-in estimate (biased upward)", line={"color": COLOURS[3], "width": 1},
                        opacity=0.4)
    for k, label, dash in (("quality_part", "quality part (style ignored)", "dot"),
                           ("style_part", "style part (quality at its maximum)", "dash")):
        fig.add_scatter(x=xs, y=[num(m, "exploitability", k) for m in points], mode="lines+markers", name=label,
                        line={"color": COLOURS[3], "dash": dash, "width": 1})
    fig.add_scatter(x=xs, y=[num(m, "mean_quality") for m in points], mode="lines+markers", yaxis="y2",
                    name="mean quality (right; max 10)", line={"color": COLOURS[2]})
    fig.update_layout(yaxis={"rangemode": "tozero"},
                      yaxis2={"overlaying": "y", "side": "right", "title": "quality", "showgrid": False})
    return layout(fig, xs, "Exploitability: how much a best response beats the policy (0 = Nash)",
                  "max_c E P(c ≻ y) − ½")


def style_figure(points: list[dict]) -> go.Figure:
    """The eval samples' style mix per round, stacked to 1: the cyclic part of the arena's game."""
    fig, xs = go.Figure(), [m["round"] for m in points]
    for style, colour in zip(("bold", "calm", "witty", "none"), (COLOURS[3], COLOURS[0], COLOURS[1], "#bbb")):
        fig.add_scatter(x=xs, y=[num(m, "style_mix", style) for m in points], mode="lines+markers", name=style,
                        stackgroup="style", line={"color": colour})
    fig.update_layout(yaxis={"range": [0, 1], "tickformat": ".0%"})
    return layout(fig, xs, "Style mix of the eval samples", "share of samples")


def judge_gap_figure(rounds: list[dict]) -> go.Figure:
    """The training judge's win rate next to the truth's on the same pairs: the gap is the judge being exploited."""
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    for k, label, colour in (("judge_winrate", "training judge", COLOURS[4]), ("oracle_winrate", "oracle", COLOURS[0])):
        fig.add_scatter(x=xs, y=[num(m, "judge_vs_oracle", k) for m in rounds], mode="lines+markers", name=label,
                        line={"color": colour})
    fig.add_hline(y=0.5, line={"color": "grey", "dash": "dash", "width": 1})
    return layout(fig, xs, "Judge vs truth: win rate vs the initial policy on the same pairs", "win rate")


def arena_charts(run: Run) -> list[tuple[str, go.Figure]]:
    """The arena's charts, where the run has their data."""
    points = [m for m in [run.initial, *run.rounds] if isinstance(m.get("exploitability"), dict)]
    charts = [("chart-exploitability", exploitability_figure(points)), ("chart-style", style_figure(points))] \
        if points else []
    if any(isinstance(m.get("judge_vs_oracle"), dict) for m in run.rounds):
        charts.append(("chart-judge-gap", judge_gap_figure(run.rounds)))
    return charts

