"""Iterative IPO baseline: each round trains against the previous round's policy.

Pairs: best and worst by win rate against the K samples (the SPPO rule, sppo.best_worst_pairs), hard
labels. Reference: π_t = "previous" (round n−1), the "iterative IPO" baseline of the SPPO paper (arXiv
2405.00675 §5.2). Loss: Azar et al., arXiv 2310.12036 Eq. 17, (h − 1/(2β))². TRL divides the log-ratios
by the number of response tokens (spec §9); set loss.average_logprobs: true for that variant.
"""
from __future__ import annotations

from selfplay.algorithm import FULL_MATRIX, Algorithm, PairTensors
from selfplay.algorithms.sppo import best_worst_pairs


def _ipo(t: PairTensors, cfg) -> "torch.Tensor":
    from selfplay.losses import ipo_loss
    ref_c, ref_r = t.refs["previous"]
    return ipo_loss(t.policy_chosen, t.policy_rejected, ref_c, ref_r, cfg.beta)


def reference(t: PairTensors, cfg) -> "torch.Tensor":
    """arXiv 2310.12036 Eq. 17: (h − 1/(2β))², h = log π(y_w)/π_t(y_w) − log π(y_l)/π_t(y_l)."""
    (vc, vr) = t.refs["previous"]
    return ((t.policy_chosen - vc) - (t.policy_rejected - vr) - 1 / (2 * cfg.beta)) ** 2


ALGORITHM = Algorithm(loss_keys=("beta",), paper="arXiv 2310.12036 (iterative)", references=("previous",),
                      make_pairs=best_worst_pairs, loss=_ipo, reference=reference, comparisons=FULL_MATRIX)
