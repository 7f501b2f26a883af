"""Iterative DPO baseline: each round trains against the previous round's policy.

Pairs: best and worst by win rate against the K samples (the SPPO rule, sppo.best_worst_pairs),
hard labels. Reference: π_t = "previous" (round n−1), the "iterative DPO" baseline of the SPPO paper
(arXiv 2405.00675 §5.2) and of INPO (arXiv 2407.00617 Table 1). Loss: Rafailov et al., arXiv 2305.18290
Eq. 7; loss.beta, loss.label_smoothing (conservative DPO). Iterative IPO is selfplay/algorithms/ipo.py.

CREAM (Wang et al., arXiv 2410.12735) is `judge.name: cream` + `algorithm: dpo`: the cream judge
stores a consistency rate C per prompt, the pair's `target`, and DPO smooths each label by
ls = 1 − C·(1 − loss.label_smoothing). C = 1 (every other judge) gives the configured
loss.label_smoothing; loss.label_smoothing = 0 gives ls = 1 − C, CREAM's loss exactly.
"""
from __future__ import annotations

from selfplay.algorithm import FULL_MATRIX, Algorithm, PairTensors
from selfplay.algorithms.sppo import best_worst_pairs


def _dpo(t: PairTensors, cfg) -> "torch.Tensor":
    from selfplay.losses import dpo_loss
    ref_c, ref_r = t.refs["previous"]
    ls = 1 - t.target * (1 - cfg.label_smoothing)   # per example; target = CREAM's C, 1 otherwise
    return dpo_loss(t.policy_chosen, t.policy_rejected, ref_c, ref_r, cfg.beta, ls)


def reference(t: PairTensors, cfg) -> "torch.Tensor":
    """arXiv 2305.18290 Eq. 7 with conservative label smoothing ls: −(1 − ls) log σ(βh) − ls log σ(−βh),
    h = log π(y_w)/π_t(y_w) − log π(y_l)/π_t(y_l); CREAM's C (the pair's target) sets ls = 1 − C(1 − ls₀)."""
    import torch.nn.functional as F
    (vc, vr) = t.refs["previous"]
    h = (t.policy_chosen - vc) - (t.policy_rejected - vr)
    ls = 1 - t.target * (1 - cfg.label_smoothing)
    return -(1 - ls) * F.logsigmoid(cfg.beta * h) - ls * F.logsigmoid(-cfg.beta * h)


ALGORITHM = Algorithm(loss_keys=("beta", "label_smoothing"), paper="arXiv 2305.18290 (iterative)",
                      references=("previous",), make_pairs=best_worst_pairs, loss=_dpo, reference=reference,
                      comparisons=FULL_MATRIX)
