"""Per-example preference losses: pure functions of per-sequence log-probs.

Every argument named policy_* / ref_* / prev_* is a [B] tensor of log π(y|x) summed over the
response tokens (or averaged, when the algorithm asks for it). Scalars may be floats or [B]
tensors. Each returns the [B] per-example loss with no reduction; the trainer takes the mean.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected) -> Tensor:
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)  # [B]


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing=0.0) -> Tensor:
    """DPO (Rafailov et al., arXiv 2305.18290, Eq. 7), with conservative label smoothing.

    −(1−ls)·logσ(β·u) − ls·logσ(−β·u), u = (π_c − ref_c) − (π_r − ref_r). CREAM (arXiv 2410.12735)
    is this loss with ls = 1 − C, C the per-example consistency rate.
    """
    u = beta * _margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return -(1 - label_smoothing) * F.logsigmoid(u) - label_smoothing * F.logsigmoid(-u)


def ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> Tensor:
    """IPO (Azar et al., arXiv 2310.12036, Eq. 17): (u − 1/(2β))²."""
    return (_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected) - 1 / (2 * beta)) ** 2


def sppo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_winrate, rejected_winrate,
              eta) -> Tensor:
    """SPPO (Wu et al., arXiv 2405.00675, Eq. 4.6/4.7; code sppo/trainer.py).

    ½[(Δc − η(p_c − ½))² + (Δr − η(p_r − ½))²], Δ = log π_θ − log π_t with π_t the previous
    round's policy, p the estimated win rate P(y ≻ π_t). The authors' `beta` is 1/η.
    Each response is regressed on its own win rate: not a pairwise margin.
    """
    dc = policy_chosen - ref_chosen
    dr = policy_rejected - ref_rejected
    return 0.5 * ((dc - eta * (chosen_winrate - 0.5)) ** 2 + (dr - eta * (rejected_winrate - 0.5)) ** 2)


def inpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, prev_chosen, prev_rejected, eta,
              tau) -> Tensor:
    """INPO (Zhang et al., arXiv 2407.00617, Algorithm 1 / Eq. 8): (h − 1/(2η))².

    h = (π_c − π_r) − (τ/η)(ref_c − ref_r) − (1 − τ/η)(prev_c − prev_r): IPO against the geometric
    mixture π_ref^{τ/η} π_t^{1−τ/η}; ref = initial policy, prev = previous round's policy.
    """
    w = tau / eta
    h = (policy_chosen - policy_rejected) - w * (ref_chosen - ref_rejected) - (1 - w) * (prev_chosen - prev_rejected)
    return (h - 1 / (2 * eta)) ** 2


def dno_loss(policy_chosen, policy_rejected, prev_chosen, prev_rejected, beta, target=1.0) -> Tensor:
    """DNO (Rosset et al., arXiv 2404.03715, Eq. 8/12; practical Alg. 2 with z = 1, Eq. 13).

    −[z·logσ(β·u) + (1−z)·logσ(−β·u)], u against the previous round's policy π_t.
    """
    u = beta * _margin(policy_chosen, policy_rejected, prev_chosen, prev_rejected)
    return -(target * F.logsigmoid(u) + (1 - target) * F.logsigmoid(-u))


def egpo_loss(policy_a, policy_b, ref_a, ref_b, pref_a, pref_b, beta) -> Tensor:
    """Online IPO loss that EGPO steps on (Zhou et al., arXiv 2503.08942; code simulations/loss_funcs.py,
    lms/trainers/extragradient_trainer.py): ((Δ_a − Δ_b) − (P(a ≻ y″) − P(b ≻ y″))/β)², Δ = log π_θ − log π_ref.
    """
    return (_margin(policy_a, policy_b, ref_a, ref_b) - (pref_a - pref_b) / beta) ** 2


def apo_reference(prev, prev2, alpha) -> Tensor:
    """APO's extrapolated reference log-probs (He, Yuan, Gu, arXiv 2410.06293): (1+α)·prev − α·prev2.

    UNVERIFIED reconstruction from the abstract (Nesterov extrapolation in log-prob space); the
    constant of normalisation cancels in every pairwise loss. α = 0 gives exactly `prev`.
    """
    return (1 + alpha) * prev - alpha * prev2


def cream_label_smoothing(consistency) -> Tensor | float:
    """CREAM (arXiv 2410.12735, code sft_dpo_trainer.py): DPO's soft label is the consistency C."""
    return 1 - consistency


LOSSES: dict[str, Callable[..., Tensor]] = {
    "dpo": dpo_loss, "ipo": ipo_loss, "sppo": sppo_loss, "inpo": inpo_loss, "dno": dno_loss, "egpo": egpo_loss,
}


def get_loss(name: str) -> Callable[..., Tensor]:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
