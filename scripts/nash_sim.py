"""Duality gap of the tabular Nash-learning updates on four preference games (spec §10).

Writes DIR/nash_sim.png (one log-scale panel per game, one line per algorithm) and DIR/nash_sim.md
(final gaps). Every update is a step on a loss from selfplay/losses.py (see selfplay/games.py),
so the picture is a check of the losses the LLM trainer uses, with exact expectations.
Regularised methods (INPO, Nash-MD, EGPO) are scored in the β-regularised game against π_ref;
MWU (= ideal SPPO / DNO) and APO have no KL term and are scored in the unregularised game.

    .venv/bin/python scripts/nash_sim.py --out artifacts/nash_sim [--steps 2000]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from selfplay import games as G  # noqa: E402

CONVERGED = 1e-6  # a last-iterate gap below this counts as converged
FLOOR = 1e-15     # at the equilibrium gaps are rounding noise (±1e-16); the log plot needs a floor
REF = np.array([0.6, 0.3, 0.1])

# name, P, π_ref, (β, η) of the regularised methods, η of MWU / APO
GAMES = [
    ("rock-paper-scissors", G.rock_paper_scissors(), REF, (0.01, 0.8), 0.1),
    ("weighted cycle (NE 1/7, 2/7, 4/7)", G.weighted_cycle(), REF, (0.01, 0.8), 0.1),
    ("transitive (Bradley-Terry)", G.transitive(), np.full(3, 1 / 3), (0.1, 0.4), 0.5),
    ("random, 10 actions (seed 0)", G.random_game(10, 0), G.random_reference(10, 0), (0.01, 0.8), 0.1),
]
# label, algorithm, regularised?, plot the running average instead of the last iterate?
LINES = [
    ("MWU = SPPO/DNO ideal (last)", "mwu", False, False),
    ("MWU (average)", "mwu", False, True),
    ("APO α=0.3 (last, unverified)", "apo", False, False),
    ("INPO = OMD (last)", "inpo", True, False),
    ("Nash-MD (last)", "nash_md", True, False),
    ("EGPO (last)", "egpo", True, False),
]


def gap_curve(P: np.ndarray, trajectory: np.ndarray, beta: float, pi_ref: np.ndarray, average: bool) -> np.ndarray:
    if average:  # uniform average of π_0..π_t, what SPPO's theorem bounds
        trajectory = np.cumsum(trajectory, axis=0) / np.arange(1, len(trajectory) + 1)[:, None]
    return np.array([G.duality_gap(P, pi, beta, pi_ref) for pi in trajectory])


def run(steps: int) -> list[dict]:
    rows = []
    for game, P, pi_ref, (beta, eta), mwu_eta in GAMES:
        runs: dict[str, np.ndarray] = {}
        for label, algorithm, regularised, average in LINES:
            b, e = (beta, eta) if regularised else (0.0, mwu_eta)
            if algorithm not in runs:
                runs[algorithm] = G.simulate(P, algorithm, beta=b, eta=e, steps=steps, pi_ref=pi_ref)
            gaps = gap_curve(P, runs[algorithm], b, pi_ref, average)
            rows.append(dict(game=game, label=label, beta=b, eta=e, average=average, gaps=gaps))
    return rows


def plot(rows: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    colours = {label: f"C{i}" for i, (label, *_) in enumerate(LINES)}
    for ax, (game, *_rest) in zip(axes.flat, GAMES):
        for row in (r for r in rows if r["game"] == game):
            style = ":" if row["average"] else "-"
            ax.semilogy(np.maximum(row["gaps"], FLOOR), style, color=colours[row["label"]], label=row["label"])
        reg = next(r for r in rows if r["game"] == game and r["beta"] > 0)
        mwu = next(r for r in rows if r["game"] == game and r["beta"] == 0)
        ax.set_title(f"{game}\nregularised: β={reg['beta']:g}, η={reg['eta']:g};  MWU/APO: η={mwu['eta']:g}",
                     fontsize=10)
        ax.axhline(CONVERGED, color="grey", lw=0.5)
        ax.set_ylim(FLOOR / 2, 3)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("iteration")
    for ax in axes[:, 0]:
        ax.set_ylabel("duality gap")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Tabular self-play: duality gap per iteration (exact expectations, steps on selfplay/losses.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict], steps: int) -> str:
    lines = [
        f"# Tabular Nash simulation ({steps} iterations)", "",
        "Duality gap of the final iterate (or of the running average, where marked). β = 0 rows are scored in",
        "the unregularised game; the others in the β-regularised game against π_ref. Converged: gap < "
        f"{CONVERGED:g}. APO is an unverified reconstruction (spec §5); OMD gives INPO's trajectory exactly.", "",
        "| game | algorithm | β | η | final gap | last iterate converged |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        final = r["gaps"][-1]
        converged = "n/a (average)" if r["average"] else ("yes" if final < CONVERGED else "no")
        cells = [r["game"], r["label"], f"{r['beta']:g}", f"{r['eta']:g}", f"{max(final, 0.0):.2e}", converged]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for nash_sim.png and nash_sim.md")
    parser.add_argument("--steps", type=int, default=2000, help="iterations per algorithm and game")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: thread start-up costs more than it saves
    start = time.time()
    rows = run(args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out / "nash_sim.png")
    (args.out / "nash_sim.md").write_text(table(rows, args.steps))
    print(f"wrote {args.out / 'nash_sim.png'} and {args.out / 'nash_sim.md'} in {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
