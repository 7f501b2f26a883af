"""The one way a policy is trained, for every algorithm: `train_policy` builds a Worker
(selfplay/worker.py: load, LoRA, wrap, optimizer, schedule, save) in this process, or in each of
`train.workers` Ray Train workers, and runs the algorithm's update on it.

With one worker and ddp, training runs in the calling process (no Ray Train, no process group).
Otherwise Ray Train starts the workers, each with `resources.trainer` (num_cpus, num_gpus); the
calling actor only coordinates (see needs_worker_group). LoRA (train.lora_rank > 0): peft adapters on
the layers train.lora_targets names (every linear one by default), base weights frozen; the saved
checkpoint has them merged.
"""
from __future__ import annotations

import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from selfplay.dist_spec import DistSpec, dist_spec, needs_worker_group
from selfplay.records import PreferencePair
from selfplay.trainer import TrainingError, TrainResult


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs; put in the object store once and shared by every worker."""
    policy_path: str
    out_dir: str
    pairs: list[PreferencePair]
    references: dict[str, str]
    cfg: Any
    seed: int
    spec: DistSpec
    round: int = 0
    algo: Any = None   # an Algorithm record that is not a round algorithm (the SFT stage); None = cfg.algorithm
    # () -> a judge (compare(prompts, a, b) -> P(a ≻ b)) for online updates that judge every step (EGPO);
    # supplied by the pipeline, which owns the judges. Built once, on rank 0.
    make_judge: Optional[Callable] = None


def train_policy(policy_path: str, out_dir: Path, pairs: list[PreferencePair], references: dict[str, str],
                 cfg, seed: int, *, round_: int = 0, algo=None, make_judge: Optional[Callable] = None) -> TrainResult:
    """Train from `policy_path` on `pairs` with cfg.algorithm's update; the HF checkpoint lands in `out_dir`."""
    if not pairs:
        raise TrainingError("no preference pairs to train on (every prompt's responses tied?)")
    spec = dist_spec(cfg)
    # Workers run elsewhere (and Ray Train changes their cwd): every path must be absolute.
    absolute = lambda p: str(Path(p).resolve()) if Path(p).exists() else str(p)  # noqa: E731  (hub ids stay)
    job = TrainJob(absolute(policy_path), str(Path(out_dir).resolve()), list(pairs),
                   {k: absolute(v) for k, v in references.items()}, cfg, seed, spec, round_, algo, make_judge)
    if not needs_worker_group(cfg):
        from selfplay.devices import device_for
        return run_update(job, rank=0, world=1, device=torch.device(device_for(cfg.resources.trainer)))
    return _fit(job)


def run_update(job: TrainJob, *, rank: int, world: int, device: torch.device) -> TrainResult:
    """One worker's part: build the Worker, run the algorithm's update (or the default one), report."""
    from selfplay.algorithms import get_algorithm
    from selfplay.worker import Worker

    from selfplay.memory import check_fits

    t0 = time.time()
    check_fits("trainer", job.policy_path, job.cfg)   # in each worker, against the GPU it was given
    algo = job.algo or get_algorithm(job.cfg.algorithm)
    steps = (algo.horizon or default_horizon)(job.pairs, job.cfg)
    w = Worker(job, rank=rank, world=world, device=device, total_steps=steps)
    result = (algo.update or default_update)(w, job)
    result.final_loss = result.loss_curve[-1] if result.loss_curve else float("nan")
    (result.updated_fraction, result.saved_fraction), result.workers = w.updated_fraction(), world
    result.step_log = w.step_log
    result.seconds = time.time() - t0
    return result


def default_horizon(pairs: list[PreferencePair], cfg) -> int:
    return math.ceil(len(pairs) / cfg.train.batch_size) * cfg.train.epochs


def default_update(w, job: TrainJob) -> TrainResult:
    """Reference log-probs once, then train.epochs passes of the round's loss, then save."""
    refs = w.references(job.pairs)
    result = TrainResult(pairs=len(job.pairs))
    w.epochs(job.pairs, refs, result, random.Random(job.seed))
    w.save(job.out_dir)
    return result


# ---------------------------------------------------------------- Ray Train driver side

def _fit(job: TrainJob) -> TrainResult:
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from selfplay.progress import STAGE_LOG

    s = job.spec
    per_worker = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.gpus_per_worker else {})}
    env = {"OMP_NUM_THREADS": str(max(1, int(s.cpus_per_worker)))}
    if os.environ.get(STAGE_LOG):   # the workers log next to the stage (train.0.log, ...), see _worker_main
        env[STAGE_LOG] = os.environ[STAGE_LOG]
    storage = tempfile.mkdtemp(prefix="raytrain-")  # nothing is checkpointed there; it holds run state only
    sink = ray.remote(num_cpus=0)(_ResultSink).remote()
    trainer = TorchTrainer(
        _worker_main, train_loop_config={"job": ray.put(job), "sink": sink},
        scaling_config=ScalingConfig(num_workers=s.workers, use_gpu=s.gpus_per_worker > 0,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=f"train-{Path(job.out_dir).name}", storage_path=storage,
                             failure_config=FailureConfig(max_failures=0),  # a failed round is re-run whole
                             worker_runtime_env={"env_vars": env}))
    try:
        trainer.fit()
    except Exception as e:  # noqa: BLE001  Ray wraps the worker's error; surface it as ours
        raise TrainingError(_worker_error(e)) from None
    finally:
        import shutil
        shutil.rmtree(storage, ignore_errors=True)
    try:
        return TrainResult(**ray.get(sink.get.remote()))
    finally:
        ray.kill(sink)


class _ResultSink:
    """Rank 0 hands its TrainResult back here: Ray Train v2 only returns metrics with checkpoints."""

    def __init__(self) -> None:
        self.value: dict | None = None

    def put(self, value: dict) -> None:
        self.value = value

    def get(self) -> dict:
        if self.value is None:
            raise TrainingError("training ended without a result from rank 0")
        return self.value


def _worker_error(e: Exception) -> str:
    failures = getattr(e, "worker_failures", None) or {}
    if failures:
        rank = min(failures)
        cause = failures[rank]
        return f"worker {rank} of {len(failures)} failed: {str(cause).strip().splitlines()[-1]}"
    return f"{type(e).__name__}: {e}"


def _worker_main(config: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch

    from selfplay.progress import STAGE_LOG, part_log, stage_logging, to_log

    ctx = ray.train.get_context()
    rank, log = ctx.get_world_rank(), os.environ.get(STAGE_LOG)
    with to_log(log and part_log(log, rank)), stage_logging():
        job: TrainJob = ray.get(config["job"])
        result = run_update(job, rank=rank, world=ctx.get_world_size(), device=ray.train.torch.get_device())
    if rank == 0:
        ray.get(config["sink"].put.remote(asdict(result)))


