"""A round's wall time against its stages' work: a new actor per stage, warm stage actors
(pipelines/actors.py), and warm actors in a Ray kept between invocations (pipelines/kept_ray.py).

    python scripts/bench_round.py                        # the default arena round, 2 runs per mode (make bench)
    python scripts/bench_round.py --reps 5               # more runs
    python scripts/bench_round.py --modes warm kept      # some of the modes
    python scripts/bench_round.py --rounds 3             # three rounds in one invocation (Ray starts once)
    python scripts/bench_round.py --config configs/arena_sppo.yaml train.epochs=1   # overrides go to the round

Runs `python -m pipelines.round --round 1 --config CONFIG run_dir=<fresh tmp dir> wandb.mode=disabled`
as a user would, in each mode in turn (the order rotating between repetitions, so a busy spell of the
machine hits every mode), `--reps` times each:

  cold   SELFPLAY_WARM_ACTORS=0: a new actor per stage, and a Ray of the invocation's own
  warm   warm stage actors, a Ray of the invocation's own (`python -m pipelines.round` by default)
  kept   warm stage actors, joining a Ray kept between invocations (`--keep-ray`, what `make iterate`
         runs). The kept Ray is started once before the runs, in a directory of the benchmark's own
         (SELFPLAY_KEPT_RAY_DIR), timed and printed apart, and ended after them

Per run:

  wall      the command's wall time (Python start, Ray's start or join and its end, every stage, round 0's
            included, and the dashboard)
  work      the sum of the stages' manifest `seconds` (round 0's stages too): the driver's time from asking
            for the stage's actor to its result, so a new actor's start and imports count as work here
  in_actor  the sum of the "done in" seconds each stage's log ends with: measured inside the actor, so
            a new actor's start is left out (its torch import is not)
  overhead  (wall - work) / wall, and (wall - in_actor) / wall

then min / median / max per mode, and the ratios of the medians to cold's. wall - work is the driver's own
time (interpreter and imports, the preflight checks, Ray's start and end, the dashboard): warm actors
leave it as it is (what they remove is inside `work`, each stage's actor start and imports); a kept Ray
removes Ray's start and most of its end.
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

MODES = {"cold": ("0", False), "warm": ("1", False), "kept": ("1", True)}   # SELFPLAY_WARM_ACTORS, --keep-ray
KEEP_S = 600
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
    warm, keep = MODES[mode]
    cmd = [sys.executable, "-m", "pipelines.round", "--round", span, "--config", config, f"run_dir={run_dir}",
           "wandb.mode=disabled", *(["--keep-ray", str(KEEP_S)] if keep else []), *overrides]
    env = {**os.environ, "SELFPLAY_WARM_ACTORS": warm}
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


def report(runs: list[Run], modes: list[str]) -> None:
    """min / median / max of each field per mode, and the ratios of the medians to the first mode's."""
    print("\n          min / median / max")
    med = {}
    for mode in modes:
        values = {f: sorted(getattr(r, f) for r in runs if r.mode == mode) for f, _ in FIELDS}
        for field, fmt in FIELDS:
            med[mode, field] = statistics.median(values[field])
            shown = (values[field][0], med[mode, field], values[field][-1])
            print(f"{mode:5}  {field:17} " + " / ".join(fmt.format(v) for v in shown))
    base = modes[0]
    for mode in modes[1:]:
        fixed = {m: med[m, "wall"] - med[m, "work"] for m in (mode, base)}
        print(f"{mode} / {base} (medians): wall {med[mode, 'wall'] / med[base, 'wall']:.2f}x, "
              f"work {med[mode, 'work'] / med[base, 'work']:.2f}x, "
              f"wall - work {fixed[mode] / max(1e-9, fixed[base]):.2f}x")


def start_kept_ray() -> Path:
    """A kept Ray in a directory of the benchmark's own, started now (timed) so that every kept run joins it."""
    where = Path(tempfile.mkdtemp(prefix="bench_kept_ray", dir="/tmp"))
    os.environ["SELFPLAY_KEPT_RAY_DIR"] = str(where)   # the runs inherit it
    from pipelines import kept_ray
    t0 = time.perf_counter()
    kept_ray.join(os.cpu_count() or 1, KEEP_S)
    kept_ray.leave()
    print(f"kept Ray started in {time.perf_counter() - t0:.1f}s (once per {KEEP_S} s unused; not in the runs below)",
          flush=True)
    return where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2, help="runs per mode (default %(default)s)")
    ap.add_argument("--config", default="configs/arena_sppo.yaml")
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="(default: all, in the "
                    "order given; ratios are to the first)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds 1..N in one invocation (Ray starts once)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for the round")
    a = ap.parse_args()
    kept = start_kept_ray() if "kept" in a.modes else None
    runs: list[Run] = []
    try:
        for i in range(a.reps):
            for mode in a.modes[i % len(a.modes):] + a.modes[:i % len(a.modes)]:   # rotating: load drifts hit all
                r = run_round(mode, a.config, a.overrides, a.rounds)
                runs.append(r)
                print(f"{r.mode:5}  wall {r.wall:6.1f}s  work {r.work:6.1f}s ({r.stages} stages)  in_actor "
                      f"{r.in_actor:6.1f}s  overhead {r.overhead:6.1%} (vs in_actor {r.overhead_in_actor:6.1%})", flush=True)
    finally:
        if kept is not None:
            from pipelines import kept_ray
            kept_ray.stop(kept)
            shutil.rmtree(kept, ignore_errors=True)
    report(runs, a.modes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
