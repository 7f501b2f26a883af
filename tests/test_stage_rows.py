"""A stage's `datasets` artifact, written and read record batch by record batch (pipelines/stages.py: _save,
_rows): the files datasets itself writes and reads, the same rows, content-determined bytes, and a write
that goes to disk as the rows come rather than after holding them all."""
from __future__ import annotations

import json
import math

import datasets
import pytest

from pipelines import stages
from selfplay.artifacts import hash_dir
from selfplay.records import JudgedPrompt, arrow_schema, from_rows

NAN = float("nan")


def _rows(n: int) -> list[dict]:
    return [{"prompt_id": f"p{i}", "responses": ["x" * (i % 7), "y"], "matrix": [[0.5, NAN if i % 3 else 0.25],
                                                                            [0.75, 0.5]],
             "finished": i % 2 == 0, "n_tokens": i} for i in range(n)]


def _same(a: list[dict], b: list[dict]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)   # NaN == NaN here


def test_datasets_reads_what_save_writes_as_if_datasets_had_written_it(tmp_path):
    rows = _rows(2 * stages.SAVE_BATCH + 7)   # three record batches
    stages._save(iter(rows), tmp_path / "ours")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "theirs"))
    ours, theirs = datasets.load_from_disk(str(tmp_path / "ours")), datasets.load_from_disk(str(tmp_path / "theirs"))
    assert ours.features == theirs.features and len(ours) == len(rows)
    assert _same(ours.to_list(), rows) and math.isnan(ours[1]["matrix"][0][1])
    assert (tmp_path / "ours/dataset_info.json").read_text() == (tmp_path / "theirs/dataset_info.json").read_text()
    assert ours.map(lambda r: {"k": r["n_tokens"] + 1})[3]["k"] == 4   # a user's map works on it (TRL does)


def test_rows_reads_directories_datasets_wrote_in_several_files(tmp_path):
    rows = _rows(50)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "d"), num_shards=3)
    assert len(list((tmp_path / "d").glob("data-*.arrow"))) == 3
    assert _same(list(stages._rows(tmp_path / "d")), rows)


def test_the_same_rows_give_the_same_bytes_and_other_rows_other_ones(tmp_path):
    stages._save(_rows(30), tmp_path / "a")
    stages._save(_rows(30), tmp_path / "b")
    stages._save(_rows(31), tmp_path / "c")
    assert hash_dir(tmp_path / "a") == hash_dir(tmp_path / "b") != hash_dir(tmp_path / "c")
    fingerprint = lambda d: json.loads((tmp_path / d / "state.json").read_text())["_fingerprint"]  # noqa: E731
    assert fingerprint("a") == fingerprint("b") != fingerprint("c")


def test_rows_go_to_disk_while_the_iterable_still_yields(tmp_path):
    """The write holds one batch, not the rows: by the time the third batch is asked for, two are on disk."""
    out, sizes = tmp_path / "d", []

    def rows():
        for i, row in enumerate(_rows(3 * stages.SAVE_BATCH)):
            if i == 2 * stages.SAVE_BATCH:
                sizes.append((out / stages.DATA_FILE).stat().st_size)
            yield row
    stages._save(rows(), out)
    assert sizes and 0 < 2 * sizes[0] < 3 * (out / stages.DATA_FILE).stat().st_size


def test_judged_prompts_keep_their_column_types_when_no_prompt_has_scores(tmp_path):
    judged = [JudgedPrompt(f"p{i}", "q", ["a", "b"], [1, 2], [[0.5, 1.0], [0.0, 0.5]], "pairrm") for i in range(3)]
    stages._save((vars(j) for j in judged), tmp_path / "j", arrow_schema(JudgedPrompt))
    ds = datasets.load_from_disk(str(tmp_path / "j"))
    assert ds.features["scores"] == datasets.List(datasets.Value("float64"))
    assert from_rows(JudgedPrompt, stages._rows(tmp_path / "j")) == judged


def test_no_rows_need_a_schema_and_with_one_make_an_empty_dataset(tmp_path):
    with pytest.raises(ValueError, match="no row to write, and no schema"):
        stages._save([], tmp_path / "e")
    stages._save([], tmp_path / "f", arrow_schema(JudgedPrompt))
    assert len(datasets.load_from_disk(str(tmp_path / "f"))) == 0 and list(stages._rows(tmp_path / "f")) == []


def test_arrow_schema_refuses_a_field_type_it_cannot_store():
    from dataclasses import dataclass

    @dataclass
    class Odd:
        x: dict

    with pytest.raises(TypeError, match=r"Odd.x: no Arrow column type"):
        arrow_schema(Odd)


# ---- fanned-out stages: each actor reads its own share and writes its own part, joined on disk ----------
# (fan_out=run_here runs the shares in this process, one after the other, through the same code as Ray's actors)

def _generations(tmp_path, gold=None):
    """Round 1's generations (K = 3) for 4 arena prompts, and a jsonl source of them with a `gold` column."""
    from selfplay.assets import arena_prompts
    from selfplay.records import Generation

    prompts = arena_prompts("train")[:4]
    src = tmp_path / "prompts.jsonl"
    gold = gold or (lambda i: "")
    src.write_text("".join(json.dumps({**p, "gold": gold(i)}) + "\n" for i, p in enumerate(prompts)))
    gens = [Generation(p["prompt_id"], p["prompt"], j, 0, text, 3, True, 1)
            for p in prompts for j, text in enumerate(["the wave the", "a very", "of some pine"])]
    stages._save((vars(g) for g in gens), tmp_path / "generations")
    return src


def _judged(tmp_path, overrides, name, config="configs/arena_sppo.yaml"):
    from judges.registry import JudgeContext
    from pipelines.config import load_config
    cfg = load_config(config, overrides)
    summary = stages.judge(tmp_path / "generations", cfg, JudgeContext(), tmp_path / name)
    assert not list((tmp_path / name).glob(".part-*"))   # the parts are joined and gone
    return summary, list(stages._rows(tmp_path / name))


def test_two_judge_shares_write_what_one_judge_writes(tmp_path):
    _generations(tmp_path)
    one, rows_one = _judged(tmp_path, [], "one")
    two, rows_two = _judged(tmp_path, ["judge.num_actors=2"], "two")
    assert _same(rows_one, rows_two) and [r["prompt_id"] for r in rows_two] == stages.prompt_ids(
        tmp_path / "generations")
    assert one["pairs"] == two["pairs"] == 4 * 3 and two["judge_actors"] == 2


def test_a_share_without_teacher_answers_is_judged_when_other_prompts_have_them(tmp_path):
    """Only the first prompt has a teacher answer: the second share has none, which is no error (the stage
    checks the whole set); a column with no answer at all is refused once, before any judge runs."""
    from selfplay.data import DataError
    src = _generations(tmp_path, gold=lambda i: "wave tide coral" if i == 0 else "")
    data = [f"data.train_prompts={src}", "data.prompts_per_round=4", "judge.num_actors=2"]
    summary, rows = _judged(tmp_path, [*data, "data.teacher_column=gold"], "judged", "configs/arena_dno.yaml")
    assert summary["teacher_responses"] == 1 and [r["teacher_idx"] for r in rows] == [3, -1, -1, -1]
    (tmp_path / "prompts.jsonl").write_text(src.read_text().replace('"gold": "wave tide coral"', '"gold": ""'))
    with pytest.raises(DataError, match="no teacher response for any of round 1's 4 prompts"):
        _judged(tmp_path, [*data, "data.teacher_column=gold"], "none", "configs/arena_dno.yaml")


def test_two_engines_write_what_one_engine_writes(tmp_path):
    from pipelines.config import load_config
    from selfplay.data import resolve_builtin

    policy = resolve_builtin("builtin:arena")
    tiny = ["data.prompts_per_round=6", "generation.k=2", "generation.max_new_tokens=8"]
    one = stages.generate(policy, load_config("configs/arena_sppo.yaml", tiny), 1, tmp_path / "one")
    two = stages.generate(policy, load_config("configs/arena_sppo.yaml", [*tiny, "generation.num_engines=2"]), 1,
                          tmp_path / "two")
    assert one["samples"] == two["samples"] == 12 and one["tokens"] == two["tokens"]
    assert _same(list(stages._rows(tmp_path / "one")), list(stages._rows(tmp_path / "two")))
    assert not list((tmp_path / "two").glob(".part-*"))
