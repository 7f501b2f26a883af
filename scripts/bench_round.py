"""A round's wall time against its stages' work, with warm stage actors off and on (pipelines/actors.py).

    python scripts/bench_round.py                        # the default arena round, 2 runs per mode (make bench)
    python scripts/bench_round.py --reps 5               # more runs
    python scripts/bench_round.py --rounds 3             # three rounds in one invocation (Ray starts once)
    python scripts/bench_round.py --config configs/arena_sppo.yaml train.epochs=1   # overrides go to the round

Runs `python -m pipelines.round --round 1 --config CONFIG run_dir=<fresh tmp dir> wandb.mode=disabled`
as a user would, with SELFPLAY_WARM_ACTORS=0 and =1 in alternating order (so a busy spell of the machine
hits both), `--reps` times each. Per run:

  wall      the command's wall time (Python start, Ray start and end, and every stage, round 0's included)
  work      the sum of the stages' manifest `seconds` (round 0's stages too): the driver's time from asking
            for the stage's actor to its result, so a new actor's start and imports count as work here
  in_actor  the sum of the "done in" seconds each stage's log ends with: measured inside the actor, so
            a new actor's start is left out (its torch import is not)
  overhead  (wall - work) / wall, and (wall - in_actor) / wall

then min / median / max per mode, and on / off ratios of the medians. wall - work is the driver's own
time (interpreter and imports, the preflight checks, Ray's start and shutdown, the dashboard): warm
actors leave it as it is; what they remove is inside `work` (each stage's actor start and imports).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = {"off": "0", "on": "1"}   # SELFPLAY_WARM_ACTORS
_DONE = re.compile(r"^==== (\S+) done in ([0-9.]+)s$", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    mode: str
    wall: float
    work: float       # sum of the manifests' seconds
    in_actor: float   # sum of the stage logs' "done in"
    stages: int

    @property
    def overhead(self) -> float:
        return (self.wall - self.work) / self.wall

    @property
    def overhead_in_actor(self) -> float:
        return (self.wall - self.in_actor) / self.wall


def run_round(mode: str, config: str, overrides: list[str], rounds: int = 1) -> Run:
    run_dir = Path(tempfile.mkdtemp(prefix="bench_round", dir="/tmp")) / "run"
    span = "1" if rounds == 1 else f"1-{rounds}"
    cmd = [sys.executable, "-m", "pipelines.round", "--round", span, "--config", config, f"run_dir={run_dir}",
           "wandb.mode=disabled", *overrides]
    env = {**os.environ, "SELFPLAY_WARM_ACTORS": MODES[mode]}
    try:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
        seconds = manifest_seconds(run_dir)
        return Run(mode, wall, sum(seconds), sum(log_seconds(run_dir)), len(seconds))
    finally:
        shutil.rmtree(run_dir.parent, ignore_errors=True)


def manifest_seconds(run_dir: Path) -> list[float]:
    """Each stage's manifest `seconds`, every round in the run dir (round 0 included)."""
    from selfplay.artifacts import MANIFEST, read_manifest
    found = (read_manifest(f.parent) for f in sorted(run_dir.glob(f"round_*/**/{MANIFEST}")))
    return [m.seconds for m in found if m is not None]


def log_seconds(run_dir: Path) -> list[float]:
    """Each stage's in-actor time: its log's last "done in" line (part logs, train.0.log, are its own)."""
    out = []
    for log in sorted((run_dir / "logs").glob("round_*/*.log")):
        done = [float(s) for name, s in _DONE.findall(log.read_text(errors="replace")) if name == log.stem]
        if done and "." not in log.stem:
            out.append(done[-1])
    return out


FIELDS = (("wall", "{:.1f}s"), ("work", "{:.1f}s"), ("in_actor", "{:.1f}s"), ("overhead", "{:.1%}"),
          ("overhead_in_actor", "{:.1%}"))


def report(runs: list[Run]) -> None:
    """min / median / max of each field per mode, and the on / off ratios of the medians."""
    print("\n          min / median / max")
    med = {}
    for mode in MODES:
        values = {f: sorted(getattr(r, f) for r in runs if r.mode == mode) for f, _ in FIELDS}
        for field, fmt in FIELDS:
            med[mode, field] = statistics.median(values[field])
            shown = (values[field][0], med[mode, field], values[field][-1])
            print(f"warm {mode:3}  {field:17} " + " / ".join(fmt.format(v) for v in shown))
    fixed = {m: med[m, "wall"] - med[m, "work"] for m in MODES}
    print(f"\non / off (medians): wall {med['on', 'wall'] / med['off', 'wall']:.2f}x, "
          f"work {med['on', 'work'] / med['off', 'work']:.2f}x, "
          f"wall - work {fixed['on'] / max(1e-9, fixed['off']):.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2, help="runs per mode (default %(default)s)")
    ap.add_argument("--config", default="configs/arena_sppo.yaml")
    ap.add_argument("--rounds", type=int, default=1, help="rounds 1..N in one invocation (Ray starts once)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for the round")
    a = ap.parse_args()
    runs: list[Run] = []
    for i in range(a.reps):
        for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):   # alternating: load drifts hit both
            r = run_round(mode, a.config, a.overrides, a.rounds)
            runs.append(r)
            print(f"warm {r.mode:3}  wall {r.wall:6.1f}s  work {r.work:6.1f}s ({r.stages} stages)  "
                  f"in_actor {r.in_actor:6.1f}s  overhead {r.overhead:6.1%} (vs in_actor {r.overhead_in_actor:6.1%})",
                  flush=True)
    report(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
