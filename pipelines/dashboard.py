"""`make dashboard [RUN_DIR=…]` or `python -m pipelines.dashboard --run-dir DIR`: one self-contained
DIR/dashboard.html from every DIR/round_<n>/eval/metrics.json, each round's versus.json and
policy/train_log.jsonl, and the run's config.yaml.

Several runs (`make dashboard RUN_DIR="runs/a runs/b"`, or `--run-dir A B`) give one comparison page
instead: the runs' curves overlaid, one trace per run named by its directory's basename, and the
config keys that differ. It is written to --out, by default dashboard.html in the first run dir's
parent (runs/dashboard.html above); a single run's page goes to RUN_DIR/dashboard.html unless --out.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from pipelines.layout import STAGES

CHARTS = ("chart-winrate", "chart-matrix", "chart-ratings", "chart-length", "chart-loss", "chart-steps",
          "chart-steps-pref", "chart-judge", "chart-throughput", "chart-stages")
COMPARE_CHARTS = ("chart-winrate", "chart-previous", "chart-elo", "chart-length", "chart-steps")
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
MAX_SAMPLES_PER_ROUND = 6
MAX_SAMPLE_CHARS = 800
MARKERS_UP_TO = 400            # per-step charts draw markers only while they stay readable
PHASE_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x")


# ------------------------------------------------------------------------------------------- loading

def _round_dirs(run_dir: Path, rel: str) -> list[tuple[int, Path]]:
    """(n, run_dir/round_<n>/rel) for every round directory holding rel, sorted by n."""
    found = []
    for f in run_dir.glob(f"round_*/{rel}"):
        name = f.relative_to(run_dir).parts[0]
        if re.fullmatch(r"round_\d+", name):
            found.append((int(name.split("_")[1]), f))
    return sorted(found)


def _read_json(f: Path) -> Any:
    """f's JSON, or None (reported): a half-written file of the round in progress must not take the page down."""
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as e:
        print(f"dashboard: skipping {f}: {e}", file=sys.stderr)
        return None


def load_rounds(run_dir: Path, first: int = 1) -> list[dict]:
    """Every round's metrics from round `first` on, sorted by round; unreadable files are reported and
    skipped. Round 0's metrics.json (the initial policy: exploitability, no win rates) is read only with first=0."""
    rounds = []
    for n, f in _round_dirs(Path(run_dir), "eval/metrics.json"):
        m = _read_json(f) if n >= first else None
        if isinstance(m, dict):
            from pipelines.evaluate import read_timings, with_timings   # stage times, pairs/s: beside the metrics
            rounds.append({**with_timings(m, read_timings(f.parent)), "round": n})   # the directory is the truth
    return rounds


def load_versus(run_dir: Path) -> dict[int, dict]:
    """{n: round n's versus.json}: its win rate (with intervals) against every earlier round."""
    out = {}
    for n, f in _round_dirs(Path(run_dir), "eval/versus.json"):
        v = _read_json(f)
        if isinstance(v, dict):
            out[n] = v
    return out


def load_train_log(run_dir: Path) -> list[dict]:
    """Every trained round's per-step records (policy/train_log.jsonl), in round order, each with its
    `round` and a `global_step` that counts optimizer steps across rounds. Unparsable lines (the last
    one of a log being written) are skipped."""
    steps: list[dict] = []
    for n, f in _round_dirs(Path(run_dir), "policy/train_log.jsonl"):
        try:
            lines = f.read_text().splitlines()
        except OSError as e:
            print(f"dashboard: skipping {f}: {e}", file=sys.stderr)
            continue
        records = []
        for line in lines:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict):
                records.append(r)
        steps += [{**r, "round": n, "global_step": len(steps) + i + 1} for i, r in enumerate(records)]
    return steps


def load_tokens_per_s(run_dir: Path) -> dict[int, float]:
    """Generation throughput of each round's training samples, from its generations manifest."""
    out = {}
    for n, f in _round_dirs(Path(run_dir), "generations/manifest.json"):
        v = _finite(_get(_read_json(f), "extra", "tokens_per_s"))
        if v is not None:
            out[n] = v
    return out


@dataclass
class Run:
    dir: Path
    rounds: list[dict] = field(default_factory=list)
    versus: dict[int, dict] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    tokens_per_s: dict[int, float] = field(default_factory=dict)
    config: str | None = None       # config.yaml's text; None when the run has none
    name: str = ""
    initial: dict = field(default_factory=dict)   # round 0's metrics.json: the initial policy's exploitability

    @property
    def xs(self) -> list[int]:
        return [m["round"] for m in self.rounds]


def load_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    try:
        config = (run_dir / "config.yaml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        config = None
    initial = next((m for m in load_rounds(run_dir, first=0) if m["round"] == 0), {})
    return Run(run_dir, load_rounds(run_dir), load_versus(run_dir), load_train_log(run_dir),
               load_tokens_per_s(run_dir), config, run_dir.resolve().name or str(run_dir), initial)


# --------------------------------------------------------------------------------------------- values

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


def _fmt(v: float | None, fmt: str = "{:.3f}") -> str:
    return fmt.format(v) if v is not None else "–"


def _interval(s: Any, mean: str, lo: str, hi: str) -> str:
    """'0.612 [0.571, 0.650]' from a summary dict; dashes for what is missing."""
    return f"{_fmt(_num(s, mean))} [{_fmt(_num(s, lo))}, {_fmt(_num(s, hi))}]"


# ---------------------------------------------------------------------------------------------- traces

def _band(fig: go.Figure, xs: list, lo: list, hi: list, colour: str, name: str, group: str | None = None,
          **kw) -> None:
    """A shaded interval, drawn only through rounds that have both ends (a gap would tear the polygon)."""
    pts = [(x, a, b) for x, a, b in zip(xs, lo, hi) if a is not None and b is not None]
    if pts:
        x, a, b = zip(*pts)
        fig.add_scatter(x=list(x) + list(x)[::-1], y=list(b) + list(a)[::-1], fill="toself", fillcolor=colour,
                        opacity=0.18, line={"width": 0}, hoverinfo="skip", name=name,
                        legendgroup=group or name, **kw)


def _error_bars(ys: list, lo: list, hi: list) -> dict:
    """Asymmetric error bars from interval ends (no bar where either end or the point is missing)."""
    up = [h - y if h is not None and y is not None else None for y, h in zip(ys, hi)]
    down = [y - l if l is not None and y is not None else None for y, l in zip(ys, lo)]
    return {"type": "data", "array": up, "arrayminus": down, "symmetric": False, "thickness": 1.2, "width": 4}


def _winrate_traces(fig: go.Figure, rounds: list[dict], key: str, label: str, colour: str, *,
                    raw_name: str, lc_name: str, group: str | None = None, round0: bool = False) -> None:
    """Raw win rate (line, 95% band) and length-controlled (dotted, 95% error bars) for one opponent.

    round0 prepends the initial policy against itself (½, a zero-width interval) to the band; the
    caller decides how the point itself is drawn."""
    xs = [m["round"] for m in rounds]
    mean, lo, hi = ([_num(m, key, k) for m in rounds] for k in ("mean", "ci_low", "ci_high"))
    lc, lc_lo, lc_hi = ([_num(m, key, k) for m in rounds] for k in ("lc", "lc_ci_low", "lc_ci_high"))
    bx, blo, bhi = ([0] + xs, [0.5] + lo, [0.5] + hi) if round0 else (xs, lo, hi)
    _band(fig, bx, blo, bhi, colour, f"{label} 95% CI", group, showlegend=group is None)
    hover = "round %{x}: %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
    fig.add_scatter(x=xs, y=mean, mode="lines+markers", name=raw_name, line={"color": colour},
                    customdata=[[a, b] for a, b in zip(lo, hi)], legendgroup=group,
                    hovertemplate=hover + f"<extra>{html.escape(raw_name)}</extra>")
    fig.add_scatter(x=xs, y=lc, mode="lines+markers", name=lc_name, line={"color": colour, "dash": "dot"},
                    marker={"symbol": "diamond-open", "size": 8}, error_y={**_error_bars(lc, lc_lo, lc_hi),
                                                                          "color": colour},
                    customdata=[[a, b] for a, b in zip(lc_lo, lc_hi)], legendgroup=group,
                    hovertemplate=hover + f"<extra>{html.escape(lc_name)}</extra>")


def _first(rounds: list[dict], *keys: str) -> tuple[int, float] | None:
    return next(((m["round"], _num(m, *keys)) for m in rounds if _num(m, *keys) is not None), None)


def winrate_figure(rounds: list[dict]) -> go.Figure:
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    for (key, label), colour in zip((("winrate_vs_initial", "vs initial"), ("winrate_vs_previous", "vs previous")),
                                    COLOURS):
        _winrate_traces(fig, rounds, key, label, colour, raw_name=f"{label} (raw)",
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
    return _layout(fig, [0] + xs, "Win rate of each round's policy (95% intervals)", "win rate")


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
            s = _dict(_dict(versus.get(max(ri, rj))).get(f"round_{min(ri, rj)}"))
            if not s:
                row.append(f"no interval (round_{max(ri, rj)}/eval/versus.json has no round_{min(ri, rj)})")
                continue
            if ri < rj:   # the complement: P(older ≻ newer)
                s = {k: (1 - v if (v := _num(s, k)) is not None else None) for k in
                     ("mean", "ci_low", "ci_high", "lc", "lc_ci_low", "lc_ci_high")} | {"n": s.get("n")}
                s["ci_low"], s["ci_high"] = s["ci_high"], s["ci_low"]
                s["lc_ci_low"], s["lc_ci_high"] = s["lc_ci_high"], s["lc_ci_low"]
            n = _num(s, "n")
            row.append(f"raw {_interval(s, 'mean', 'ci_low', 'ci_high')}<br>"
                       f"LC {_interval(s, 'lc', 'lc_ci_low', 'lc_ci_high')}"
                       + (f"<br>{int(n)} prompts" if n is not None else ""))
        out.append(row)
    return out


def matrix_figure(rounds: list[dict], versus: dict[int, dict] | None = None) -> go.Figure:
    src = _latest(rounds, "winrate_matrix", "winrate")
    wm = _dict(src.get("winrate_matrix"))
    z = [_nums(row) for row in _list(wm.get("winrate"))]
    names = [str(p) for p in _list(wm.get("policies"))] or [f"policy {i}" for i in range(len(z))]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, zmin=0, zmax=1, zmid=0.5, colorscale="RdBu",
                               text=_matrix_hover(names, z, versus or {}), texttemplate="%{z:.2f}",
                               hovertemplate="%{y} vs %{x}: %{z:.3f}<br>%{text}<extra></extra>"))
    cycles = _list(src.get("cycles"))
    title = f"Win rate of row vs column (round {src['round']}; hover: 95% CIs)" if src else "Win-rate matrix (none yet)"
    title += f" — {len(cycles)} intransitive cycle(s)" if cycles else ""
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, None, title, "policy", "opponent")


def ratings_figure(rounds: list[dict]) -> go.Figure:
    src = _latest(rounds, "ratings", "elo")
    r = _dict(src.get("ratings"))
    elo = _nums(r.get("elo"))
    lo, hi = _nums(r.get("ci_low"), len(elo)), _nums(r.get("ci_high"), len(elo))
    names = [str(p) for p in _list(r.get("policies"))] or list(range(len(elo)))
    fig = go.Figure(go.Scatter(x=names, y=elo, mode="markers", marker={"size": 9, "color": COLOURS[2]},
                               error_y=_error_bars(elo, lo, hi)))
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
    return _layout(fig, xs, "Training loss per round", "loss")


def _by_round(steps: list[dict]) -> list[tuple[int, list[dict]]]:
    groups: dict[int, list[dict]] = {}
    for s in steps:
        groups.setdefault(s["round"], []).append(s)
    return sorted(groups.items())


def _step_traces(fig: go.Figure, steps: list[dict], key: str, name: str, colour: str, *, yaxis: str = "y",
                 dash: str = "solid", width: float = 2, opacity: float = 1.0) -> None:
    """One trace per round (so rounds do not join up), one legend entry: global step against steps[key]."""
    markers = len(steps) <= MARKERS_UP_TO
    phases = sorted({str(s.get("phase", "train")) for s in steps})
    for i, (n, rs) in enumerate(_by_round(steps)):
        fig.add_scatter(
            x=[s["global_step"] for s in rs], y=[_finite(s.get(key)) for s in rs],
            mode="lines+markers" if markers else "lines", name=name, legendgroup=name, showlegend=i == 0,
            line={"color": colour, "dash": dash, "width": width}, opacity=opacity, yaxis=yaxis,
            marker={"size": 5, "symbol": [PHASE_SYMBOLS[phases.index(str(s.get("phase", "train"))) % 5] for s in rs]},
            customdata=[[n, s.get("step"), str(s.get("phase", "")), _finite(s.get("lr")), _finite(s.get("grad_norm"))]
                        for s in rs],
            hovertemplate=(f"{html.escape(name)} %{{y:.4g}}<br>round %{{customdata[0]}}, step %{{customdata[1]}} "
                           "(%{customdata[2]})<br>lr %{customdata[3]:.3g}, grad norm %{customdata[4]:.3g}<extra></extra>"))


def _round_marks(fig: go.Figure, steps: list[dict]) -> None:
    """A dotted line where each round's training starts, labelled with the round."""
    for n, rs in _by_round(steps):
        fig.add_vline(x=rs[0]["global_step"] - 0.5, line={"color": "#bbb", "dash": "dot", "width": 1},
                      annotation_text=f"round {n}", annotation_position="top right", annotation_font_size=10)


def steps_figure(steps: list[dict]) -> go.Figure:
    """Per-step training loss over all rounds (one global step axis), grad norm on the right."""
    fig = go.Figure()
    if steps:
        _step_traces(fig, steps, "loss", "loss", COLOURS[0])
        if any(_finite(s.get("grad_norm")) is not None for s in steps):
            _step_traces(fig, steps, "grad_norm", "grad norm", "#999", yaxis="y2", width=1, opacity=0.6)
            fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "grad norm", "showgrid": False,
                                      "type": "log", "tickformat": ".2~g", "tickmode": "auto"})
        _round_marks(fig, steps)
    title = "Training loss per optimizer step" if steps else "Training loss per step (no train_log.jsonl yet)"
    return _layout(fig, None, title, "loss", "optimizer step (all rounds)")


def steps_pref_figure(steps: list[dict]) -> go.Figure:
    """Per-step preference margin and log-ratios (left), pair accuracy (right, 0–1)."""
    fig = go.Figure()
    if steps:
        _step_traces(fig, steps, "margin", "margin (chosen − rejected log-ratio)", COLOURS[4])
        _step_traces(fig, steps, "chosen_logratio", "chosen log-ratio", COLOURS[2], dash="dot", width=1)
        _step_traces(fig, steps, "rejected_logratio", "rejected log-ratio", COLOURS[3], dash="dot", width=1)
        _step_traces(fig, steps, "accuracy", "accuracy", COLOURS[1], yaxis="y2", width=1.5)
        _round_marks(fig, steps)
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "accuracy", "range": [0, 1.02],
                                  "showgrid": False, "tickmode": "auto", "tickformat": ".0%"})
    title = "Preference margin and accuracy per step" + ("" if steps else " (no train_log.jsonl yet)")
    return _layout(fig, None, title, "log-ratio vs reference", "optimizer step (all rounds)")


def judge_figure(rounds: list[dict]) -> go.Figure:
    """The judges' rates: abstentions and position disagreement, for the training and the eval judge."""
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    for src, dash in (("judge", "solid"), ("eval_judge", "dot")):
        if not any(isinstance(m.get(src), dict) for m in rounds):
            continue
        who = "training" if src == "judge" else "eval"
        for k, label, colour in (("abstain_rate", "abstain rate", COLOURS[3]),
                                 ("position_disagreement_rate", "position disagreement", COLOURS[4])):
            fig.add_scatter(x=xs, y=[_num(m, src, k) for m in rounds], mode="lines+markers",
                            name=f"{who}: {label}", line={"color": colour, "dash": dash})
    fig.update_layout(yaxis={"rangemode": "tozero", "tickformat": ".0%"})
    return _layout(fig, xs, "Judge rates", "share of comparisons")


def throughput_figure(rounds: list[dict], tokens_per_s: dict[int, float] | None = None) -> go.Figure:
    """Judge pairs/s (training and eval judge, left) and generation tokens/s (right), both log scale."""
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    tokens_per_s = tokens_per_s or {}
    for src, label, colour in (("judge", "training judge: pairs/s", COLOURS[5]),
                               ("eval_judge", "eval judge: pairs/s", COLOURS[6])):
        ys = [_num(m, src, "pairs_per_s") for m in rounds]
        if any(y is not None for y in ys):
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=label, line={"color": colour})
    # the metrics may carry it (generation.tokens_per_s); else the round's generations manifest
    toks = [_num(m, "generation", "tokens_per_s") or tokens_per_s.get(m["round"]) for m in rounds]
    if any(t is not None for t in toks):
        fig.add_scatter(x=xs, y=toks, mode="lines+markers", name="generation: tokens/s", yaxis="y2",
                        line={"color": COLOURS[7], "dash": "dash"}, marker={"symbol": "square"})
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "tokens/s", "type": "log",
                                  "showgrid": False, "tickformat": ".3~s", "tickmode": "auto"})
    fig.update_layout(yaxis={"type": "log", "tickformat": ".3~s"})
    return _layout(fig, xs, "Throughput", "pairs/s")


def stages_figure(rounds: list[dict]) -> go.Figure:
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    seen = {str(k) for m in rounds for k in _dict(m.get("stage_seconds"))}
    for s in [s for s in STAGES if s in seen] + sorted(seen - set(STAGES)):
        fig.add_bar(x=xs, y=[_num(m, "stage_seconds", s) for m in rounds], name=s)
    fig.update_layout(barmode="stack")
    return _layout(fig, xs, "Stage wall time", "seconds")


def exploitability_figure(points: list[dict]) -> go.Figure:
    """The curve a Nash learner drives to 0 (round 0 included), its 95% band, and its two parts."""
    fig, xs = go.Figure(), [m["round"] for m in points]
    mean, lo, hi = ([_num(m, "exploitability", k) for m in points] for k in ("mean", "ci_low", "ci_high"))
    _band(fig, xs, lo, hi, COLOURS[3], "exploitability 95% CI")
    fig.add_scatter(x=xs, y=mean, mode="lines+markers", name="exploitability", line={"color": COLOURS[3]})
    for k, label, dash in (("quality_part", "quality part (style ignored)", "dot"),
                           ("style_part", "style part (quality at its maximum)", "dash")):
        fig.add_scatter(x=xs, y=[_num(m, "exploitability", k) for m in points], mode="lines+markers", name=label,
                        line={"color": COLOURS[3], "dash": dash, "width": 1})
    fig.add_scatter(x=xs, y=[_num(m, "mean_quality") for m in points], mode="lines+markers", yaxis="y2",
                    name="mean quality (right; max 10)", line={"color": COLOURS[2]})
    fig.update_layout(yaxis={"rangemode": "tozero"},
                      yaxis2={"overlaying": "y", "side": "right", "title": "quality", "showgrid": False})
    return _layout(fig, xs, "Exploitability: how much a best response beats the policy (0 = Nash)",
                   "max_c E P(c ≻ y) − ½")


def style_figure(points: list[dict]) -> go.Figure:
    """The eval samples' style mix per round, stacked to 1: the cyclic part of the arena's game."""
    fig, xs = go.Figure(), [m["round"] for m in points]
    for style, colour in zip(("bold", "calm", "witty", "none"), (COLOURS[3], COLOURS[0], COLOURS[1], "#bbb")):
        fig.add_scatter(x=xs, y=[_num(m, "style_mix", style) for m in points], mode="lines+markers", name=style,
                        stackgroup="style", line={"color": colour})
    fig.update_layout(yaxis={"range": [0, 1], "tickformat": ".0%"})
    return _layout(fig, xs, "Style mix of the eval samples", "share of samples")


def judge_gap_figure(rounds: list[dict]) -> go.Figure:
    """The training judge's win rate next to the truth's on the same pairs: the gap is the judge being exploited."""
    fig, xs = go.Figure(), [m["round"] for m in rounds]
    for k, label, colour in (("judge_winrate", "training judge", COLOURS[4]), ("oracle_winrate", "oracle", COLOURS[0])):
        fig.add_scatter(x=xs, y=[_num(m, "judge_vs_oracle", k) for m in rounds], mode="lines+markers", name=label,
                        line={"color": colour})
    fig.add_hline(y=0.5, line={"color": "grey", "dash": "dash", "width": 1})
    return _layout(fig, xs, "Judge vs truth: win rate vs the initial policy on the same pairs", "win rate")


def arena_charts(run: "Run") -> list[tuple[str, go.Figure]]:
    """The arena's charts, where the run has their data."""
    points = [m for m in [run.initial, *run.rounds] if isinstance(m.get("exploitability"), dict)]
    charts = [("chart-exploitability", exploitability_figure(points)), ("chart-style", style_figure(points))] \
        if points else []
    if any(isinstance(m.get("judge_vs_oracle"), dict) for m in run.rounds):
        charts.append(("chart-judge-gap", judge_gap_figure(run.rounds)))
    return charts


def _layout(fig: go.Figure, rounds: list[int] | None, title: str, ytitle: str, xtitle: str = "round") -> go.Figure:
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


# ---------------------------------------------------------------------------------------- comparison

def compare_winrate_figure(runs: list[Run], key: str, title: str) -> go.Figure:
    """One raw trace per run (named by the run) with its 95% band, its LC curve dotted with error bars;
    vs initial starts every run at round 0 (½)."""
    fig = go.Figure()
    vs_initial = key == "winrate_vs_initial"
    for run, colour in zip(runs, _cycle(COLOURS, len(runs))):
        rounds = ([{"round": 0, key: {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5, "lc": 0.5, "lc_ci_low": 0.5,
                                      "lc_ci_high": 0.5}}] if vs_initial else []) + run.rounds
        _winrate_traces(fig, rounds, key, run.name, colour, raw_name=run.name, lc_name=f"{run.name} (LC)",
                        group=run.name)
    fig.add_hline(y=0.5, line={"color": "grey", "dash": "dash", "width": 1})
    xs = ([0] if vs_initial else []) + [x for r in runs for x in r.xs]
    return _layout(fig, xs, title, "win rate")


def compare_elo_figure(runs: list[Run]) -> go.Figure:
    """Each run's latest Bradley–Terry ratings of its own rounds' policies (each anchored on its initial)."""
    fig = go.Figure()
    ticks = []
    for run, colour in zip(runs, _cycle(COLOURS, len(runs))):
        r = _dict(_latest(run.rounds, "ratings", "elo").get("ratings"))
        elo = _nums(r.get("elo"))
        lo, hi = _nums(r.get("ci_low"), len(elo)), _nums(r.get("ci_high"), len(elo))
        names = [str(p) for p in _list(r.get("policies"))][:len(elo)]
        xs = [int(m.group(1)) if (m := re.fullmatch(r"round_(\d+)", nm)) else i
              for i, nm in enumerate(names + [""] * (len(elo) - len(names)))]
        ticks += xs
        fig.add_scatter(x=xs, y=elo, mode="lines+markers", name=run.name, legendgroup=run.name,
                        line={"color": colour}, error_y={**_error_bars(elo, lo, hi), "color": colour})
    return _layout(fig, ticks, "Bradley–Terry ratings (latest round of each run)", "Elo, initial = 1000 (95% CI)")


def compare_length_figure(runs: list[Run]) -> go.Figure:
    fig = go.Figure()
    for run, colour in zip(runs, _cycle(COLOURS, len(runs))):
        fig.add_scatter(x=run.xs, y=[_num(m, "mean_response_tokens") for m in run.rounds], mode="lines+markers",
                        name=run.name, line={"color": colour})
    return _layout(fig, [x for r in runs for x in r.xs], "Mean eval response length", "tokens")


def compare_steps_figure(runs: list[Run]) -> go.Figure:
    fig = go.Figure()
    for run, colour in zip(runs, _cycle(COLOURS, len(runs))):
        if run.steps:
            _step_traces(fig, run.steps, "loss", run.name, colour, width=1.5)
    return _layout(fig, None, "Training loss per optimizer step", "loss", "optimizer step (all rounds)")


def _cycle(seq: tuple, n: int) -> list:
    return [seq[i % len(seq)] for i in range(n)]


def _names(dirs: list[Path]) -> list[str]:
    """Each run's directory basename; where two share one, enough parent directories to tell them apart."""
    full = [d.resolve().parts for d in dirs]
    for depth in range(1, max(map(len, full), default=1) + 1):
        names = ["/".join(p[-depth:]) or str(d) for p, d in zip(full, dirs)]
        if len(set(names)) == len(names):
            return names
    return [f"{n} ({i + 1})" for i, n in enumerate(names)]


# ------------------------------------------------------------------------------------------ html parts

def summary_table(rounds: list[dict]) -> str:
    """The headline numbers as text, for reading without hovering."""
    def cell(m: dict, *keys: str, fmt: str = "{:.3f}") -> str:
        return _fmt(_num(m, *keys), fmt)

    def wr(m: dict, key: str) -> str:
        return _interval(m.get(key), "mean", "ci_low", "ci_high")

    def lc(m: dict, key: str) -> str:
        return _interval(m.get(key), "lc", "lc_ci_low", "lc_ci_high")

    arena = any(isinstance(m.get("exploitability"), dict) for m in rounds)
    head = ("round", "vs initial [95% CI]", "LC vs initial [95% CI]", "vs previous [95% CI]",
            "LC vs previous [95% CI]", "tokens", "train loss") + (("exploitability [95% CI]",) if arena else ())
    rows = "".join(f"<tr><td>{m['round']}</td><td>{wr(m, 'winrate_vs_initial')}</td>"
                   f"<td>{lc(m, 'winrate_vs_initial')}</td><td>{wr(m, 'winrate_vs_previous')}</td>"
                   f"<td>{lc(m, 'winrate_vs_previous')}</td>"
                   f"<td>{cell(m, 'mean_response_tokens', fmt='{:.1f}')}</td><td>{cell(m, 'train_loss')}</td>"
                   + (f"<td>{_interval(m.get('exploitability'), 'mean', 'ci_low', 'ci_high')}</td>" if arena else "")
                   + "</tr>" for m in rounds)
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


def _parse_config(text: str | None) -> dict | None:
    """config.yaml as a flat {dotted.key: value} dict, or None if it is missing or not a YAML mapping."""
    if text is None:
        return None
    import yaml
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(tree, dict):
        return None
    flat: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        else:
            flat[prefix] = v

    walk("", tree)
    return flat


def _show(v: Any) -> str:
    """A config value as YAML-ish text ('' shows as '' so an empty string is visible)."""
    if isinstance(v, str):
        return v if v else "''"
    return json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else str(v)


def config_panel(run: Run) -> str:
    """The run's resolved config.yaml: one small key/value table per top-level section, laid out in
    columns; the raw text if it is not a YAML mapping."""
    head = "<h2>Config <small>(config.yaml)</small></h2>"
    if run.config is None:
        return f"<section id='config' class='card'>{head}<p class='muted'>no config.yaml</p></section>"
    flat = _parse_config(run.config)
    if flat is None:
        return f"<section id='config' class='card'>{head}<pre>{html.escape(run.config)}</pre></section>"
    sections: dict[str, list[tuple[str, Any]]] = {}
    for k, v in flat.items():
        top, _, rest = k.partition(".")
        sections.setdefault(top if rest else "", []).append((rest or top, v))
    blocks = "".join(
        f"<table class='cfg'>{f'<tr><th colspan=2>{html.escape(sec)}</th></tr>' if sec else ''}"
        + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_show(v))}</td></tr>" for k, v in items)
        + "</table>" for sec, items in sorted(sections.items(), key=lambda kv: kv[0] != ""))
    return f"<section id='config' class='card'>{head}<div class='cfgcols'>{blocks}</div></section>"


def compare_config_panel(runs: list[Run]) -> str:
    """The config keys whose values differ between the runs, side by side; each full config below."""
    head = "<h2>Config <small>(config.yaml: the keys that differ)</small></h2>"
    flats = [_parse_config(r.config) for r in runs]
    have = [f for f in flats if f is not None]
    keys = list(dict.fromkeys(k for f in have for k in f))
    differ = [k for k in keys if len({json.dumps(f.get(k, "<missing>"), sort_keys=True, default=str)
                                      for f in have}) > 1]
    cols = "".join(f"<th>{html.escape(r.name)}</th>" for r in runs)

    def cell(f: dict | None, k: str) -> str:
        if f is None:
            return "<td class='muted'>no config.yaml</td>"
        return f"<td>{html.escape(_show(f[k]))}</td>" if k in f else "<td class='muted'>–</td>"

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
                 f"<td>{_interval(last.get('winrate_vs_initial'), 'mean', 'ci_low', 'ci_high')}</td>"
                 f"<td>{_interval(last.get('winrate_vs_initial'), 'lc', 'lc_ci_low', 'lc_ci_high')}</td>"
                 f"<td>{_interval(last.get('winrate_vs_previous'), 'mean', 'ci_low', 'ci_high')}</td>"
                 f"<td>{_fmt(_num(last, 'train_loss'))}</td></tr>")
    return f"<table id='summary'><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{rows}</table>"


# ------------------------------------------------------------------------------------------------ page

def _page(title: str, heading: str, intro: str, charts: list[tuple[str, go.Figure]], before: str, after: str,
          js_vars: dict[str, Any]) -> str:
    config = {"displaylogo": False, "responsive": True}
    divs = "".join(f"<div class='card'>{f.to_html(full_html=False, include_plotlyjs=False, div_id=cid, config=config)}"
                   "</div>" for cid, f in charts)
    js = "".join(f"window.{k} = {json.dumps(v)};" for k, v in js_vars.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta name='rounds' content='{js_vars.get('DASHBOARD_ROUNDS', 0)}'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
            f"<script>{get_plotlyjs()}</script><script>{js}</script></head>"
            f"<body><h1>{heading}</h1><p>{intro}</p>{before}<div class='grid'>{divs}</div>{after}"
            f"<script>{_RESIZE}</script></body></html>")


def _write(out: Path, page: str) -> Path:
    """Atomically: a browser reloading mid-write sees the old page."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


_INTRO = ("Win rates are P(policy ≻ opponent) from the eval judge, ties ½; bands and error bars are 95% "
          "intervals over prompts; length-controlled (LC) = at zero length difference (AlpacaEval 2.0 style).")


def warm_up() -> None:
    """Plotly's lazy imports and first-figure setup (0.1-0.2 s here), done by the round driver while it waits
    on a stage, so that a refresh after the round costs only its own figures."""
    fig = go.Figure(go.Scatter(x=[0], y=[0]), layout={"template": "plotly_white"})
    fig.add_hline(y=0.5)
    fig.add_trace(go.Heatmap(z=[[0.5]]))
    fig.to_html(include_plotlyjs=False, full_html=False)


def build_dashboard(run_dir: Path, out: Path | None = None) -> Path:
    """Write run_dir/dashboard.html (or out) for one run."""
    run = load_run(Path(run_dir))
    rounds = run.rounds
    charts = list(zip(CHARTS, (winrate_figure(rounds), matrix_figure(rounds, run.versus), ratings_figure(rounds),
                               length_figure(rounds), loss_figure(rounds), steps_figure(run.steps),
                               steps_pref_figure(run.steps), judge_figure(rounds),
                               throughput_figure(rounds, run.tokens_per_s), stages_figure(rounds))))
    charts[1:1] = arena_charts(run)   # next to the win rates: what they cannot show
    algos = sorted({str(m["algorithm"]) for m in rounds if m.get("algorithm")})
    intro = (f"{len(rounds)} evaluated round(s); algorithm {html.escape(', '.join(algos) or '?')}; "
             f"{len(run.steps)} optimizer step(s) logged. {_INTRO}")
    page = _page(f"selfplay: {run.name}", f"selfplay run <code>{html.escape(str(run.dir))}</code>", intro, charts,
                 summary_table(rounds), f"{config_panel(run)}<h2>Sample generations</h2>{samples_table(rounds)}",
                 {"DASHBOARD_ROUNDS": len(rounds), "DASHBOARD_STEPS": len(run.steps)})
    return _write(Path(out) if out else run.dir / "dashboard.html", page)


def build_comparison(run_dirs: list[Path], out: Path | None = None) -> Path:
    """Write one page overlaying several runs (out, by default dashboard.html in the first run dir's parent)."""
    dirs = [Path(d) for d in run_dirs]
    runs = [load_run(d) for d in dirs]
    for r, name in zip(runs, _names(dirs)):
        r.name = name
    charts = [("chart-winrate", compare_winrate_figure(runs, "winrate_vs_initial", "Win rate vs the initial policy")),
              ("chart-previous", compare_winrate_figure(runs, "winrate_vs_previous", "Win rate vs the previous round")),
              ("chart-elo", compare_elo_figure(runs)), ("chart-length", compare_length_figure(runs)),
              ("chart-steps", compare_steps_figure(runs))]
    names = ", ".join(f"<code>{html.escape(str(r.dir))}</code> ({len(r.rounds)} rounds)" for r in runs)
    page = _page(f"selfplay: {' vs '.join(r.name for r in runs)}", f"selfplay: {len(runs)} runs compared",
                 f"{names}. Each run's policies are judged against its own initial policy. {_INTRO}", charts,
                 compare_summary_table(runs), compare_config_panel(runs),
                 {"DASHBOARD_ROUNDS": max((len(r.rounds) for r in runs), default=0),
                  "DASHBOARD_RUNS": {r.name: len(r.rounds) for r in runs}})
    return _write(Path(out) if out else dirs[0].resolve().parent / "dashboard.html", page)


# why: each chart is sized when its script runs, before the rest of the page exists; re-fit once all is laid out
# (DASHBOARD_READY tells tests and screenshot tools that no redraw is pending).
_RESIZE = ("window.addEventListener('load', () => Promise.all([...document.querySelectorAll('.js-plotly-plot')]"
           ".map(d => Plotly.Plots.resize(d))).then(() => { window.DASHBOARD_READY = true; }));")
_CSS = ("body{font-family:system-ui,sans-serif;margin:20px;background:#fafafa;color:#222}"
        ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(620px,1fr));gap:12px;margin-top:12px}"
        ".card{background:white;padding:6px;border:1px solid #ddd;border-radius:4px}"
        "section.card{margin-top:12px;padding:6px 12px}h2 small{font-weight:normal;color:#777;font-size:60%}"
        "table{border-collapse:collapse;background:white;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
        "th{background:#f0f0f0}td.resp{white-space:pre-wrap;max-width:60em}.muted{color:#888}"
        ".cfgcols{column-width:17em;column-gap:12px}"
        "table.cfg{width:100%;break-inside:avoid;margin-bottom:10px;font-size:12px}"
        "table.cfg td,table.cfg th{padding:1px 6px}table.cfg td:last-child{font-family:monospace;word-break:break-all}"
        "#config-diff td{font-family:monospace;font-size:12px}"
        ".cfgside{display:flex;gap:12px;overflow-x:auto}.cfgside pre{font-size:11px;background:#f6f6f6;padding:6px}")


def _run_dirs(values: list[str] | None) -> list[Path]:
    """--run-dir values: each may also be a space-separated list (`make dashboard RUN_DIR="a b"`), unless
    it names an existing path as it stands."""
    dirs: list[Path] = []
    for v in values or ["runs/arena"]:
        dirs += [Path(v)] if Path(v).exists() or not v.split() else [Path(w) for w in v.split()]
    return dirs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Write RUN_DIR/dashboard.html from every round's metrics; with several run dirs, one page "
                    "comparing them.")
    ap.add_argument("--run-dir", nargs="+", action="extend", metavar="RUN_DIR",
                    help="one or more run dirs (repeatable; a space-separated list works too); default runs/arena")
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write the page; default RUN_DIR/dashboard.html for one run and, for several, "
                         "dashboard.html in the first run dir's parent")
    args = ap.parse_args(argv)
    dirs = _run_dirs(args.run_dir)
    if missing := [str(d) for d in dirs if not d.is_dir()]:
        ap.error(f"no such run dir: {', '.join(missing)}")
    print(build_dashboard(dirs[0], args.out) if len(dirs) == 1 else build_comparison(dirs, args.out))


if __name__ == "__main__":
    main()
