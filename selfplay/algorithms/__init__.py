"""The one registry of round algorithms. `algorithm: <name>` in the config picks one.

An algorithm says which frozen policies' log-probs its loss needs (computed once per round,
before training), how judged prompts become training pairs, and its per-example loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from selfplay.records import JudgedPrompt, PreferencePair


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
class Algorithm:
    name: str
    paper: str
    references: tuple[str, ...]        # "previous" (π_t), "initial" (π_ref), "previous2" (π_{t-1})
    make_pairs: Callable[[list[JudgedPrompt], PairContext], list[PreferencePair]]
    # The loss section's keys this algorithm reads (loss.average_logprobs is read by all); any other
    # loss key set away from its default would be silently ignored, so the config refuses it.
    loss_keys: tuple[str, ...]
    loss: Callable[[PairTensors, object], torch.Tensor]   # (tensors, LossConfig) -> [B]
    # A round whose update is not "reference log-probs, then epochs of the loss, then save" (EGPO's
    # extragradient) supplies it: update(worker, job) -> TrainResult, built from the operations of
    # selfplay.worker.Worker so that LoRA, workers, strategy and dtype apply to it as to every other.
    update: Optional[Callable] = None
    # Optimizer steps the update takes (sizes the LR schedule): horizon(pairs, cfg); None = epochs × batches.
    horizon: Optional[Callable] = None


def _registry() -> dict[str, Algorithm]:
    from selfplay.algorithms import sppo
    algos = [sppo.ALGORITHM]
    for mod in ("inpo", "dno", "egpo", "apo", "dpo"):  # filled in as each lands
        try:
            m = __import__(f"selfplay.algorithms.{mod}", fromlist=["ALGORITHMS"])
        except ModuleNotFoundError:
            continue
        algos += list(getattr(m, "ALGORITHMS", [getattr(m, "ALGORITHM", None)]))
    return {a.name: a for a in algos if a is not None}


ALGORITHMS: dict[str, Algorithm] = _registry()


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]
