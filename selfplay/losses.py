"""Per-example preference losses: pure functions of per-sequence log-probs.

Every argument named policy_* / ref_* / prev_* is a [B] tensor of log π(y|x) summed over the
response tokens (or averaged, when the algorithm asks for it). Scalars may be floats or [B]
tensors. Each returns the [B] per-example loss with no reduction; the trainer takes the mean.
Notation: Δ_A(y) = log π_θ(y) − log π_A(y), the log-ratio of the trained policy to a frozen model A.
The tabular suite in `games.py` drives its updates through these same functions.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Scalar = float | Tensor


def _margin(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor) -> Tensor:
    """u = Δ(chosen) − Δ(rejected); the log-normaliser of a policy cancels in it."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)  # [B]


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: Scalar, label_smoothing: Scalar = 0.0) -> Tensor:
    """DPO (Rafailov et al., arXiv 2305.18290, Eq. 7), with conservative label smoothing.

    −(1−ls)·logσ(β·u) − ls·logσ(−β·u), u = Δ_ref(y_w) − Δ_ref(y_l). Paper β = `beta`,
    π_ref = `ref_*`, y_w / y_l = chosen / rejected. CREAM (arXiv 2410.12735, code
    sft_dpo_trainer.py) is this loss with ls = 1 − C, C the per-example consistency rate.
    """
    u = beta * _margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return -(1 - label_smoothing) * F.logsigmoid(u) - label_smoothing * F.logsigmoid(-u)


def ipo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: Scalar) -> Tensor:
    """IPO (Azar et al., arXiv 2310.12036, Eq. 17): (u − 1/(2β))², u as in DPO; paper τ = `beta`.

    Summed log-probs here; TRL's offline `ipo` divides each log-ratio by the response length.
    """
    return (_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected) - 1 / (2 * beta)) ** 2


def sppo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
              chosen_winrate: Tensor, rejected_winrate: Tensor, eta: Scalar) -> Tensor:
    """SPPO (Wu et al., arXiv 2405.00675, Eq. 4.6/4.7; code sppo/trainer.py).

    ½[(Δ_c − η(p_c − ½))² + (Δ_r − η(p_r − ½))²], Δ = log π_θ − log π_t with π_t = `ref_*` the
    previous round's policy, p = P̂(y ≻ π_t) the estimated win rate, η = `eta` (the authors'
    code calls 1/η `beta`). η/2 stands in for log Z of the ideal update (paper §4.1). Each
    response is regressed on its own win rate: the pairing does not matter. With p_c = 1,
    p_r = 0 it is ½ × TRL's `sppo_hard`.
    """
    dc = policy_chosen - ref_chosen
    dr = policy_rejected - ref_rejected
    return 0.5 * ((dc - eta * (chosen_winrate - 0.5)) ** 2 + (dr - eta * (rejected_winrate - 0.5)) ** 2)


def inpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
              prev_chosen: Tensor, prev_rejected: Tensor, eta: Scalar, tau: Scalar) -> Tensor:
    """INPO (Zhang et al., arXiv 2407.00617, Algorithm 1 / Eq. 8): (h − 1/(2η))².

    h = (log π_θ(y_w) − log π_θ(y_l)) − (τ/η)(ref_w − ref_l) − (1 − τ/η)(prev_w − prev_l):
    IPO against the geometric mixture π_ref^{τ/η} π_t^{1−τ/η}. π_ref = `ref_*` (initial policy),
    π_t = `prev_*` (previous round), η = `eta` (an inverse step size), τ = `tau` (KL strength).
    """
    w = tau / eta
    h = (policy_chosen - policy_rejected) - w * (ref_chosen - ref_rejected) - (1 - w) * (prev_chosen - prev_rejected)
    return (h - 1 / (2 * eta)) ** 2


def dno_loss(policy_chosen: Tensor, policy_rejected: Tensor, prev_chosen: Tensor, prev_rejected: Tensor,
             beta: Scalar, target: Scalar = 1.0) -> Tensor:
    """DNO (Rosset et al., arXiv 2404.03715, Eq. 8/12; the practical Algorithm 2 uses z = 1, Eq. 13).

    −[z·logσ(β·u) + (1−z)·logσ(−β·u)], u = Δ_{π_t}(y_1) − Δ_{π_t}(y_2) against the previous
    round's policy π_t = `prev_*`. Paper η = `beta`; z = σ(r_t(y_1) − r_t(y_2)) = `target`.
    """
    u = beta * _margin(policy_chosen, policy_rejected, prev_chosen, prev_rejected)
    return -(target * F.logsigmoid(u) + (1 - target) * F.logsigmoid(-u))


def egpo_loss(policy_a: Tensor, policy_b: Tensor, ref_a: Tensor, ref_b: Tensor, pref_a: Tensor, pref_b: Tensor,
              beta: Scalar) -> Tensor:
    """Online IPO loss that EGPO steps on (Zhou et al., arXiv 2503.08942; paper body unread, from the
    code simulations/loss_funcs.py and lms/trainers/extragradient_trainer.py).

    ((Δ_ref(y) − Δ_ref(y')) − (P(y ≻ y″) − P(y' ≻ y″))/β)², with (y, y') = (a, b), π_ref = `ref_*`
    the initial policy, `pref_a` = P(y ≻ y″) against an opponent sample y″, β = `beta`.
    EGPO takes two steps of it per update (extragradient); one step alone is online mirror descent.
    """
    return (_margin(policy_a, policy_b, ref_a, ref_b) - (pref_a - pref_b) / beta) ** 2


def nash_md_loss(policy: Tensor, ref: Tensor, pref: Tensor, beta: Scalar) -> Tensor:
    """Nash-MD-PG (Munos et al., "Nash Learning from Human Feedback", arXiv 2312.00886; the paper body
    was read only through the project's notes: §6.1 for Nash-MD, §6.2 for TRL's NashMDTrainer, whose
    loss this is). A surrogate whose gradient, for y ~ π_θ and y′ ~ the geometric mixture
    π_θ^{1−m} π_ref^m held fixed, estimates −∇_θ[P(π_θ ≻ mixture) − β·KL(π_θ‖π_ref)]:

        L = [β·sg(log π_θ(y) − log π_ref(y)) − (P(y ≻ y′) − ½)] · log π_θ(y)

    REINFORCE on the preference with ½ as control variate, plus the score-function estimate of the
    KL gradient, E_{y~π_θ}[(log π_θ(y) − log π_ref(y))·∇log π_θ(y)] = ∇KL(π_θ‖π_ref) (the "+1" of
    ∇ log π_θ inside the KL has zero mean under y ~ π_θ). The estimator is sequence-level: TRL
    multiplies each token's log-prob by that token's own log-ratio only, which drops the later
    tokens' ratios and so is biased; here the whole sequence's log-ratio multiplies the whole
    sequence's log-prob, which is unbiased and needs only per-sequence log-probs.
    `policy` = log π_θ(y), `ref` = log π_ref(y) (π_ref the initial policy), `pref` = P(y ≻ y′),
    β = `beta` (the paper's KL strength τ). In a tabular game one natural-gradient step of size η on
    its exact expectation, with m = ηβ, is the closed-form Nash-MD step (tests/test_nash_md.py).

    Hand check: log π_θ(y) = −2, log π_ref(y) = −2.5, β = 0.1, so β·Δ = 0.05. P = 0.8:
    L = (0.05 − 0.3)·(−2) = 0.5, ∂L/∂log π_θ(y) = −0.25 (a descent step raises the winner's
    log-prob); P = 0.2: L = (0.05 + 0.3)·(−2) = −0.7, ∂L/∂log π_θ(y) = +0.35 (the loser's falls).
    """
    return (beta * (policy - ref).detach() - (pref - 0.5)) * policy


def apo_reference(prev: Tensor, prev2: Tensor, alpha: Scalar) -> Tensor:
    """APO's extrapolated reference log-probs (He, Yuan, Gu, arXiv 2410.06293): (1+α)·prev − α·prev2.

    UNVERIFIED reconstruction from the abstract only (Nesterov extrapolation in log-prob space;
    no paper body or code was readable). prev = log π_t, prev2 = log π_{t−1}, α = `alpha`. The
    normalising constant cancels in every pairwise loss. α = 0 gives exactly `prev`.
    """
    return (1 + alpha) * prev - alpha * prev2


def cream_label_smoothing(consistency: Scalar) -> Scalar:
    """CREAM (arXiv 2410.12735, code sft_dpo_trainer.py): DPO's soft label is the consistency C.

    Use as `dpo_loss(..., label_smoothing=cream_label_smoothing(C))`: C = 1 is plain DPO,
    C = 0 flips the labels, C = ½ ignores the pair's order.
    """
    return 1 - consistency


# Every `<name>_loss` function of this module, by name: the list is the module itself.
LOSSES: dict[str, Callable[..., Tensor]] = {n.removesuffix("_loss"): f for n, f in list(globals().items())
                                            if n.endswith("_loss") and callable(f)}


def get_loss(name: str) -> Callable[..., Tensor]:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
