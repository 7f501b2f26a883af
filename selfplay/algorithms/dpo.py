"""Iterative DPO and IPO baselines: each round trains against the previous round's policy.

Pairs: best and worst by win rate against the K samples (the SPPO rule, sppo.best_worst_pairs),
hard labels. Reference: π_t = "previous" (round n−1), the "iterative DPO/IPO" baselines of the
SPPO paper (arXiv 2405.00675 §5.2) and of INPO (arXiv 2407.00617 Table 1).
* DPO: Rafailov et al., arXiv 2305.18290 Eq. 7; loss.beta, loss.label_smoothing (conservative DPO).
* IPO: Azar et al., arXiv 2310.12036 Eq. 17, (u − 1/(2β))². TRL divides the log-ratios by the
  number of response tokens (spec §9); set loss.average_logprobs: true for that variant.

CREAM (Wang et al., arXiv 2410.12735) is `judge.name: cream` + `algorithm: dpo`: the cream judge
stores a consistency rate C per prompt, the pair's `target`, and DPO smooths each label by
ls = 1 − C·(1 − loss.label_smoothing). C = 1 (every other judge) gives the configured
loss.label_smoothing; loss.label_smoothing = 0 gives ls = 1 − C, CREAM's loss exactly.
"""
from __future__ import annotations

from selfplay.algorithms import FULL_MATRIX, Algorithm, PairTensors
from selfplay.algorithms.sppo import best_worst_pairs


def _dpo(t: PairTensors, cfg) -> "torch.Tensor":
    from selfplay.losses import dpo_loss
    ref_c, ref_r = t.refs["previous"]
    ls = 1 - t.target * (1 - cfg.label_smoothing)   # per example; target = CREAM's C, 1 otherwise
    return dpo_loss(t.policy_chosen, t.policy_rejected, ref_c, ref_r, cfg.beta, ls)


def _ipo(t: PairTensors, cfg) -> "torch.Tensor":
    from selfplay.losses import ipo_loss
    ref_c, ref_r = t.refs["previous"]
    return ipo_loss(t.policy_chosen, t.policy_rejected, ref_c, ref_r, cfg.beta)


DPO = Algorithm(name="dpo", loss_keys=("beta", "label_smoothing"),
                paper="arXiv 2305.18290 (iterative)", references=("previous",),
                make_pairs=best_worst_pairs, loss=_dpo, comparisons=FULL_MATRIX)
IPO = Algorithm(name="ipo", loss_keys=("beta",), paper="arXiv 2310.12036 (iterative)", references=("previous",),
                make_pairs=best_worst_pairs, loss=_ipo, comparisons=FULL_MATRIX)
ALGORITHMS = [DPO, IPO]
