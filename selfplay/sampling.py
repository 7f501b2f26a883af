"""What a generation backend is asked and answers: one request per prompt (its own seed), K completions each.

A backend (selfplay/backends/) is built from a checkpoint path and answers ``generate(requests, spec)``. Each
request carries its own seed, so what a prompt gets does not depend on how prompts were batched or sharded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence


@dataclass(frozen=True)
class SamplingSpec:
    n: int                      # samples per request (K)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    top_k: int = 0              # 0 = no top-k filter


@dataclass(frozen=True)
class Request:
    prompt: str                 # the user message; the backend applies the chat template
    seed: int                   # per (round, prompt); sample j of the request uses seed-derived stream j


@dataclass(frozen=True)
class Completion:
    text: str
    n_tokens: int               # generated tokens, EOS excluded
    finished: bool              # True if the model ended the turn itself (EOS), False if cut at max_new_tokens


class Backend(Protocol):
    def generate(self, requests: Sequence[Request], spec: SamplingSpec) -> list[list[Completion]]:
        """For each request, ``spec.n`` completions, in request order."""
        ...

    def close(self) -> None:
        """Release the model and any accelerator memory."""
        ...


@dataclass(frozen=True)
class BackendSpec:
    """A generation backend as the registry (selfplay/backends/) knows it."""
    build: Callable[..., Backend]      # (checkpoint path, **engine settings) -> Backend
    usable: Callable[[], bool]         # whether it can run here (cheap; never raises): `auto` asks it
    preference: int = 0                # `auto` takes the usable backend with the highest preference
    # Checked before an engine loads a checkpoint, with the run's config: e.g. that its weights fit the GPU
    # share the engine is given (vLLM reserves that share up front).
    before_load: Callable[[str, object], None] = lambda path, cfg: None
    # How it holds a model, for the memory plan: split over generation.tensor_parallel_size GPUs, and a
    # reserved generation.gpu_memory_utilization share of each (weights plus KV cache) rather than what it uses.
    tensor_parallel: bool = False
    reserves_gpu_share: bool = False
