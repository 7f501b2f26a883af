"""`make gpu-check`: one whole round of a paper-shaped config on one GPU, each stage's measured peak
memory and time next to what `make plan` estimated for it.

    python scripts/gpu_check.py                 # a CUDA GPU: configs/gpu_check.yaml as it is
    python scripts/gpu_check.py --smoke         # the same code at toy sizes on the CPU (SMOKE=1 make gpu-check)
    python scripts/gpu_check.py key=value ...   # overrides go to the round (and to the plan)

Builds a random Qwen2-0.5B-shaped policy and a random DeBERTa-v3-large-shaped PairRM into WORK/models
(scripts/gpu_check_models.py; reused while their sizes are unchanged), removes WORK/run, runs round 1 of
the config there through the real driver (`python -m pipelines.round`, which makes round 0 first), then
prints one row per stage: its device, pipelines.plan's estimate, the peak its actor measured
(torch.cuda.max_memory_allocated on a GPU, the process's peak RSS on the CPU; the stage manifest's
peak_gpu_mb / peak_rss_mb), their ratio and the stage's seconds; and a verdict line for every stage
whose measurement is more than 20% off the plan. The evaluate row holds the eval judge too: it runs in
the evaluate stage's actor after the engine is closed (pipelines/evaluate.py), so its plan is the
larger of the two. Exit 0 when the round ran, whatever the ratios; 1 when it failed; 2 for a bad
invocation (no GPU without --smoke, a config the plan refuses).
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = "configs/gpu_check.yaml"
TOLERANCE = 0.2            # a measurement this far off the plan, either way, gets a verdict line
BUDGET_S = {"gpu": 480, "smoke": 120}   # the bound for the round on an H100; the CPU version's
# The CPU version: configs/gpu_check.yaml at toy sizes, every stage on the CPU in fp32 (the CPU's fast path).
SMOKE_OVERRIDES = ("model.dtype=float32", "model.max_length=64", "generation.max_new_tokens=16",
                   "generation.batch_size=20", "judge.batch_size=16", "train.batch_size=2",
                   "data.prompts_per_round=4", "resources.generation.num_gpus=0", "resources.judge.num_gpus=0",
                   "resources.trainer.num_gpus=0", "resources.generation.num_cpus=2", "resources.judge.num_cpus=2",
                   "resources.trainer.num_cpus=2")
FOLDED = {"eval judge": "evaluate"}   # measured inside another stage's actor


@dataclass(frozen=True)
class Row:
    stage: str
    device: str
    plan_gib: float | None       # None: the plan cannot size it
    measured_gib: float          # GPU peak on cuda, peak RSS on cpu
    rss_gib: float
    seconds: float

    @property
    def ratio(self) -> float | None:
        return self.measured_gib / self.plan_gib if self.plan_gib else None


class CheckError(RuntimeError):
    """The round ran but left something the table needs unwritten."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    mode = "smoke" if args.smoke else "gpu"
    if not args.smoke and not _cuda():
        print("error: no CUDA GPU visible here (torch.cuda.is_available() is False); `SMOKE=1 make gpu-check` "
              "runs the same round at toy sizes on the CPU", file=sys.stderr)
        return 2
    from gpu_check_models import GPU, SMOKE, build_inputs

    from pipelines.plan import build_plan
    from selfplay.config import ConfigError
    from pipelines.config import load_config
    work = Path(args.work or f"runs/gpu_check{'_smoke' if args.smoke else ''}").resolve()
    t0 = time.time()
    inputs = build_inputs(work / "models", SMOKE if args.smoke else GPU)
    print(f"gpu-check: models and prompts in {work / 'models'} ({time.time() - t0:.0f}s)", flush=True)
    overrides = [f"run_dir={work / 'run'}", f"model.policy={inputs.policy}", f"judge.model={inputs.judge}",
                 f"data.train_prompts={inputs.train_prompts}", f"data.eval_prompts={inputs.eval_prompts}",
                 *(SMOKE_OVERRIDES if args.smoke else ()), *args.overrides]
    config = str(Path(args.config).resolve())   # the driver runs in the repository root
    try:
        cfg = load_config(config, overrides)
        plan = build_plan(cfg, 1, args.config)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if plan.problems:
        print(f"error: the plan refuses this round: {'; '.join(plan.problems)}", file=sys.stderr)
        return 2
    shutil.rmtree(cfg.run_dir, ignore_errors=True)   # measure every stage afresh: none may be skipped
    wall, rc = run_round(config, overrides, work / "round.log")
    if rc != 0:
        print(f"error: round 1 failed (exit {rc}); the driver's output is in {work / 'round.log'}, each stage's in "
              f"{Path(cfg.run_dir) / 'logs'}", file=sys.stderr)
        return 1
    try:
        rows = measured_rows(plan, cfg.run_dir)
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report(rows, wall, mode))
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (SMOKE=1 make gpu-check)")
    ap.add_argument("--config", default=CONFIG, help="default: %(default)s")
    ap.add_argument("--work", help="models, run and log (default: runs/gpu_check, runs/gpu_check_smoke with --smoke)")
    ap.add_argument("overrides", nargs="*", help="section.key=value, for the round and the plan alike")
    return ap


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def run_round(config: str, overrides: list[str], log: Path) -> tuple[float, int]:
    """(wall seconds, exit status) of `python -m pipelines.round --round 1`; its output shown and kept in `log`."""
    cmd = [sys.executable, "-m", "pipelines.round", "--round", "1", "--config", config, *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.time()
    with open(log, "w") as f, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True) as p:
        # A time limit (scripts/device_check.sh's) stops this process: the driver must unwind too, ending its Ray
        before = signal.signal(signal.SIGTERM, lambda signum, frame: p.send_signal(signum))
        try:
            for line in p.stdout:
                print(line, end="", flush=True)
                f.write(line)
        finally:
            signal.signal(signal.SIGTERM, before)
    return time.time() - t0, p.returncode


def stage_dirs(run_dir: str | Path) -> dict[str, Path]:
    """Where each stage of round 1 (and the round 0 it makes) writes its manifest (pipelines/layout.py)."""
    from pipelines.layout import round_paths
    r0, r1 = round_paths(run_dir, 0), round_paths(run_dir, 1)
    return {"init": r0.policy, "eval r0": r0.eval, "generate": r1.stage("generate"), "judge": r1.stage("judge"),
            "preferences": r1.stage("preferences"), "train": r1.policy, "evaluate": r1.eval}


def measured_rows(plan, run_dir: str | Path) -> list[Row]:
    """One row per stage of `plan` (a pipelines.plan.Plan), the folded ones merged into their host's."""
    dirs = stage_dirs(run_dir)
    estimates: dict[str, list[float | None]] = {}
    devices: dict[str, str] = {}
    for s in plan.stages:
        name = FOLDED.get(s.stage, s.stage)
        if name not in dirs:
            raise CheckError(f"the plan has a stage {s.stage!r} that this check does not know where to measure")
        estimates.setdefault(name, []).append(s.memory.bytes)
        devices.setdefault(name, s.device)
    return [_row(name, devices[name], estimates[name], dirs[name]) for name in estimates]


def _row(name: str, device: str, estimates: list[float | None], where: Path) -> Row:
    from selfplay.artifacts import read_manifest
    from selfplay.memory import GIB
    m = read_manifest(where)
    if m is None:
        raise CheckError(f"stage {name} left no readable manifest in {where}")
    key = "peak_gpu_mb" if device == "cuda" else "peak_rss_mb"
    for k in (key, "peak_rss_mb"):
        if not isinstance(m.extra.get(k), (int, float)) or not math.isfinite(m.extra[k]):
            raise CheckError(f"stage {name}'s manifest ({where}) has no {k}: was its actor given the "
                             f"{'GPU' if k == 'peak_gpu_mb' else 'memory probe'}?")
    plan = None if None in estimates else max(estimates) / GIB
    return Row(name, device, plan, m.extra[key] / 1024, m.extra["peak_rss_mb"] / 1024, m.seconds)


def report(rows: list[Row], wall: float, mode: str) -> str:
    head = ("stage", "device", "plan GiB", "measured GiB", "ratio", "seconds", "host RSS GiB")
    cells = [head] + [(r.stage, r.device, _num(r.plan_gib), _num(r.measured_gib),
                       "—" if r.ratio is None else f"{r.ratio:.2f}", f"{r.seconds:.1f}", _num(r.rss_gib)) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    table = [" | ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines = ["", "measured = the stage actor's peak: GPU memory allocated on cuda, resident host memory on cpu",
             *table, ""]
    if mode == "smoke":
        lines.append("(CPU: the measured RSS holds the interpreter, torch and Ray besides the models; the plan counts "
                     "the models' weights, so these verdicts do not grade the memory model)")
    lines += [v for r in rows if (v := verdict(r))] or [f"✓ every stage within {TOLERANCE:.0%} of the plan"]
    budget = BUDGET_S[mode]
    lines.append(f"{'✓' if wall <= budget else '✗'} round 1 (with round 0) took {wall:.0f}s of wall time; "
                 f"the bound is {budget}s")
    return "\n".join(lines)


def verdict(r: Row) -> str:
    """A line when the measurement differs from the plan by more than TOLERANCE, else ''."""
    if r.plan_gib is None:
        return f"? {r.stage}: the plan cannot size it; measured {r.measured_gib:.3g} GiB"
    if r.plan_gib == 0:
        return f"✗ {r.stage}: the plan counts nothing on {r.device}; measured {r.measured_gib:.3g} GiB" \
            if r.measured_gib > 0 else ""
    off = r.ratio - 1
    if abs(off) <= TOLERANCE:
        return ""
    return (f"✗ {r.stage}: measured {r.measured_gib:.3g} GiB on {r.device} is {r.ratio:.2f}× the plan's "
            f"{r.plan_gib:.3g} GiB ({off:+.0%})")


def _num(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.4g}"


if __name__ == "__main__":
    raise SystemExit(main())
