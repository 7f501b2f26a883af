"""Will a stage fit on its GPU? A budget checked before loading anything, so that a run that cannot
fit stops with a message naming the component and what to change, instead of a CUDA OOM deep
inside training or a vLLM engine that fails to start.

Estimates are for the persistent tensors only (weights, gradients, optimizer states); activations
come on top and are what train.batch_size and model.max_length control. docs/cluster.md has the
table these numbers produce for a 7B policy on one 80 GB GPU.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
OPTIMIZER_STATES = {"adamw": 2, "rmsprop": 1, "sgd": 0}   # fp32 tensors per trainable parameter
LORA_FRACTION = 0.01   # rank-16 adapters on every linear layer of a 7B model: ~40M trainable parameters


class MemoryBudgetError(RuntimeError):
    """A component cannot fit on its device; the message says which and what to change."""


@dataclass(frozen=True)
class TrainerBudget:
    weights: float      # bytes
    gradients: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer


def parameter_count(path: str) -> int | None:
    """Parameters of a local safetensors checkpoint, from its headers (nothing is loaded); None if unknown."""
    d = Path(path)
    files = sorted(d.glob("*.safetensors")) if d.is_dir() else []
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for s in meta["shape"]:
                    count *= s
                total += count
    return total


def trainer_budget(n_params: int, dtype: str, optimizer: str, lora_rank: int, shards: int = 1) -> TrainerBudget:
    """Per-GPU bytes of weights, gradients and optimizer states; `shards` = FSDP workers (1 for DDP)."""
    b = DTYPE_BYTES.get(dtype, 4)
    trainable = n_params * (LORA_FRACTION if lora_rank > 0 else 1.0)
    return TrainerBudget(weights=n_params * b / shards, gradients=trainable * b / shards,
                         optimizer=trainable * 4 * OPTIMIZER_STATES.get(optimizer, 2) / shards)


def check_trainer(n_params: int, cfg, device_bytes: float) -> None:
    t = cfg.train
    shards = t.workers if t.strategy == "fsdp" else 1
    if t.strategy == "fsdp_offload":
        return  # the shards and optimizer states live in host memory
    need = trainer_budget(n_params, cfg.model.dtype, t.optimizer, t.lora_rank, shards)
    if need.total <= 0.9 * device_bytes:
        return
    raise MemoryBudgetError(
        f"trainer: a {n_params / 1e9:.1f}B-parameter policy needs {need.total / GIB:.0f} GiB per GPU before "
        f"activations (weights {need.weights / GIB:.0f}, gradients {need.gradients / GIB:.0f}, {t.optimizer} states "
        f"{need.optimizer / GIB:.0f}) but the GPU has {device_bytes / GIB:.0f} GiB. Set train.lora_rank=16, or "
        f"train.strategy=fsdp with more train.workers, or train.strategy=fsdp_offload, or train.optimizer=rmsprop.")


def check_generation(n_params: int, cfg, device_bytes: float) -> None:
    g = cfg.generation
    weights = n_params * DTYPE_BYTES.get(cfg.model.dtype, 2) / g.tensor_parallel_size
    budget = g.gpu_memory_utilization * device_bytes
    if weights <= 0.8 * budget:   # vLLM needs the rest for the KV cache
        return
    raise MemoryBudgetError(
        f"generation: {weights / GIB:.0f} GiB of weights per GPU leave no KV cache within "
        f"generation.gpu_memory_utilization={g.gpu_memory_utilization} of {device_bytes / GIB:.0f} GiB. "
        f"Raise generation.tensor_parallel_size (and resources.generation.num_gpus to match) or "
        f"generation.gpu_memory_utilization.")


def gpu_bytes() -> float | None:
    """Total memory of the first visible GPU, or None without one."""
    import torch
    if not torch.cuda.is_available():
        return None
    return float(torch.cuda.get_device_properties(0).total_memory)


def check_fits(component: str, path: str, cfg) -> None:
    """Stop before loading anything if `component` ("trainer" or "generation") cannot fit on this
    process's GPU; a no-op on CPU or when the checkpoint is not a local safetensors directory."""
    device, n_params = gpu_bytes(), parameter_count(path)
    if device is None or n_params is None:
        return
    (check_trainer if component == "trainer" else check_generation)(n_params, cfg, device)
