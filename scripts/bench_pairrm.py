"""Benchmark: ordered pairs per second of our PairRM judge vs llm-blender's ``Blender.rank``.

Both rank the same prompts × K responses with the same random tiny DeBERTa-v2 PairRM (built
locally, no hub): ours through ``PairRMJudge.matrices`` (every ordered pair, deduplicated,
length-sorted batches), theirs through ``Blender.rank(return_scores=True)`` (K(K−1) forward passes
per batch of prompts). Scores are checked to agree before anything is timed.

    .venv/bin/python scripts/bench_pairrm.py                       # hidden 256, 4 layers
    .venv/bin/python scripts/bench_pairrm.py --hidden 64 --layers 2 --prompts 32
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


def _best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--our-batch", type=int, default=32, help="sequences per forward pass (ours)")
    ap.add_argument("--their-batch", type=int, default=8, help="prompts per batch (Blender.rank's default)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()

    import torch
    from fixtures_judges import build_tiny_pairrm
    from judges.blender_compat import import_llm_blender
    from judges.pairrm import PairRMJudge

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench_pairrm"))
    paths = build_tiny_pairrm(tmp, hidden=args.hidden, layers=args.layers, heads=args.heads)
    prompts, responses = _inputs(args.prompts, args.k, seed=0)
    pairs = len(prompts) * args.k * (args.k - 1)

    ours = PairRMJudge(str(paths["hf"]), batch_size=args.our_batch)
    blender = import_llm_blender().Blender()
    blender.blender_config.use_tqdm = False
    blender.loadranker(str(paths["ranker"]), device="cpu")

    def run_ours():
        return np.array(ours.scores(prompts, responses))

    def run_theirs():
        return blender.rank(prompts, responses, return_scores=True, batch_size=args.their_batch, disable_tqdm=True)

    # Same scores first (Blender pads sources per batch, so truncation could differ: inputs stay short enough).
    diff = float(np.abs(run_ours() - run_theirs()).max())
    t_ours = _best_time(run_ours, args.repeats)
    t_theirs = _best_time(run_theirs, args.repeats)
    print(f"model: DeBERTa-v2 hidden {args.hidden}, {args.layers} layers; {len(prompts)} prompts x K={args.k} "
          f"= {pairs} ordered pairs; torch threads {torch.get_num_threads()}; max |score diff| {diff:.2e}")
    print(f"ours   PairRMJudge.matrices (batch {args.our_batch} seqs, <= {ours.max_batch_tokens} tokens): "
          f"{pairs / t_ours:8.1f} pairs/s  ({t_ours:.2f} s)")
    print(f"theirs Blender.rank (batch {args.their_batch} prompts):       {pairs / t_theirs:8.1f} pairs/s  ({t_theirs:.2f} s)")
    print(f"ratio ours/theirs: {t_theirs / t_ours:.2f}x")


if __name__ == "__main__":
    main()
