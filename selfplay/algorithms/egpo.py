"""EGPO (Zhou, Fazel, Du, "Extragradient Preference Optimization", arXiv 2503.08942, COLM 2025;
official code zhourunlong/EGPO, research notes §4), step by step as its authors train
(lms/trainers/extragradient_trainer.py, `global_step % 2`, notes §4.4): every optimizer step is half
of an extragradient pair, each on FRESH samples from the trainer's own current weights, judged
against an opponent sample y″ of the same policy:

    for s in 1..train.steps_per_round:          batches of train.batch_size prompts, in seeded order
        batch 2s−1: (y, y′, y″) ~ π_{θ_t}      judged: P(y ≻ y″), P(y′ ≻ y″)        half step → θ_{t+½}
        batch 2s:   (y, y′, y″) ~ π_{θ_{t+½}}  weights and optimizer restored to θ_t  full step → θ_{t+1}

(selfplay.extragradient.extragradient_iteration), with the online IPO loss (notes §4.2/§4.4)
    ((Δ_ref(y) − Δ_ref(y′)) − (P(y ≻ y″) − P(y′ ≻ y″))/β)²,  Δ_ref = log π_θ − log π_ref,
π_ref = round 0's policy, frozen for the whole update (LoRA: the base with the adapters disabled, as
the authors do). (y, y′) use generation.{temperature, top_p, top_k} (the authors: T = 2, top-k 10);
y″ uses generation.opponent_{temperature, top_k} (T = 1, no top-k). Sampling runs on the live
weights (the HF sampler over the model in memory; nothing is reloaded from disk per step). The two
halves take successive batches of prompts, as the authors' training_step takes the data loader's next
batch at every optimizer step (train.extragradient_prompts: same gives both halves one batch). The LR
schedule is not rolled back: it counts both halves (selfplay/worker.py restore). With several workers
rank 0 samples and judges, every worker steps. Per-token-average log-probs are the authors' default
(normalize_logprobs=True); loss.average_logprobs selects.

A round is a block of train.steps_per_round iterations. The round's generate → judge →
preferences stages still run: they give the update its prompts and record π_t's judged samples
(make_pairs below, the pairs the stage writes). Not carried over from the authors: their optimizer
state and schedule span the whole multi-epoch run; here each round starts a fresh optimizer and
schedule (the state is not checkpointed with the policy).

Pairs of the stage (make_pairs): per prompt, samples (0,1), (2,3), … are the (a, b) pairs, each
judged against one opponent sample y″ of the same round (opponent(): the last sample, or for the
pair holding it the first), as the online path judges (y, y′) against one y″. The update trains on
fresh samples only and reads no more of the stage than its prompts, so the judge is asked just these
K − 1 comparisons (COMPARISONS), not the K×K matrix. A judge that can only give the whole matrix
(PairRM's aggregated scores, the score-based judges) leaves a full matrix, and there y″ ranges over
the prompt's *other* samples: P(a ≻ y″) is the mean of row a over those columns. With K = 2, y″ is
drawn from {a, b} itself: the target difference is (P(a ≻ b) − ½)/β, the authors' `can_reduce_variance`
form.
"""
from __future__ import annotations

import logging
import math
from typing import Iterator

import numpy as np

from selfplay.algorithm import (ONLINE_READS, Algorithm, Comparisons, Pair, PairContext, PairTensors, check_online,
                                online_start)
from selfplay.artifacts import seed_for
from selfplay.records import JudgedPrompt, PreferencePair


def opponent(k: int, a: int) -> int:
    """The y″ the stage's pair (a, a+1) is judged against: the last sample (unpaired when K is odd), or
    for the pair holding it the first sample. K ≥ 3."""
    return k - 1 if a + 1 < k - 1 else 0


def opponent_pairs(m: np.ndarray, asked: np.ndarray) -> list[Pair]:
    """EGPO's comparisons: (a, y″) and (a+1, y″) for each pair, (0, 1) alone when K = 2; K − 1 in all."""
    k = m.shape[0]
    wanted: list[Pair] = []
    for a in range(0, k - 1, 2):
        o = opponent(k, a) if k > 2 else None
        wanted += [(0, 1)] if o is None else [(min(x, o), max(x, o)) for x in (a, a + 1)]
    return [p for p in dict.fromkeys(wanted) if not asked[p]]   # K even: (0, K−1) serves two pairs


COMPARISONS = Comparisons("egpo_opponent", opponent_pairs)


def versus_rest(m: np.ndarray, a: int, b: int, rest: list[int] | None = None) -> tuple[float, float]:
    """(P(a ≻ y″), P(b ≻ y″)) averaged over y″ in `rest` (default: the samples other than a and b)."""
    rest = [j for j in range(m.shape[0]) if j not in (a, b)] if rest is None else rest
    if not rest:  # K = 2: y″ uniform on {a, b}, so the target difference is P(a ≻ b) − ½
        return (0.5 + float(m[a, b])) / 2, (0.5 + float(m[b, a])) / 2
    ra, rb = m[a, rest], m[b, rest]
    if np.all(np.isnan(ra)) or np.all(np.isnan(rb)):
        return float("nan"), float("nan")
    return float(np.nanmean(ra)), float(np.nanmean(rb))


def make_pairs(judged: list[JudgedPrompt], ctx: PairContext) -> list[PreferencePair]:
    pairs = []
    for jp in judged:
        m, k = jp.array(), len(jp.responses)
        for a in range(0, k - 1, 2):
            rest = [opponent(k, a)] if jp.comparisons == COMPARISONS.name and k > 2 else None
            pa, pb = versus_rest(m, a, a + 1, rest)
            if math.isnan(pa) or math.isnan(pb):
                continue
            (c, pc), (r, pr) = sorted([(a, pa), (a + 1, pb)], key=lambda x: -x[1])
            pairs.append(PreferencePair(prompt=jp.prompt, chosen=jp.responses[c], rejected=jp.responses[r],
                                        prompt_id=jp.prompt_id, chosen_winrate=pc, rejected_winrate=pr,
                                        target=1.0, round=ctx.round, chosen_idx=c, rejected_idx=r))
    return pairs


def _loss(t: PairTensors, cfg) -> "torch.Tensor":
    from selfplay.losses import egpo_loss
    ref_a, ref_b = t.refs["initial"]
    return egpo_loss(t.policy_chosen, t.policy_rejected, ref_a, ref_b, t.chosen_winrate, t.rejected_winrate,
                     cfg.beta)


def horizon(pairs: list[PreferencePair], cfg) -> int:
    """Two optimizer steps (half + full) per extragradient iteration."""
    return 2 * iterations(len({p.prompt_id for p in pairs}), cfg)


def iterations(n_prompts: int, cfg) -> int:
    """train.steps_per_round, or one pass over the prompts (two batches an iteration when successive)."""
    return cfg.train.steps_per_round or math.ceil(n_prompts / (cfg.train.batch_size * len(_halves(cfg))))


def _halves(cfg) -> tuple[int, ...]:
    """Which batch of the iteration each half step samples: the next one each (the authors'), or one."""
    return (0, 1) if cfg.train.extragradient_prompts == "successive" else (0,)


def update(w, job):
    """train.steps_per_round extragradient iterations on the round's prompts, then save θ_{t+1}."""
    from selfplay.extragradient import extragradient_iteration
    from selfplay.trainer import TrainingError, TrainResult

    cfg = job.cfg
    prompts, judge = online_start(w, job, "EGPO")
    result, bs, phase = TrainResult(), cfg.train.batch_size, [0]
    losses: list[float] = []
    n_iter, halves = iterations(len(prompts), cfg), _halves(cfg)
    for s in range(n_iter):
        batches = [[prompts[((s * len(halves) + h) * bs + i) % len(prompts)] for i in range(min(bs, len(prompts)))]
                   for h in halves]

        def sample():
            phase[0] += 1
            batch = batches[(phase[0] - 1) % len(batches)]   # the half step's, then the full step's
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
            if w.rank == 0:   # one stage-log line per half and full step: where an interrupted update stood
                logging.getLogger("selfplay").info("egpo iteration %d/%d: %s step loss %.4f", s + 1, n_iter,
                                                   "half" if result.steps % 2 else "full", loss)
            return loss

        losses += extragradient_iteration(sample, step, w.snapshot, w.restore)
    result.loss_curve = [sum(losses[0::2]) / len(losses[0::2]), sum(losses[1::2]) / len(losses[1::2])]  # half, full
    if judge is not None:   # rank 0's (make_judge may give none: tests that patch the judging out)
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
    reqs = lambda kind: [Request(t, seed_for(seed, tag, kind, pid)) for pid, t in batch]  # noqa: E731
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


def _check(cfg) -> Iterator[str]:
    yield from check_online(cfg)
    if cfg.train.extragradient_prompts not in ("successive", "same"):
        yield f"train.extragradient_prompts: successive or same, got {cfg.train.extragradient_prompts!r}"


def reference(t: PairTensors, cfg) -> "torch.Tensor":
    """The online IPO loss of the authors' code (simulations/loss_funcs.py): (h_ref(y, y′) − (P(y ≻ y″) −
    P(y′ ≻ y″))/β)², h_ref = log π(y)/π_ref(y) − log π(y′)/π_ref(y′)."""
    (rc, rr) = t.refs["initial"]
    return ((t.policy_chosen - rc) - (t.policy_rejected - rr) - (t.chosen_winrate - t.rejected_winrate) / cfg.beta) ** 2


ALGORITHM = Algorithm(loss_keys=("beta",), paper="arXiv 2503.08942", references=("initial",), make_pairs=make_pairs,
                      loss=_loss, reference=reference, update=update, horizon=horizon, comparisons=COMPARISONS,
                      # y″'s own sampler, the online step count and the halves' prompts: only this update reads them
                      reads=ONLINE_READS + ("train.extragradient_prompts",), check=_check)
