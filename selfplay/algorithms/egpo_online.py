"""EGPO step by step, as its authors train (zhourunlong/EGPO lms/trainers/extragradient_trainer.py,
research notes §4.4): every optimizer step is half of an extragradient pair, each on FRESH samples
from the trainer's own current weights, judged against an opponent sample y″ of the same policy.

    for s in 1..train.steps_per_round:          train.batch_size prompts of the round, in seeded order
        (y, y′, y″) ~ π_{θ_t}        judged: P(y ≻ y″), P(y′ ≻ y″)          half step  → θ_{t+½}
        (y, y′, y″) ~ π_{θ_{t+½}}    weights and optimizer restored to θ_t   full step  → θ_{t+1}

(selfplay.extragradient.extragradient_iteration). (y, y′) use generation.{temperature, top_p, top_k}
(the authors: T = 2, top-k 10); y″ uses generation.opponent_{temperature, top_k} (T = 1, no top-k).
Sampling runs on the live weights (the HF sampler over the model in memory; nothing is reloaded from
disk per step). π_ref = round 0's policy, frozen for the whole update (LoRA: the base with the
adapters disabled, as the authors do). One LR schedule covers both halves of every pair (the
scheduler is not rolled back). With several workers rank 0 samples and judges, every worker steps.

Not carried over from the authors: their optimizer state and schedule span the whole multi-epoch run;
here each round (a block of steps) starts a fresh optimizer and schedule.
"""
from __future__ import annotations

import math
import random

from selfplay.records import PreferencePair


def horizon(pairs: list[PreferencePair], cfg) -> int:
    """Two optimizer steps (half + full) per extragradient iteration."""
    return 2 * iterations(len({p.prompt_id for p in pairs}), cfg)


def iterations(n_prompts: int, cfg) -> int:
    return cfg.train.steps_per_round or math.ceil(n_prompts / cfg.train.batch_size)


def update(w, job):
    """train.steps_per_round extragradient iterations on the round's prompts, then save θ_{t+1}."""
    from selfplay.extragradient import extragradient_iteration
    from selfplay.trainer import TrainingError, TrainResult

    if job.make_judge is None:
        raise TrainingError("EGPO samples and judges at every step, but the trainer was given no judge")
    cfg = job.cfg
    prompts = sorted({p.prompt_id: p.prompt for p in job.pairs}.items())
    random.Random(job.seed).shuffle(prompts)
    judge = job.make_judge() if w.rank == 0 else None
    result, bs, phase = TrainResult(), cfg.train.batch_size, [0]
    losses: list[float] = []
    for s in range(iterations(len(prompts), cfg)):
        batch = [prompts[(s * bs + i) % len(prompts)] for i in range(min(bs, len(prompts)))]

        def sample():
            phase[0] += 1
            tag = f"egpo/{job.round}/{s}/{phase[0] % 2}"
            pairs = w.on_rank0(lambda: judged_pairs(w, batch, judge, cfg, job.seed, tag, job.round))
            if not pairs:
                raise TrainingError(f"EGPO step {s}: the judge gave no usable pair (abstained everywhere?)")
            return pairs

        def step(pairs) -> float:
            loss = w.step_on(pairs, w.frozen_references(pairs))
            if not math.isfinite(loss):
                raise TrainingError(f"egpo loss is {loss} at step {s}; nothing was saved. Lower train.lr ({cfg.train.lr})")
            result.steps += 1
            result.pairs += len(pairs)
            return loss

        losses += extragradient_iteration(sample, step, w.snapshot, w.restore)
    result.loss_curve = [sum(losses[0::2]) / len(losses[0::2]), sum(losses[1::2]) / len(losses[1::2])]  # half, full
    if hasattr(judge, "close"):
        judge.close()
    w.save(job.out_dir)
    return result


def judged_pairs(w, batch: list[tuple[str, str]], judge, cfg, seed: int, tag: str, round_: int) -> list[PreferencePair]:
    """(y, y′) and y″ for each prompt from the live weights, judged; the pair (y, y′) with the targets
    P(y ≻ y″), P(y′ ≻ y″) (chosen = the larger). A prompt the judge abstains on is dropped."""
    from selfplay.generation import Request, SamplingSpec
    from selfplay.hf_backend import sample_live
    from selfplay.trainer import autocast

    g = cfg.generation
    texts = [t for _, t in batch]
    reqs = lambda kind: [Request(t, _seed(seed, tag, kind, pid)) for pid, t in batch]  # noqa: E731
    model = w.live_model()
    with autocast(w.device, cfg.model.dtype):
        ys = sample_live(model, w.tok, reqs("pair"), SamplingSpec(2, g.temperature, g.top_p, g.max_new_tokens, g.top_k),
                         g.batch_size)
        opp = sample_live(model, w.tok, reqs("opponent"),
                          SamplingSpec(1, g.opponent_temperature, 1.0, g.max_new_tokens, g.opponent_top_k), g.batch_size)
    a, b, ypp = [y[0].text for y in ys], [y[1].text for y in ys], [o[0].text for o in opp]
    pa, pb = judge.compare(texts, a, ypp), judge.compare(texts, b, ypp)
    pairs = []
    for (pid, text), ya, yb, p, q in zip(batch, a, b, pa, pb):
        if math.isnan(p) or math.isnan(q):
            continue
        (c, pc), (r, pr) = sorted([(ya, float(p)), (yb, float(q))], key=lambda x: -x[1])
        pairs.append(PreferencePair(prompt=text, chosen=c, rejected=r, prompt_id=pid, chosen_winrate=pc,
                                    rejected_winrate=pr, target=1.0, round=round_))
    return pairs


def _seed(*parts) -> int:
    import hashlib
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF
