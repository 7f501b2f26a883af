"""Run arena settings for a range of rounds and print each one's distance from Nash, round by round.

    .venv/bin/python scripts/nash_arena_sweep.py --out runs/nash_sweep --rounds 1-4 \
        --variant base= --variant lr1e-3=train.lr=1e-3,train.epochs=2
    .venv/bin/python scripts/nash_arena_sweep.py --out runs/nash_sweep --table-only
    .venv/bin/python scripts/nash_arena_sweep.py --out runs/nash_sweep --table-only --rescore arena.quality_cap=1

Every variant is an ordinary run dir OUT/<name> made by `python -m pipelines.round` with --config (default
configs/arena_nash.yaml) and the variant's overrides, so a sweep resumes like rounds do. The table per
variant has, for every round (0 = the initial policy): exploitability [95% CI] with its quality and style
parts, the style mix (bold/calm/witty/none), mean quality, the oracle win rate against the initial policy
and the round's stage seconds (the sum of its manifests' `seconds`: what the round cost, Ray start-up and
imports excluded). --rescore recomputes exploitability from the stored eval samples under other `arena.*`
rules without running anything: only what is measured changes, not how the policy was trained.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.layout import round_paths  # noqa: E402
from pipelines.stages import group_generations  # noqa: E402
from pipelines.config import load_config
from selfplay.exploitability import exploitability  # noqa: E402

DEFAULT_CONFIG = "configs/arena_nash.yaml"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]


def parse_variant(text: str) -> Variant:
    """NAME=key=value,key=value (NAME= alone: the config as it is)."""
    name, _, rest = text.partition("=")
    if not name or "/" in name:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME=key=value,... with a plain NAME")
    return Variant(name, tuple(o for o in rest.split(",") if o))


def run_variant(v: Variant, out: Path, rounds: str, config: str) -> float:
    """Runs the rounds in a child process (its own Ray); returns the wall seconds."""
    cmd = [sys.executable, "-m", "pipelines.round", "--round", rounds, "--config", config,
           f"run_dir={out / v.name}", *v.overrides]
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    if subprocess.run(cmd, cwd=REPO).returncode != 0:
        raise SystemExit(f"error: variant {v.name} failed; its stage logs are in {out / v.name}/logs")
    return time.time() - t0


def stage_seconds(run_dir: Path, n: int) -> float:
    """The round's stage work: every manifest's `seconds` under round_<n> (round 0: init and its eval)."""
    return sum(json.loads(m.read_text()).get("seconds", 0.0) for m in (run_dir / f"round_{n}").glob("*/manifest.json"))


def rescored(run_dir: Path, n: int, overrides: list[str]) -> dict:
    """Round n's exploitability from its stored eval samples, under the run's config plus `overrides`."""
    cfg = load_config(run_dir / "config.yaml", overrides)
    groups = group_generations(round_paths(str(run_dir), n).eval / "generations")
    e = exploitability([p for _, p, _ in groups], [[r["response"] for r in rs] for *_, rs in groups],
                       cfg.arena, seed=cfg.seed)
    return e.to_dict()


def rows(run_dir: Path, rescore: list[str]) -> list[str]:
    out = []
    n = 0
    while (m := round_paths(str(run_dir), n).eval / "metrics.json").exists():
        metrics = json.loads(m.read_text())
        e = rescored(run_dir, n, rescore) if rescore else metrics["exploitability"]
        mix = "/".join(f"{metrics['style_mix'][s]:.2f}" for s in ("bold", "calm", "witty", "none"))
        w = metrics.get("winrate_vs_initial")
        win = f"{w['mean']:.3f} [{w['ci_low']:.3f}, {w['ci_high']:.3f}]" if w else "—"
        out.append(f"| {n} | {e['mean']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}] | {e['quality_part']:.3f} | "
                   f"{e['style_part']:.3f} | {mix} | {metrics['mean_quality']:.2f} | {win} | "
                   f"{stage_seconds(run_dir, n):.0f} |")
        n += 1
    return out


def table(run_dir: Path, rescore: list[str]) -> str:
    head = ("| round | exploitability [95% CI] | quality part | style part | style mix b/c/w/none | "
            "mean quality | win rate vs initial [95% CI] | stage s |\n|---|---|---|---|---|---|---|---|")
    body = rows(run_dir, rescore)
    total = sum(stage_seconds(run_dir, n) for n in range(len(body)))
    note = f" (rescored with {' '.join(rescore)})" if rescore else ""
    return f"### {run_dir.name}{note}\n\n{head}\n" + "\n".join(body) + f"\n\nstage seconds in all: {total:.0f}\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder holding one run dir per variant")
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--rounds", default="1-10", help="round range passed to pipelines.round (a-b)")
    ap.add_argument("--variant", type=parse_variant, action="append", default=[],
                    help="NAME=key=value,... (repeatable; none given: one variant 'nash' with no overrides)")
    ap.add_argument("--table-only", action="store_true", help="print the tables of the run dirs under --out")
    ap.add_argument("--rescore", nargs="*", default=[], metavar="arena.KEY=VALUE",
                    help="recompute exploitability from the eval samples under these arena rules")
    args = ap.parse_args(argv)
    if any(not o.startswith("arena.") for o in args.rescore):
        ap.error("--rescore takes arena.* overrides only: other keys change training, not the measurement")
    variants = args.variant or [Variant("nash", ())]
    walls = {}
    if not args.table_only:
        for v in variants:
            walls[v.name] = run_variant(v, args.out, args.rounds, args.config)
    dirs = ([args.out / v.name for v in variants] if not args.table_only
            else sorted(p.parent for p in args.out.glob("*/config.yaml")))
    if not dirs:
        print(f"error: no run dirs under {args.out}", file=sys.stderr)
        return 2
    for d in dirs:
        print(table(d, args.rescore))
        if d.name in walls:
            print(f"wall time of `pipelines.round --round {args.rounds}`: {walls[d.name]:.0f} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
