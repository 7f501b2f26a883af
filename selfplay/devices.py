"""Which device a model-holding component uses: decided by the resources its actor holds.

One rule for every component (policy trainer, references, generation, PairRM, LLM judge, self-reward,
CREAM scorer): an actor that was given GPUs (`num_gpus > 0`) computes on `cuda`; one that was not
computes on `cpu`, even on a machine that has GPUs (Ray hides them from it). An actor that was given a
GPU but sees none is a deployment error, reported here rather than silently run on the CPU.
"""
from __future__ import annotations


class DeviceError(RuntimeError):
    """The actor's resources promise a GPU that this process cannot see."""


def visible_gpus() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_for(resources, gpu_count: int | None = None) -> str:
    """'cuda' when `resources` (an ActorResources) hold a GPU, else 'cpu'.

    `gpu_count` is how many GPUs this process sees (None: ask torch); tests pass it to check the
    rule without a GPU."""
    wants = float(getattr(resources, "num_gpus", 0) or 0) > 0
    if not wants:
        return "cpu"
    seen = visible_gpus() if gpu_count is None else gpu_count
    if seen < 1:
        raise DeviceError(f"the actor was given num_gpus={resources.num_gpus} but this process sees no GPU "
                          "(CUDA_VISIBLE_DEVICES empty, or a CPU-only torch); set the resources' num_gpus to 0 "
                          "to run on the CPU")
    return "cuda"
