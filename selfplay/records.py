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
    # Absolute score per response from a scoring judge (llm rubric mode, oracle), NaN = unscored; empty = the judge
    # gives no scores (older files lack it). DNO's pair rule reads them (selfplay/algorithms/dno.py).
    scores: list[float] = dataclasses.field(default_factory=list)
    teacher_idx: int = -1              # index of the teacher's (gold) response among responses (data.teacher_column);
                                       # -1 = none. Its n_tokens entry is -1: the policy did not write it
    # The comparisons the judge was asked (selfplay.algorithms.Comparisons.name): "matrix" = every pair (older
    # files lack it); otherwise only the algorithm's, and matrix entries never asked are NaN.
    comparisons: str = "matrix"

    def array(self) -> np.ndarray:
        return np.asarray(self.matrix, dtype=np.float64)


@dataclass(frozen=True)
class PreferencePair:
    """(prompt, chosen, rejected) plus what the Nash losses need. On disk a row is in TRL's
    conversational preference format (pair_to_row / row_to_pair)."""
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


def arrow_schema(cls: type) -> "pyarrow.Schema":
    """The Arrow columns of a record's rows, from its field types: a column of lists keeps its element type
    where every list of a batch is empty (JudgedPrompt.scores of a judge that gives none), which inferring
    the type from the rows would leave without one."""
    import typing

    import pyarrow as pa

    plain = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}

    def arrow(tp, name: str) -> "pyarrow.DataType":
        if typing.get_origin(tp) is list:
            return pa.list_(arrow(typing.get_args(tp)[0], name))
        if tp not in plain:
            raise TypeError(f"{cls.__name__}.{name}: no Arrow column type for {tp!r} (str, int, float, bool, lists)")
        return plain[tp]
    hints = typing.get_type_hints(cls)
    return pa.schema([(f.name, arrow(hints[f.name], f.name)) for f in dataclasses.fields(cls)])


def from_rows(cls: Type[T], rows: Iterable[dict]) -> list[T]:
    names = {f.name for f in dataclasses.fields(cls)}
    return [cls(**{k: v for k, v in row.items() if k in names}) for row in rows]


def pair_to_row(pair: PreferencePair) -> dict:
    """A `preferences` row in TRL's conversational preference format: prompt = [user message],
    chosen / rejected = [assistant message]; the other fields stay plain columns. TRL's DPOTrainer
    then applies the chat template, as the project's trainer does (selfplay.logprobs.encode_pairs);
    plain strings would be TRL's *standard* format, which it tokenises without the template."""
    row = dataclasses.asdict(pair)
    row["prompt"] = [{"role": "user", "content": pair.prompt}]
    row["chosen"] = [{"role": "assistant", "content": pair.chosen}]
    row["rejected"] = [{"role": "assistant", "content": pair.rejected}]
    return row


def row_to_pair(row: dict) -> PreferencePair:
    """pair_to_row's inverse; also reads rows with plain-string prompt/chosen/rejected (run dirs
    written before the conversational format)."""
    def text(v) -> str:
        if isinstance(v, str):
            return v
        if len(v) != 1:
            raise ValueError(f"a preference row holds one message per column, got {len(v)}: {v!r}")
        return v[0]["content"]
    (pair,) = from_rows(PreferencePair, [{**row, **{k: text(row[k]) for k in ("prompt", "chosen", "rejected")}}])
    return pair


def score_matrix(scores: np.ndarray) -> np.ndarray:
    """P_ij = 1 / ½ / 0 as s_i >, =, < s_j; NaN where either score is NaN; diagonal ½."""
    s = np.asarray(scores, dtype=np.float64)
    m = np.where(s[:, None] > s[None, :], 1.0, np.where(s[:, None] < s[None, :], 0.0, 0.5))
    m[np.isnan(s[:, None]) | np.isnan(s[None, :])] = np.nan
    np.fill_diagonal(m, 0.5)
    return m
