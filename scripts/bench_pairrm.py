"""Benchmark: ordered pairs per second of our PairRM judge (fp32, and its low-precision paths) vs
llm-blender's ``Blender.rank`` at its fastest CPU setting (batch 1) and its default (batch 8).

All rank the same prompts × K responses with the same weights: a random tiny DeBERTa-v2 PairRM
built locally (no hub), or --model/--ranker. Ours goes through ``PairRMJudge.scores`` (every ordered
pair once, deduplicated, length-sorted, token-budgeted batches); llm-blender's through
``Blender.rank(return_scores=True)``. Each variant's largest score deviation from ours in fp32 is
printed beside its speed; repetitions alternate the variants, min/median/max over them.

A deep random model (24 layers at hidden 1024, PairRM's backbone size) is numerically chaotic: padding a
sequence to its batch's longest moves its score as much as the scores' own range, in llm-blender's batches
as in ours (measured on the CPU, scores within ±0.29: llm-blender batch 1 vs batch 8 differ by up to 0.72,
ours batched vs one pair per forward by 0.61). A trained PairRM is not chaotic. Fidelity is then read from
the like-for-like line printed last: ours with one pair per forward vs llm-blender at batch 1 (2e-8 apart
at that size, 8e-8 at 2 layers).

    .venv/bin/python scripts/bench_pairrm.py                       # hidden 256, 4 layers, CPU
    .venv/bin/python scripts/bench_pairrm.py --hidden 64 --layers 2 --prompts 4 --k 3   # quick
    .venv/bin/python scripts/bench_pairrm.py --device cuda --threads 0 --prompts 64 --k 8   # a GPU: fp16 and bf16
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _inputs(n_prompts: int, k: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Chat-like length spread: prompts 5-60 words, responses 5-150 words."""
    from fixtures_judges import random_text

    rng = random.Random(seed)
    prompts = [random_text(rng, 5, 60) for _ in range(n_prompts)]
    return prompts, [[random_text(rng, 5, 150) for _ in range(k)] for _ in prompts]


def _alternating(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each fn, the fns alternating within every repetition (so drift in the
    machine's load hits all of them alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="a PairRM checkpoint (PairRM-hf layout) instead of a random tiny one; "
                    "e.g. the arena's trained judge, or llm-blender/PairRM-hf on a machine with the hub")
    ap.add_argument("--ranker", default="", help="the same weights in llm-blender's ranker layout (with --model)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--our-batch", type=int, default=32, help="sequences per forward pass (ours)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (GPU: fp16/bf16 instead of int8/bf16)")
    args = ap.parse_args()

    import torch
    from fixtures_judges import build_tiny_pairrm
    from judges.blender_compat import import_llm_blender
    from judges.pairrm import PairRMJudge

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    if args.model:
        paths = {"hf": Path(args.model), "ranker": Path(args.ranker) if args.ranker else None}
    else:
        paths = build_tiny_pairrm(Path(tempfile.mkdtemp(prefix="bench_pairrm")), hidden=args.hidden,
                                  layers=args.layers, heads=args.heads)
    print(f"judge weights ready in {time.perf_counter() - t0:.1f}s", flush=True)
    prompts, responses = _inputs(args.prompts, args.k, seed=0)
    pairs = len(prompts) * args.k * (args.k - 1)
    low = ("float16", "bfloat16") if args.device.startswith("cuda") else ("bfloat16", "int8")
    ours = {d: PairRMJudge(str(paths["hf"]), device=args.device, batch_size=args.our_batch,
                           dtype=None if d == "default" else d) for d in ("default", *low)}
    fns = {f"ours {d}": (lambda j=j: np.array(j.scores(prompts, responses))) for d, j in ours.items()}
    if paths.get("ranker"):
        blender = import_llm_blender().Blender()
        blender.blender_config.use_tqdm = False
        blender.loadranker(str(paths["ranker"]), device=args.device)
        for batch in (1, 8):   # 1: its fastest on a CPU (no padding to the batch's longest); 8: its default
            fns[f"llm-blender batch {batch}"] = (lambda b=batch: blender.rank(
                prompts, responses, return_scores=True, batch_size=b, disable_tqdm=True))
    # Same scores first: each variant's largest deviation from ours at the default dtype.
    ref = fns["ours default"]()
    dev = {}
    for k, fn in fns.items():   # also each variant's first (cold) call, printed as it ends
        t0 = time.perf_counter()
        dev[k] = float(np.abs(fn() - ref).max())
        print(f"  first call of {k}: {time.perf_counter() - t0:.1f}s", flush=True)
    times = _alternating(fns, args.repeats)
    print(f"PairRM {'checkpoint ' + args.model if args.model else f'random DeBERTa-v2 hidden {args.hidden}, {args.layers} layers'}"
          f"; {len(prompts)} prompts x K={args.k} = {pairs} ordered pairs; device {args.device}; torch threads "
          f"{torch.get_num_threads()}; {args.repeats} alternating repetitions")
    print(f"{'':28s} {'pairs/s min':>12s} {'median':>8s} {'max':>8s}  {'max |score - ours default|':>26s}")
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k, v in times.items():
        rates = sorted(pairs / t for t in v)
        print(f"{k:28s} {rates[0]:12.1f} {float(np.median(rates)):8.1f} {rates[-1]:8.1f}  {dev[k]:26.2e}")
    for k in med:
        if k != "ours default":
            print(f"ours default is {med[k] / med['ours default']:.2f}x as fast as {k} (median times)")
    if paths.get("ranker"):
        unpadded = PairRMJudge(str(paths["hf"]), device=args.device, batch_size=1)
        gap = float(np.abs(np.array(unpadded.scores(prompts, responses)) - fns["llm-blender batch 1"]()).max())
        print(f"like for like: ours one pair per forward (no padding) vs llm-blender batch 1, "
              f"max |score difference| {gap:.2e} (scores within ±{float(np.abs(ref).max()):.3g})")


if __name__ == "__main__":
    main()
