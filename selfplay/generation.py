"""Sampling a policy checkpoint with the configured backend (the registry: selfplay/backends/).

The records a backend is asked and answers live in selfplay/sampling.py; they are handed on here, where most
callers import them from.
"""
from __future__ import annotations

from typing import Sequence

from selfplay.backends import BACKENDS, build_backend  # noqa: F401  (handed on)
from selfplay.sampling import Backend, Completion, Request, SamplingSpec  # noqa: F401  (handed on)


def sample_checkpoint(path: str, cfg, requests: Sequence[Request], spec: SamplingSpec,
                      resources=None) -> tuple[list[list[Completion]], float]:
    """One engine with cfg.generation's settings: load the checkpoint fresh (that is how new weights
    reach it), sample, release. Returns the completions and the load time in seconds. Per-request
    seeds make the result independent of which engine a request lands on. `resources` are those of
    the actor this runs in (default resources.generation): they decide the HF backend's device."""
    import time

    from selfplay.devices import device_for

    from selfplay.backends import resolve
    g = cfg.generation
    name = resolve(g.backend)
    BACKENDS[name].before_load(path, cfg)
    t0 = time.time()
    backend = build_backend(name, path, batch_size=g.batch_size, tensor_parallel_size=g.tensor_parallel_size,
                            gpu_memory_utilization=g.gpu_memory_utilization, dtype=cfg.model.dtype,
                            device=device_for(resources or cfg.resources.generation))
    load_s = time.time() - t0
    try:
        return backend.generate(requests, spec), load_s
    finally:
        backend.close()
