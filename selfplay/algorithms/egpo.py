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

The full step's data (train): θ_{t+½} is saved to a temporary checkpoint and sampled with the
configured generation backend (HF or vLLM, fresh per-prompt seeds) on the same prompts, judged with
the round's judge. Weights and optimizer state are backed up before the half step and restored
after it (CPU copies, as the authors do); the LR scheduler is not rolled back (same), so one
schedule spans both phases — use schedule: constant to give both the same rate. Per-token-average
log-probs are the authors' default (normalize_logprobs=True); loss.average_logprobs selects.
"""
from __future__ import annotations

import copy
import hashlib
import math
import random
import tempfile
import time
from pathlib import Path

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


def _seed(*parts) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def half_step_pairs(ckpt: str, pairs: list[PreferencePair], cfg, round_: int, judge_ctx) -> list[PreferencePair]:
    """Fresh samples from θ_{t+½} (checkpoint `ckpt`) for the round's prompts, judged and paired."""
    from judges.base import preference_matrices
    from judges.registry import build_judge
    from selfplay.generation import Request, SamplingSpec, sample_checkpoint

    prompts = list({p.prompt_id: p.prompt for p in pairs}.items())
    g = cfg.generation
    requests = [Request(text, _seed(cfg.seed, f"egpo-half/{round_}", pid)) for pid, text in prompts]
    spec = SamplingSpec(g.k, g.temperature, g.top_p, g.max_new_tokens)
    completions, _ = sample_checkpoint(ckpt, cfg, requests, spec)
    responses = [[c.text for c in cs] for cs in completions]
    judge = build_judge(cfg.judge.name, cfg.judge, judge_ctx)
    mats = preference_matrices(judge, [t for _, t in prompts], responses)
    judged = [JudgedPrompt(pid, text, rs, [c.n_tokens for c in cs], m.tolist(), judge.name)
              for (pid, text), rs, cs, m in zip(prompts, responses, completions, mats)]
    return make_pairs(judged, PairContext(round=round_, loss=cfg.loss, seed=cfg.seed))


def _backup(model, opt) -> tuple[dict, dict]:
    weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return weights, copy.deepcopy(opt.state_dict())   # a fresh optimizer's state is empty: cheap


def train(policy: str, out: Path, pairs: list[PreferencePair], references: dict[str, str], cfg, seed: int, *,
          judge_ctx=None, round_: int = 0):
    """Half step, fresh θ_{t+½} data, restore θ_t, full step; saves θ_{t+1} to `out`."""
    import torch

    from selfplay.trainer import (TrainingError, TrainResult, load_policy, local_step, make_optimizer,
                                  reference_logprobs, run_epochs)
    t0 = time.time()
    if not pairs:
        raise TrainingError("no preference pairs to train on")
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok, model = load_policy(policy, cfg.model.dtype, device)
    refs_of = lambda ps: reference_logprobs(ps, references, policy, model, tok,  # noqa: E731
                                            average=cfg.loss.average_logprobs, max_length=cfg.model.max_length)
    refs = refs_of(pairs)
    bs, k = cfg.train.batch_size, cfg.generation.k
    n_prompts = len({p.prompt_id for p in pairs})
    # one schedule over both phases (not rolled back); the full phase has at most K//2 pairs per prompt
    horizon = (math.ceil(len(pairs) / bs) + math.ceil(n_prompts * max(k // 2, 1) / bs)) * cfg.train.epochs
    opt, sched = make_optimizer(model, cfg.train, horizon)
    weights, opt_state = _backup(model, opt)
    result, rng, algo = TrainResult(), random.Random(seed), ALGORITHMS[0]
    model.train()
    run_epochs(len(pairs), cfg, rng, result, local_step(model, tok, algo, pairs, refs, cfg, opt, sched),
               desc="egpo half step")
    with tempfile.TemporaryDirectory(prefix="egpo_half_") as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        model.load_state_dict(weights)             # back to θ_t before anything else touches the model
        opt.load_state_dict(opt_state)
        model.to("cpu")                            # free the accelerator for the sampler
        fresh = half_step_pairs(tmp, pairs, cfg, round_, judge_ctx)
    model.to(device)
    if not fresh:
        raise TrainingError("EGPO: θ_{t+½}'s samples gave no usable pair (judge abstained everywhere?)")
    model.eval()
    fresh_refs = refs_of(fresh)                    # uses the restored θ_t when π_ref is the policy itself
    model.train()
    run_epochs(len(fresh), cfg, rng, result, local_step(model, tok, algo, fresh, fresh_refs, cfg, opt, sched),
               desc="egpo full step")
    result.pairs, result.final_loss = len(pairs) + len(fresh), result.loss_curve[-1]
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    result.seconds = time.time() - t0
    return result


ALGORITHMS = [Algorithm(name="egpo", paper="arXiv 2503.08942", references=("initial",),
                        make_pairs=make_pairs, loss=_loss, train=train)]
