"""Typed records that flow between stages; each maps 1:1 to a row of the stage's `datasets` file."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Type, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class PromptRow:
    prompt_id: str
    prompt: str


@dataclass(frozen=True)
class Generation:
    prompt_id: str
    prompt: str
    sample_idx: int
    seed: int
    response: str
    n_tokens: int
    finished: bool
    round: int


@dataclass(frozen=True)
class JudgedPrompt:
    prompt_id: str
    prompt: str
    responses: list[str]
    n_tokens: list[int]
    matrix: list[list[float]]          # M[i][j] = P(response i ≻ response j); NaN = abstained
    judge: str
    consistency: float = 1.0           # CREAM's consistency rate C (soft DPO label); 1 = plain label (older files lack it)

    def array(self) -> np.ndarray:
        return np.asarray(self.matrix, dtype=np.float64)


@dataclass(frozen=True)
class PreferencePair:
    """TRL-compatible (prompt, chosen, rejected) plus what the Nash losses need."""
    prompt: str
    chosen: str
    rejected: str
    prompt_id: str
    chosen_winrate: float              # estimated P(chosen ≻ π_t)
    rejected_winrate: float
    target: float = 1.0                # soft label P(chosen ≻ rejected) for DNO/CREAM-style losses
    round: int = 0
    chosen_idx: int = -1
    rejected_idx: int = -1


def to_rows(records: Iterable[Any]) -> list[dict]:
    return [dataclasses.asdict(r) for r in records]


def from_rows(cls: Type[T], rows: Iterable[dict]) -> list[T]:
    names = {f.name for f in dataclasses.fields(cls)}
    return [cls(**{k: v for k, v in row.items() if k in names}) for row in rows]
