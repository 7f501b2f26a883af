"""Teacher (gold) responses: DNO-Prct's y_gold (arXiv 2404.03715v1, Algorithm 2 line 3; §5.1 "Data":
"for each input, we also collect the GPT-4-Turbo output ... to be reserved for y_gold").

`data.teacher_column` names a column of the round's training prompt source (the same source and
ids `selfplay.data.round_prompts` reads) that holds one gold response per prompt. The judge stage
(pipelines.stages.judge) appends it to the prompt's K samples, so the judge scores it like any
other candidate, and DNO's pair rule (selfplay/algorithms/dno.py) knows it by JudgedPrompt.teacher_idx.
It is added there, not at generation: generation samples the policy, and a teacher answer is no
sample (it has no seed and no token count; its n_tokens is -1).

A cell is either a string or a list of chat messages ({"role", "content"}), as in
HuggingFaceH4/ultrafeedback_binarized's `chosen` ([user turn, assistant turn]); a list gives its
last assistant turn. Anything else is a DataError. An empty cell gives that prompt no teacher.
"""
from __future__ import annotations


from selfplay.config import DataConfig
from selfplay.data import DataError, open_dataset, round_source


def teacher_text(value, where: str = "") -> str:
    """The gold response in one cell: a string, or the last assistant message of a message list."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(m, dict) for m in value):
        turns = [m for m in value if m.get("role") == "assistant"]
        if turns and isinstance(turns[-1].get("content"), str):
            return turns[-1]["content"]
        if not value:
            return ""
    raise DataError(f"{where}: a teacher cell must be a string or a list of chat messages with an assistant turn, "
                    f"got {str(value)[:200]!r}")


def teacher_responses(d: DataConfig, round_: int, prompt_ids) -> dict[str, str]:
    """{prompt_id: gold response} for the given ids of round n's source (ids without one are left out)."""
    src = round_source(d, round_)
    ds = open_dataset(src, d.split, "teacher responses")
    if d.teacher_column not in ds.column_names:
        raise DataError(f"data.teacher_column: {src} has no column {d.teacher_column!r} (columns: {ds.column_names})")
    ids = ds[d.id_column] if d.id_column in ds.column_names else [str(i) for i in range(len(ds))]
    wanted = {str(i) for i in prompt_ids}
    out = {}
    for pid, cell in zip(ids, ds[d.teacher_column]):
        pid = str(pid)
        if pid in wanted:
            text = teacher_text(cell, f"{src} row {pid!r}")
            if text.strip():
                out[pid] = text
    return out


def with_teacher(groups: list[tuple[str, str, list[dict]]], d: DataConfig) -> list[tuple[str, str, list[dict]]]:
    """The judge stage's groups (prompt_id, prompt, sample rows) with the teacher's answer appended as
    one more row ({"response", "n_tokens": -1, "sample_idx": -1, "teacher": True}) where it has one.
    Unchanged without data.teacher_column. No teacher for any prompt is an error (a wrong column)."""
    if not d.teacher_column or not groups:
        return groups
    round_ = int(groups[0][2][0]["round"])
    gold = teacher_responses(d, round_, [pid for pid, _, _ in groups])
    if not gold:
        raise DataError(f"data.teacher_column={d.teacher_column!r}: no teacher response for any of round {round_}'s "
                        f"{len(groups)} prompts")
    row = {"n_tokens": -1, "sample_idx": -1, "teacher": True}
    return [(pid, p, rs + [{**row, "response": gold[pid]}] if pid in gold else rs) for pid, p, rs in groups]


def teacher_index(rows: list[dict]) -> int:
    """Index of the teacher's row among a group's rows (with_teacher), -1 if none."""
    return next((i for i, r in enumerate(rows) if r.get("teacher")), -1)
