"""SPPO round (Wu et al., arXiv 2405.00675): K samples, full K×K matrix, best and worst by win rate.

Win rate of response i against the sample: p_i = (1/K) Σ_j P̂_ij with the self-comparison ½
included (paper, "Probability Estimation"; code compute_prob.py). chosen = argmax p, rejected =
argmin p; only these two enter training, as in the authors' code. Prompts where every response
ties (argmax == argmin) are dropped: the authors keep them as a degenerate pair, which only adds
the same response twice. A pair's `target` is the judge's consistency rate for its prompt (1 unless
the CREAM judge set one); SPPO's loss ignores it, DPO's uses it as a soft label (CREAM).
"""
from __future__ import annotations

import numpy as np

from selfplay.algorithm import FULL_MATRIX, Algorithm, PairContext, PairTensors
from selfplay.records import JudgedPrompt, PreferencePair


def winrates(matrix: np.ndarray) -> np.ndarray:
    """Per-response win rate against the K samples; abstentions (NaN) are left out of the mean."""
    return np.nanmean(matrix, axis=1)


def best_worst_pairs(judged: list[JudgedPrompt], ctx: PairContext) -> list[PreferencePair]:
    pairs = []
    for jp in judged:
        p = winrates(jp.array())
        if np.all(np.isnan(p)):
            continue
        w, l = int(np.nanargmax(p)), int(np.nanargmin(p))
        if p[w] == p[l]:
            continue
        pairs.append(PreferencePair(prompt=jp.prompt, chosen=jp.responses[w], rejected=jp.responses[l],
                                    prompt_id=jp.prompt_id, chosen_winrate=float(p[w]),
                                    rejected_winrate=float(p[l]), target=jp.consistency, round=ctx.round,
                                    chosen_idx=w, rejected_idx=l))
    return pairs


def _loss(t: PairTensors, cfg) -> "torch.Tensor":
    from selfplay.losses import sppo_loss
    ref_c, ref_r = t.refs["previous"]
    return sppo_loss(t.policy_chosen, t.policy_rejected, ref_c, ref_r, t.chosen_winrate, t.rejected_winrate, cfg.eta)


def reference(t: PairTensors, cfg) -> "torch.Tensor":
    """arXiv 2405.00675 Eq. 4.7 as its code computes it: ½ Σ_{y ∈ {w, l}} (log π(y)/π_t(y) − η (P̂(y ≻ π_t) − ½))²."""
    (vc, vr), eta = t.refs["previous"], cfg.eta
    return ((t.policy_chosen - vc - eta * (t.chosen_winrate - 0.5)) ** 2
            + (t.policy_rejected - vr - eta * (t.rejected_winrate - 0.5)) ** 2) / 2


ALGORITHM = Algorithm(loss_keys=("eta",), paper="arXiv 2405.00675", references=("previous",),
                      make_pairs=best_worst_pairs, loss=_loss, reference=reference, comparisons=FULL_MATRIX)
