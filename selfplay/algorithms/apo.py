"""APO round (He, Yuan, Gu, "Accelerated Preference Optimization", arXiv 2410.06293).

UNVERIFIED RECONSTRUCTION. Only the abstract could be read and no code is public (spec §5): APO
views iterative DPO / SPPO as a proximal-point method and adds Nesterov momentum. This module
implements the reading in spec §5: the round's reference is the extrapolated policy

    log π̂_t = (1 + α) log π_t − α log π_{t−1}      (selfplay.losses.apo_reference)

with π_t = "previous" (round n−1) and π_{t−1} = "previous2" (round n−2, clamped at round 0, so
round 1 has no momentum). It is fed to the SPPO loss (loss.apo_base = "sppo", the paper's
Mistral/PairRM setup) or the DPO loss ("dpo"). Pairs are SPPO's best and worst by win rate.
α = 0 is exactly iterative SPPO / DPO. In DPO the normaliser of π̂ cancels; SPPO regresses each
response's own log-ratio, where the missing log Z is absorbed like SPPO's own log Z ≈ η/2. Which
policy is sampled and which one is returned (π_T here) are also unknown. Check the paper's
Algorithm 1 before relying on this.
"""
from __future__ import annotations

from selfplay.algorithms import Algorithm, PairTensors
from selfplay.algorithms.sppo import best_worst_pairs
from selfplay.losses import apo_reference, dpo_loss, sppo_loss


def extrapolated_refs(t: PairTensors, alpha: float):
    """(chosen, rejected) log-probs of π̂ from the two frozen checkpoints."""
    prev_c, prev_r = t.refs["previous"]
    old_c, old_r = t.refs["previous2"]
    return apo_reference(prev_c, old_c, alpha), apo_reference(prev_r, old_r, alpha)


def _loss(t: PairTensors, cfg) -> "torch.Tensor":
    ref_c, ref_r = extrapolated_refs(t, cfg.alpha)
    if cfg.apo_base == "dpo":
        ls = 1 - t.target * (1 - cfg.label_smoothing)   # as iterative DPO: target = CREAM's C, 1 otherwise
        return dpo_loss(t.policy_chosen, t.policy_rejected, ref_c, ref_r, cfg.beta, ls)
    return sppo_loss(t.policy_chosen, t.policy_rejected, ref_c, ref_r, t.chosen_winrate, t.rejected_winrate,
                     cfg.eta)


ALGORITHMS = [Algorithm(name="apo", loss_keys=("alpha", "apo_base", "eta", "beta", "label_smoothing"),
                        paper="arXiv 2410.06293 (unverified reconstruction)",
                        references=("previous", "previous2"), make_pairs=best_worst_pairs, loss=_loss)]
