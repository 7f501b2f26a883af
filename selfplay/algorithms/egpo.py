"""EGPO round (Zhou, Fazel, Du, "Extragradient Preference Optimization", arXiv 2503.08942, COLM 2025;
official code zhourunlong/EGPO, spec §4).

One round is one extragradient iteration on the KL-regularised preference game (spec §4.3):
    θ_{t+½} = θ_t − step ∇L(θ_t; data from π_t)           (half step)
    θ_{t+1} = θ_t − step ∇L(·; data from π_{t+½}), from θ_t  (full step)
where each "step" is train.epochs passes of the online IPO loss (spec §4.2/§4.4)
    ((Δ_ref(a) − Δ_ref(b)) − (P(a ≻ y″) − P(b ≻ y″))/β)²,  Δ_ref = log π_θ − log π_ref,
π_ref = "initial" (round 0). The authors alternate half/full steps per optimizer step inside one
online run (lms/trainers/extragradient_trainer.py); here the round's generate → judge stages are
the half step's data, so the alternation is per round, like the tabular closed form.

Pairs (make_pairs): per prompt, samples (0,1), (2,3), … are the (a, b) pairs; y″ ranges over the
prompt's *other* samples, so P(a ≻ y″) is the mean of row a of the judged K×K matrix over those
columns — an unbiased, lower-variance estimate of P(a ≻ π_t) than the authors' single y″. With
K = 2 there is no third sample: y″ is drawn from {a, b} itself, so the target difference is
(P(a ≻ b) − ½)/β, the authors' `can_reduce_variance` form. PreferencePair.chosen_winrate / rejected_winrate store P(a ≻ y″) /
P(b ≻ y″); chosen is the one with the larger value (the loss is symmetric under swapping a, b).

The full step's data (update): θ_{t+½} is saved to a temporary checkpoint and sampled with the
configured generation backend (HF or vLLM, fresh per-prompt seeds) on the same prompts, judged with
the round's judge (the pipeline's `sample_and_judge`). Trainable weights and optimizer state are
backed up before the half step and restored after it (CPU copies, as the authors do); the LR scheduler is not rolled back (same), so one
schedule spans both phases — use schedule: constant to give both the same rate. Per-token-average
log-probs are the authors' default (normalize_logprobs=True); loss.average_logprobs selects.
"""
from __future__ import annotations

import math
import random
import tempfile

import numpy as np

from selfplay.algorithms import Algorithm, PairContext, PairTensors
from selfplay.losses import egpo_loss
from selfplay.records import JudgedPrompt, PreferencePair


def versus_rest(m: np.ndarray, a: int, b: int) -> tuple[float, float]:
    """(P(a ≻ y″), P(b ≻ y″)) averaged over the prompt's samples other than a and b."""
    rest = [j for j in range(m.shape[0]) if j not in (a, b)]
    if not rest:  # K = 2: y″ uniform on {a, b}, so the target difference is P(a ≻ b) − ½
        return (0.5 + float(m[a, b])) / 2, (0.5 + float(m[b, a])) / 2
    ra, rb = m[a, rest], m[b, rest]
    if np.all(np.isnan(ra)) or np.all(np.isnan(rb)):
        return float("nan"), float("nan")
    return float(np.nanmean(ra)), float(np.nanmean(rb))


def make_pairs(judged: list[JudgedPrompt], ctx: PairContext) -> list[PreferencePair]:
    pairs = []
    for jp in judged:
        m = jp.array()
        for a in range(0, m.shape[0] - 1, 2):
            pa, pb = versus_rest(m, a, a + 1)
            if math.isnan(pa) or math.isnan(pb):
                continue
            (c, pc), (r, pr) = sorted([(a, pa), (a + 1, pb)], key=lambda x: -x[1])
            pairs.append(PreferencePair(prompt=jp.prompt, chosen=jp.responses[c], rejected=jp.responses[r],
                                        prompt_id=jp.prompt_id, chosen_winrate=pc, rejected_winrate=pr,
                                        target=1.0, round=ctx.round, chosen_idx=c, rejected_idx=r))
    return pairs


def _loss(t: PairTensors, cfg) -> "torch.Tensor":
    ref_a, ref_b = t.refs["initial"]
    return egpo_loss(t.policy_chosen, t.policy_rejected, ref_a, ref_b, t.chosen_winrate, t.rejected_winrate,
                     cfg.beta)


def horizon(pairs: list[PreferencePair], cfg) -> int:
    """One schedule over both phases (not rolled back); the full phase has at most K//2 pairs per prompt."""
    bs, k = cfg.train.batch_size, cfg.generation.k
    full = len({p.prompt_id for p in pairs}) * max(k // 2, 1)
    return (math.ceil(len(pairs) / bs) + math.ceil(full / bs)) * cfg.train.epochs


def update(w, job):
    """Half step on π_t's pairs, save θ_{t+½}, restore θ_t, fresh θ_{t+½} samples, full step, save θ_{t+1}.

    Runs on selfplay.worker.Worker, so LoRA, train.workers, strategy and dtype apply; with several
    workers rank 0 samples and judges θ_{t+½} and broadcasts the pairs."""
    from selfplay.trainer import TrainingError, TrainResult

    if job.sample_and_judge is None:
        raise TrainingError("EGPO needs fresh θ_{t+½} samples, but no sampler/judge was given to the trainer")
    cfg, pairs = job.cfg, job.pairs
    refs = w.references(pairs)
    before = w.snapshot()                           # θ_t and the optimizer state, in host memory (as the authors)
    result, rng = TrainResult(pairs=len(pairs)), random.Random(job.seed)
    w.epochs(pairs, refs, result, rng, desc="egpo half step")
    with tempfile.TemporaryDirectory(prefix="egpo_half_") as tmp:
        w.save(tmp)                                 # θ_{t+½} (LoRA merged) for the sampler
        w.restore(before)                           # back to θ_t before anything else touches the model
        prompts = list({p.prompt_id: p.prompt for p in pairs}.items())
        fresh = w.on_rank0(lambda: make_pairs(job.sample_and_judge(tmp, prompts, f"egpo-half/{job.round}"),
                                              PairContext(round=job.round, loss=cfg.loss, seed=cfg.seed)))
    if not fresh:
        raise TrainingError("EGPO: θ_{t+½}'s samples gave no usable pair (judge abstained everywhere?)")
    fresh_refs = w.references(fresh)                # the restored θ_t when π_ref is the policy itself
    w.epochs(fresh, fresh_refs, result, rng, desc="egpo full step")
    result.pairs = len(pairs) + len(fresh)
    w.save(job.out_dir)
    return result


ALGORITHMS = [Algorithm(name="egpo", loss_keys=("beta",), paper="arXiv 2503.08942", references=("initial",),
                        make_pairs=make_pairs, loss=_loss, update=update, horizon=horizon)]
