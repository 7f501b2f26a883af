"""The distributed part of the config (train.{workers,strategy,lora_*}, resources.trainer) as a record,
checked. Kept apart from selfplay/distributed.py, which imports torch: the round driver asks
needs_worker_group between stages, and importing torch there cost each round about a second."""
from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("ddp", "fsdp", "fsdp_offload")


@dataclass(frozen=True)
class DistSpec:
    """The distributed part of the config: train.{workers,strategy,lora_*} and resources.trainer."""
    workers: int = 1
    strategy: str = "ddp"
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: str | tuple[str, ...] = "all-linear"   # peft's target_modules (train.lora_targets)
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0


def dist_spec(cfg) -> DistSpec:
    t, res = cfg.train, cfg.resources.trainer
    spec = DistSpec(workers=int(t.workers), strategy=str(t.strategy), lora_rank=int(t.lora_rank),
                    lora_alpha=float(t.lora_alpha), lora_targets=t.lora_targets, cpus_per_worker=float(res.num_cpus),
                    gpus_per_worker=float(res.num_gpus))
    if spec.workers < 1:
        raise ValueError(f"train.workers must be >= 1, got {spec.workers}")
    if spec.strategy not in STRATEGIES:
        raise ValueError(f"train.strategy: one of {', '.join(STRATEGIES)}, got {spec.strategy!r}")
    if spec.strategy == "fsdp_offload" and spec.gpus_per_worker <= 0:
        raise ValueError("train.strategy=fsdp_offload moves shards between host and GPU memory; "
                         "it needs resources.trainer.num_gpus > 0 (use fsdp or ddp on CPU)")
    if spec.lora_rank < 0:
        raise ValueError(f"train.lora_rank must be >= 0 (0 = full fine-tuning), got {spec.lora_rank}")
    return spec


def needs_worker_group(cfg) -> bool:
    """True when training runs in Ray Train workers; the calling actor then needs no CPUs or GPUs."""
    s = dist_spec(cfg)
    return s.workers > 1 or s.strategy != "ddp"
