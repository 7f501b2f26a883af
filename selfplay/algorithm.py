"""What a round algorithm is: the record each module of selfplay/algorithms/ declares as its ALGORITHM, and
the records its pair rule and loss are handed.

An algorithm says which frozen policies' log-probs its loss needs (computed once per round, before
training), which comparisons its pair rule reads (the judge stage asks the judge exactly those), how judged
prompts become training pairs, and its per-example loss, with the paper's formula beside it.

Nothing here imports torch at import time (the losses are imported where they run): the judge stage reads
an algorithm's comparisons without paying for torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import numpy as np

from selfplay.records import JudgedPrompt, PreferencePair

if TYPE_CHECKING:
    import torch

Pair = tuple[int, int]


@dataclass(frozen=True)
class PairTensors:
    """One training batch's log-probs, each [B]; refs maps a reference name to (chosen, rejected)."""
    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    refs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    chosen_winrate: torch.Tensor
    rejected_winrate: torch.Tensor
    target: torch.Tensor


@dataclass(frozen=True)
class PairContext:
    """What a pair rule may look at besides this round's judgments."""
    round: int
    loss: object                                        # LossConfig
    earlier_preferences: tuple[Path, ...] = ()          # round_1..round_{n-1}/preferences, oldest first
    seed: int = 0


@dataclass(frozen=True)
class Comparisons:
    """Which of a prompt's candidates the judge compares: an algorithm's declaration, which the judge
    stage follows (judges.base.judge_comparisons).

    next_pairs(m, asked) gets one prompt's K×K matrix so far (M_ij = P(i ≻ j); NaN where not asked, or
    where the judge abstained) and the K×K mask of the pairs asked, and returns the unordered pairs
    (i, j) to ask next, [] once the pair rule has all it reads. The stage asks every prompt's next pairs
    in ONE batched judge call and then calls next_pairs again, so an adaptive plan (INPO's bracket: a
    match's winner plays the next) costs one judge call per stage of the bracket, not one per match.
    """
    name: str    # stored with each judged prompt and in the judge stage's key; "matrix" = every pair
    next_pairs: Callable[[np.ndarray, np.ndarray], list[Pair]]


def all_pairs(m: np.ndarray, asked: np.ndarray) -> list[Pair]:
    """Every unordered pair not asked yet: the full K×K matrix in one call."""
    k = m.shape[0]
    return [(i, j) for i in range(k) for j in range(i + 1, k) if not asked[i, j]]


# Win rates against the whole sample (SPPO's row means, best vs worst by win rate) read every entry.
FULL_MATRIX = Comparisons("matrix", all_pairs)


@dataclass(frozen=True)
class Algorithm:
    paper: str
    references: tuple[str, ...]        # "previous" (π_t), "initial" (π_ref), "previous2" (π_{t-1})
    make_pairs: Callable[[list[JudgedPrompt], PairContext], list[PreferencePair]]
    # The loss section's keys this algorithm reads (loss.average_logprobs is read by all); any other
    # loss key set away from its default would be silently ignored, so the config refuses it.
    loss_keys: tuple[str, ...]
    loss: Callable[[PairTensors, object], "torch.Tensor"]   # (tensors, LossConfig) -> [B]
    # The paper's formula of the same per-example loss, written out beside the algorithm without calling
    # selfplay.losses: the test suite holds every registered algorithm's `loss` against it.
    reference: Optional[Callable[[PairTensors, object], "torch.Tensor"]] = None
    # What the pair rule reads of the judge (the full matrix serves every rule; SFT never judges).
    comparisons: Comparisons = FULL_MATRIX
    # A round whose update is not "reference log-probs, then epochs of the loss, then save" (EGPO's
    # extragradient) supplies it: update(worker, job) -> TrainResult, built from the operations of
    # selfplay.worker.Worker so that LoRA, workers, strategy and dtype apply to it as to every other.
    update: Optional[Callable] = None
    # Optimizer steps the update takes (sizes the LR schedule): horizon(pairs, cfg); None = epochs × batches.
    horizon: Optional[Callable] = None
    # Keys outside loss: that only some algorithms read ("section.key"); set away from its default with an
    # algorithm that does not list it, the config refuses it (it would be silently ignored).
    reads: tuple[str, ...] = ()
    # Whether its pair rule builds pairs from absolute per-response scores: the judge must give them.
    needs_scores: bool = False
    # Its own refusals of a whole config (config -> problems, each "key: why"), e.g. EGPO's online update
    # takes steps, not epochs.
    check: Callable[[object], Iterator[str]] = lambda cfg: iter(())
    name: str = ""                     # set by the registry: the module's name


def online_start(w, job, what: str) -> tuple[list[tuple[str, str]], object]:
    """Where an online update starts: the round's (prompt id, prompt) in the seeded order it walks them, and the
    round's judge, built on rank 0 only (it samples and judges; every rank steps)."""
    import random

    from selfplay.trainer import TrainingError
    if job.make_judge is None:
        raise TrainingError(f"{what} samples and judges at every step, but the trainer was given no judge")
    prompts = sorted({p.prompt_id: p.prompt for p in job.pairs}.items())
    random.Random(job.seed).shuffle(prompts)
    return prompts, (job.make_judge() if w.rank == 0 else None)


# An online update (EGPO's, Nash-MD's) samples y″ / y′ with its own sampler and counts steps, not epochs.
ONLINE_READS = ("generation.opponent_temperature", "generation.opponent_top_k", "train.steps_per_round")


def check_online(cfg) -> Iterator[str]:
    """An online update takes steps on fresh samples of the trainer's own weights."""
    if cfg.train.epochs != 1:
        yield (f"train.epochs={cfg.train.epochs}: algorithm {cfg.algorithm}'s online update takes "
               "train.steps_per_round steps on fresh samples, not epochs; set train.epochs: 1")
    if cfg.train.strategy != "ddp":
        yield (f"algorithm {cfg.algorithm} samples from the trainer's own weights at every step; with train.strategy="
               f"{cfg.train.strategy} the weights are sharded. Use train.strategy=ddp (with LoRA for large models)")
