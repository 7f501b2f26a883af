"""Generation backends: K sampled responses per prompt from a policy checkpoint.

A backend is built from a checkpoint path and answers ``generate(requests, spec)``. Each request
carries its own seed, so what a prompt gets does not depend on how prompts were batched or sharded.
``BACKENDS`` is the one registry; vLLM lives in ``selfplay/vllm_backend.py`` and is imported only
when chosen.
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


def _hf(path: str, **kw) -> Backend:
    from selfplay.hf_backend import HFBackend
    return HFBackend(path, **kw)


def _vllm(path: str, **kw) -> Backend:
    try:
        from selfplay.vllm_backend import VLLMBackend  # vLLM imported only here
    except ImportError as e:
        raise RuntimeError(f"generation.backend=vllm is not available here ({e}); use generation.backend=hf") from None
    return VLLMBackend(path, **kw)


def _auto(path: str, **kw) -> Backend:
    try:
        from selfplay.vllm_backend import vllm_usable
    except ImportError:
        return _hf(path, **kw)
    return _vllm(path, **kw) if vllm_usable() else _hf(path, **kw)


BACKENDS: dict[str, Callable[..., Backend]] = {"hf": _hf, "vllm": _vllm, "auto": _auto}


def build_backend(name: str, path: str, **kw) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown generation backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name](path, **kw)


def sample_checkpoint(path: str, cfg, requests: Sequence[Request], spec: SamplingSpec,
                      resources=None) -> tuple[list[list[Completion]], float]:
    """One engine with cfg.generation's settings: load the checkpoint fresh (that is how new weights
    reach it), sample, release. Returns the completions and the load time in seconds. Per-request
    seeds make the result independent of which engine a request lands on. `resources` are those of
    the actor this runs in (default resources.generation): they decide the HF backend's device."""
    import time

    from selfplay.devices import device_for

    g = cfg.generation
    if g.backend == "vllm":
        from selfplay.memory import check_fits
        check_fits("generation", path, cfg)
    t0 = time.time()
    backend = build_backend(g.backend, path, batch_size=g.batch_size, tensor_parallel_size=g.tensor_parallel_size,
                            gpu_memory_utilization=g.gpu_memory_utilization, dtype=cfg.model.dtype,
                            device=device_for(resources or cfg.resources.generation))
    load_s = time.time() - t0
    try:
        return backend.generate(requests, spec), load_s
    finally:
        backend.close()
