"""DNO-Prct round (Rosset et al., "Direct Nash Optimization", arXiv 2404.03715, Algorithm 2).

Pairs (Alg. 2 steps 3-5). The paper scores K = 5 samples plus a teacher answer with a 6-point
rubric and keeps *every* pair whose positive scores 5-6 and whose negative is at least 2 points
lower. A pairwise judge gives no absolute score, so the score here is the response's win rate
against the sample, p_i = (1/K) Σ_j P̂_ij (self included, the estimate of r_t(y) = P(y ≻ π_t) of
Alg. 1), and the large-margin rule becomes: keep every ordered pair (i, j) with p_i − p_j >
loss.dno_margin. The absolute "positive must be good" condition has no pairwise analogue and is
dropped (documented deviation; no teacher responses either). Hard labels, target z = 1: the paper
argues σ(r_t(y+) − r_t(y−)) ≈ 1 after large-margin filtering (§4).

Replay (step 5): add loss.dno_replay × (round n−1's own pairs), half that fraction of round n−2's,
a quarter of n−3's, … Only the pairs a round made itself (PreferencePair.round) are replayed, so
nothing is counted twice; the draw is deterministic in (seed, round, source round).

Loss (Eq. 13): DPO against π_t = "previous", dno_loss(β = loss.beta, target = pair.target).
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

from selfplay.algorithms import Algorithm, PairContext, PairTensors
from selfplay.algorithms.sppo import winrates
from selfplay.losses import dno_loss
from selfplay.records import JudgedPrompt, PreferencePair, from_rows


def margin_pairs(jp: JudgedPrompt, margin: float, round_: int) -> list[PreferencePair]:
    """All ordered pairs whose win-rate gap exceeds `margin`; chosen is the higher win rate."""
    p = winrates(jp.array())
    out = []
    for i in range(len(p)):
        for j in range(len(p)):
            if not p[i] - p[j] > max(margin, 0.0):     # also False for NaN (abstained rows)
                continue
            out.append(PreferencePair(prompt=jp.prompt, chosen=jp.responses[i], rejected=jp.responses[j],
                                      prompt_id=jp.prompt_id, chosen_winrate=float(p[i]),
                                      rejected_winrate=float(p[j]), target=1.0, round=round_,
                                      chosen_idx=i, rejected_idx=j))
    return out


def replay_fraction(base: float, age: int) -> float:
    """base for the previous round (age 1), base/2 for the one before, … (Alg. 2: 30%, 15%, …)."""
    return base / 2 ** (age - 1)


def _load_pairs(path: Path) -> list[PreferencePair]:
    import datasets
    return from_rows(PreferencePair, datasets.load_from_disk(str(path)).to_list())


def _rng(seed: int, round_: int, source: int) -> random.Random:
    digest = hashlib.sha256(f"dno-replay/{seed}/{round_}/{source}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def replay_pairs(ctx: PairContext) -> list[PreferencePair]:
    """Pairs drawn from earlier rounds' preference files (oldest first in ctx.earlier_preferences)."""
    base = ctx.loss.dno_replay
    if base <= 0:
        return []
    out = []
    n_earlier = len(ctx.earlier_preferences)
    for k, path in enumerate(ctx.earlier_preferences):
        source = k + 1                                  # earlier_preferences[k] is round k+1's
        own = [p for p in _load_pairs(Path(path)) if p.round == source]
        take = int(round(replay_fraction(base, n_earlier - k) * len(own)))
        out += _rng(ctx.seed, ctx.round, source).sample(own, min(take, len(own)))
    return out


def make_pairs(judged: list[JudgedPrompt], ctx: PairContext) -> list[PreferencePair]:
    fresh = [pair for jp in judged for pair in margin_pairs(jp, ctx.loss.dno_margin, ctx.round)]
    return fresh + replay_pairs(ctx)


def _loss(t: PairTensors, cfg) -> "torch.Tensor":
    prev_c, prev_r = t.refs["previous"]
    return dno_loss(t.policy_chosen, t.policy_rejected, prev_c, prev_r, cfg.beta, target=t.target)


ALGORITHMS = [Algorithm(name="dno", loss_keys=("beta", "dno_margin", "dno_replay"),
                        paper="arXiv 2404.03715", references=("previous",),
                        make_pairs=make_pairs, loss=_loss)]
