"""Nash-MD (Munos et al., "Nash Learning from Human Feedback", arXiv 2312.00886; research notes §6) in
its policy-gradient form, Nash-MD-PG, trained online inside the train stage as EGPO is: every optimizer
step draws fresh samples from the trainer's own current weights θ and asks the round's judge.

    for s in 1..train.steps_per_round:          train.batch_size prompts of the round, in seeded order
        y  ~ π_θ                                 the live policy (generation.temperature, top_p, top_k)
        y′ ~ π_θ^{1−m} π_ref^m, per token        selfplay.mixture (generation.opponent_temperature, opponent_top_k)
        p  = P(y ≻ y′)                           the round's judge
        one step on [β·sg(log π_θ(y) − log π_ref(y)) − (p − ½)]·log π_θ(y)     (selfplay.losses.nash_md_loss)

Tabular Nash-MD (notes §6.1) moves π_t to π_{t+1} ∝ μ_t·exp(η P(· ≻ μ_t)) with the opponent
μ_t ∝ π_t^{1−ηβ} π_ref^{ηβ}; its gradient form ascends P(π_θ ≻ μ) − β·KL(π_θ‖π_ref) with μ held fixed,
which is what the loss estimates (tests/test_nash_md.py: one natural-gradient step of its exact
expectation is the closed-form step). Two coefficients, as in TRL's trainer and EGPO's Nash-MD runs:
m = loss.mixture_coef is the opponent's weight on π_ref, β = loss.beta the KL strength. In the tabular
algorithm m = ηβ ties them through the step size η; an Adam-trained LLM has no such η, so m is its own key.

π_ref = round 0's policy ("initial"), frozen for the whole update (LoRA: the base with the adapters
disabled, as EGPO). The policy gradient is the gradient of the objective only when y ~ π_θ exactly:
keep generation.temperature 1, top_p 1 and top_k 0 (the configs do). With several workers rank 0
samples and judges, every worker steps. Each round starts a fresh optimizer and schedule.

The round's generate → judge → preferences stages still run: they give the update its prompts and
record π_t's judged samples. They cannot sample the mixture (the stage's engines hold one checkpoint),
so the stage pairs are consecutive samples (0, 1), (2, 3), … of π_t, each judged once (COMPARISONS),
chosen = the preferred one. The update trains on fresh samples only. In ITS pairs (never written to
disk) `chosen` is y ~ π_θ and `rejected` the mixture sample y′, whatever the judge said, and
chosen_winrate = P(y ≻ y′); the step log's chosen log-ratio is then a sample of KL(π_θ‖π_ref).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from selfplay.algorithm import (ONLINE_READS, Algorithm, Comparisons, Pair, PairContext, PairTensors, check_online,
                                online_start)
from selfplay.artifacts import seed_for
from selfplay.records import JudgedPrompt, PreferencePair


def consecutive_pairs(m: np.ndarray, asked: np.ndarray) -> list[Pair]:
    """(0, 1), (2, 3), …: every sample judged once (the last one alone when K is odd); K // 2 in all."""
    return [(a, a + 1) for a in range(0, m.shape[0] - 1, 2) if not asked[a, a + 1]]


COMPARISONS = Comparisons("nash_md_pairs", consecutive_pairs)


def make_pairs(judged: list[JudgedPrompt], ctx: PairContext) -> list[PreferencePair]:
    """Each judged (a, a+1), preferred first; ties kept (the update needs every prompt), abstentions dropped."""
    pairs = []
    for jp in judged:
        m = jp.array()
        for a in range(0, len(jp.responses) - 1, 2):
            p = float(m[a, a + 1])
            if math.isnan(p):
                continue
            (c, pc), (r, pr) = ((a, p), (a + 1, 1 - p)) if p >= 0.5 else ((a + 1, 1 - p), (a, p))
            pairs.append(PreferencePair(prompt=jp.prompt, chosen=jp.responses[c], rejected=jp.responses[r],
                                        prompt_id=jp.prompt_id, chosen_winrate=pc, rejected_winrate=pr, target=pc,
                                        round=ctx.round, chosen_idx=c, rejected_idx=r))
    return pairs


def _loss(t: PairTensors, cfg) -> "torch.Tensor":
    from selfplay.losses import nash_md_loss
    return nash_md_loss(t.policy_chosen, t.refs["initial"][0], t.chosen_winrate, cfg.beta)


def steps(n_prompts: int, cfg) -> int:
    return cfg.train.steps_per_round or math.ceil(n_prompts / cfg.train.batch_size)


def horizon(pairs: list[PreferencePair], cfg) -> int:
    """One optimizer step per online step."""
    return steps(len({p.prompt_id for p in pairs}), cfg)


def update(w, job):
    """train.steps_per_round Nash-MD-PG steps on the round's prompts, then save θ_{t+1}."""
    from selfplay.trainer import TrainingError, TrainResult

    cfg = job.cfg
    prompts, judge = online_start(w, job, "Nash-MD")
    result, bs, n = TrainResult(), cfg.train.batch_size, steps(len(prompts), cfg)
    losses: list[float] = []
    for s in range(n):
        batch = [prompts[(s * bs + i) % len(prompts)] for i in range(min(bs, len(prompts)))]
        tag = f"nash_md/{job.round}/{s}"
        pairs = w.on_rank0(lambda: sampled_pairs(w, batch, judge, cfg, job.seed, tag, job.round))
        if not pairs:
            raise TrainingError(f"Nash-MD step {s}: the judge gave no usable pair (abstained everywhere?)")
        loss = w.step_on(pairs, w.frozen_references(pairs))
        if not math.isfinite(loss):
            raise TrainingError(f"nash_md loss is {loss} at step {s}; nothing was saved. Lower train.lr ({cfg.train.lr})")
        result.steps += 1
        result.pairs += len(pairs)
        losses.append(loss)
        if w.rank == 0:   # one stage-log line per step: where an interrupted update stood, and how y fares vs y′
            logging.getLogger("selfplay").info("nash_md step %d/%d: loss %.4f, mean P(y ≻ y′) %.3f", s + 1, n, loss,
                                               float(np.mean([p.chosen_winrate for p in pairs])))
    result.loss_curve = [sum(losses) / len(losses)]
    if judge is not None:   # built on rank 0 only
        judge.close()
    w.save(job.out_dir)
    return result


def sampled_pairs(w, batch: list[tuple[str, str]], judge, cfg, seed: int, tag: str, round_: int) -> list[PreferencePair]:
    """Per prompt y ~ π_θ and y′ ~ the mixture of π_θ and π_ref, from the live weights, judged: the pair
    (chosen = y, rejected = y′) with chosen_winrate = P(y ≻ y′). A prompt the judge abstains on is dropped."""
    from selfplay.generation import Request, SamplingSpec
    from selfplay.hf_backend import sample_live
    from selfplay.mixture import sample_mixture
    from selfplay.trainer import autocast

    g = cfg.generation
    reqs = lambda kind: [Request(t, seed_for(seed, tag, kind, pid)) for pid, t in batch]  # noqa: E731
    model = w.live_model()
    ref, ref_mode = w.frozen_model("initial")
    with autocast(w.device, cfg.model.dtype):
        ys = sample_live(model, w.tok, reqs("policy"), SamplingSpec(1, g.temperature, g.top_p, g.max_new_tokens, g.top_k),
                         g.batch_size)
        mix = sample_mixture(model, ref, w.tok, reqs("mixture"),
                             SamplingSpec(1, g.opponent_temperature, 1.0, g.max_new_tokens, g.opponent_top_k),
                             cfg.loss.mixture_coef, g.batch_size, ref_mode)
    texts, y, y2 = [t for _, t in batch], [c[0].text for c in ys], [c[0].text for c in mix]
    prefs = judge.compare(texts, y, y2)
    return [PreferencePair(prompt=text, chosen=a, rejected=b, prompt_id=pid, chosen_winrate=float(p),
                           rejected_winrate=1 - float(p), target=float(p), round=round_)
            for (pid, text), a, b, p in zip(batch, y, y2, prefs) if not math.isnan(p)]


def reference(t: PairTensors, cfg) -> "torch.Tensor":
    """Nash-MD-PG's surrogate (arXiv 2312.00886, as selfplay.losses.nash_md_loss derives it) for y = the pair's
    `chosen` (the policy's sample): [β·sg(log π_θ(y) − log π_ref(y)) − (P(y ≻ y′) − ½)] · log π_θ(y)."""
    (rc, _) = t.refs["initial"]
    y = t.policy_chosen
    return (cfg.beta * (y - rc).detach() - (t.chosen_winrate - 0.5)) * y


ALGORITHM = Algorithm(loss_keys=("beta", "mixture_coef"), paper="arXiv 2312.00886", references=("initial",),
                      make_pairs=make_pairs, loss=_loss, reference=reference, update=update, horizon=horizon,
                      comparisons=COMPARISONS, reads=ONLINE_READS, check=check_online)
