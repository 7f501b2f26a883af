"""One extragradient iteration, as EGPO's authors run it at every optimizer step
(zhourunlong/EGPO lms/trainers/extragradient_trainer.py: `global_step % 2`; research notes §4.4):

    data_t   ← sample(θ_t)                      fresh samples from the current weights
    θ_{t+½}  ← step(θ_t, data_t)                the half step (the optimizer and schedule advance)
    data_½   ← sample(θ_{t+½})                  fresh samples from the half-step weights
    θ_{t+1}  ← step(θ_t, data_½)                weights and optimizer state restored to θ_t first

Each sample() call may draw its own prompts: the authors' training_step takes the next batch of the
data loader at every optimizer step, so the half and full steps see two successive batches (EGPO's
update, train.extragradient_prompts). The learning-rate schedule is not rolled back (the authors'
scheduler counts both steps; tested in tests/test_egpo_restore.py). Written over four callables so
the same routine drives an LLM (selfplay.worker.Worker) and the 3-action tabular policy of
tests/test_extragradient.py.
"""
from __future__ import annotations

from typing import Callable, TypeVar

D = TypeVar("D")
S = TypeVar("S")


def extragradient_iteration(sample: Callable[[], D], step: Callable[[D], float], snapshot: Callable[[], S],
                            restore: Callable[[S], None]) -> tuple[float, float]:
    """Run one half+full pair; returns the two steps' losses."""
    data_t = sample()
    saved = snapshot()
    half_loss = step(data_t)
    data_half = sample()
    restore(saved)          # the full step's gradient is taken at θ_t, on θ_{t+½}'s samples
    full_loss = step(data_half)
    return half_loss, full_loss
