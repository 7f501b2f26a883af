"""Per-round training prompts: disjoint slices of one pool, or one source per round; a round past the
end is refused (before the driver starts anything) unless data.reuse_prompts allows wrapping around."""
import dataclasses
import json
from glob import glob

import pytest

import selfplay.data as data
from pipelines.layout import round_paths
from selfplay.config import DataConfig
from pipelines.config import load_config
from selfplay.data import DataError, check_rounds, round_prompts


def write_prompts(path, ids):
    path.write_text("".join(json.dumps({"prompt_id": i, "prompt": f"Tell me about {i}."}) + "\n" for i in ids))
    return str(path)


def ids(rows):
    return [r.prompt_id for r in rows]


@pytest.fixture
def pool(tmp_path):
    return write_prompts(tmp_path / "pool.jsonl", [f"p{i}" for i in range(9)])


@pytest.fixture
def sources(tmp_path):
    # four prompts per source, three taken per round: a source's tail is never used
    return tuple(write_prompts(tmp_path / f"iter{s}.jsonl", [f"s{s}-{i}" for i in range(4)]) for s in (1, 2, 3))


# ---------------------------------------------------------------- one pool


def test_pool_rounds_are_disjoint_slices_covering_the_pool(pool):
    d = DataConfig(train_prompts=pool, prompts_per_round=3)
    rounds = [ids(round_prompts(d, n)) for n in (1, 2, 3)]
    assert rounds == [["p0", "p1", "p2"], ["p3", "p4", "p5"], ["p6", "p7", "p8"]]


def test_pool_round_past_the_end_is_refused(pool):
    d = DataConfig(train_prompts=pool, prompts_per_round=3)
    with pytest.raises(DataError, match=r"pool of 9 prompts at data.prompts_per_round=3 covers rounds 1-3; "
                                        r"round 4 has no fresh prompts.*reuse_prompts: true"):
        round_prompts(d, 4)


def test_pool_partial_last_slice_is_refused(tmp_path):
    d = DataConfig(train_prompts=write_prompts(tmp_path / "p.jsonl", [f"p{i}" for i in range(10)]), prompts_per_round=3)
    assert ids(round_prompts(d, 3)) == ["p6", "p7", "p8"]
    with pytest.raises(DataError, match="covers rounds 1-3; round 4 would get only 1 fresh prompts of 3"):
        round_prompts(d, 4)
    small = DataConfig(train_prompts=d.train_prompts, prompts_per_round=20)
    with pytest.raises(DataError, match="covers no full round; round 1 would get only 10"):
        round_prompts(small, 1)


def test_pool_reuse_wraps_around(pool):
    d = DataConfig(train_prompts=pool, prompts_per_round=3, reuse_prompts=True)
    assert ids(round_prompts(d, 4)) == ids(round_prompts(d, 1))
    wide = DataConfig(train_prompts=pool, prompts_per_round=4, reuse_prompts=True)
    assert ids(round_prompts(wide, 3)) == ["p8", "p0", "p1", "p2"]   # indices 8..11 mod 9


# ---------------------------------------------------------------- one source per round


def test_list_round_n_reads_source_n(sources):
    d = DataConfig(train_prompts=sources, prompts_per_round=3)
    for n in (1, 2, 3):
        assert ids(round_prompts(d, n)) == [f"s{n}-{i}" for i in range(3)]


def test_list_round_past_the_end_is_refused(sources):
    d = DataConfig(train_prompts=sources, prompts_per_round=3)
    with pytest.raises(DataError, match=r"list of 3 per-round sources covers rounds 1-3; round 4 has no source.*"
                                        r"reuse_prompts: true"):
        round_prompts(d, 4)


def test_list_reuse_cycles(sources):
    d = DataConfig(train_prompts=sources, prompts_per_round=3, reuse_prompts=True)
    assert ids(round_prompts(d, 4)) == ids(round_prompts(d, 1))
    assert ids(round_prompts(d, 5)) == ids(round_prompts(d, 2))


def test_list_source_shorter_than_prompts_per_round_is_used_whole(sources):
    d = DataConfig(train_prompts=sources, prompts_per_round=100)
    assert ids(round_prompts(d, 2)) == [f"s2-{i}" for i in range(4)]


def test_empty_source_is_refused(tmp_path):
    d = DataConfig(train_prompts=(write_prompts(tmp_path / "a.jsonl", ["a"]), str(tmp_path / "none.jsonl")))
    (tmp_path / "none.jsonl").write_text(json.dumps({"prompt_id": "x", "prompt": "y"}) + "\n")
    assert ids(round_prompts(d, 1)) == ["a"]
    with pytest.raises(DataError, match="has no prompts"):
        data.round_span(d, 2, 0)


# ---------------------------------------------------------------- the up-front check


def test_check_rounds_loads_each_source_once(pool, monkeypatch):
    calls = []
    real = data.load_prompts
    monkeypatch.setattr(data, "load_prompts", lambda src, **kw: calls.append(src) or real(src, **kw))
    cfg = load_config("configs/arena_sppo.yaml", [f"data.train_prompts={pool}", "data.prompts_per_round=3"])
    check_rounds(cfg, [1, 2, 3])
    assert calls == [pool]
    with pytest.raises(DataError, match="covers rounds 1-3; round 4"):
        check_rounds(cfg, [2, 3, 4, 5])


def test_check_rounds_list_and_reuse(sources):
    listed = "[" + ",".join(sources) + "]"
    cfg = load_config("configs/arena_sppo.yaml", [f"data.train_prompts={listed}", "data.prompts_per_round=3"])
    check_rounds(cfg, [1, 2, 3])
    with pytest.raises(DataError, match="covers rounds 1-3; round 4"):
        check_rounds(cfg, [3, 4])
    reuse = load_config("configs/arena_sppo.yaml", [f"data.train_prompts={listed}", "data.reuse_prompts=true"])
    check_rounds(reuse, [1, 2, 3, 4, 5, 6])


@pytest.mark.parametrize("config", sorted(glob("configs/arena_*.yaml")))
def test_arena_configs_cover_three_rounds(config):
    """The builtin pool (288 prompts, 96 a round) runs rounds 1-3 and refuses a 4th; counted without
    building the assets. A config that wraps the pool on purpose (arena_nash: ten rounds) must cover ten."""
    cfg = load_config(config)
    if cfg.data.reuse_prompts:
        check_rounds(cfg, list(range(1, 11)))
        return
    check_rounds(cfg, [1, 2, 3])
    with pytest.raises(DataError, match="pool of 288 prompts at data.prompts_per_round=96 covers rounds 1-3"):
        check_rounds(cfg, [4])


def test_driver_refuses_before_generating(pool, tmp_path, capsys):
    from pipelines.round import main
    run_dir = tmp_path / "run"
    args = ["--round", "1-4", "--config", "configs/arena_sppo.yaml", f"data.train_prompts={pool}",
            "data.prompts_per_round=3", f"run_dir={run_dir}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: data.train_prompts: a pool of 9 prompts" in err and "round 4 has no fresh prompts" in err
    assert not round_paths(run_dir, 1).stage("generate").exists()
    assert not run_dir.exists()   # nothing ran: the driver creates run_dir only after the checks
    check_rounds(load_config("configs/arena_sppo.yaml", args[4:] + ["data.reuse_prompts=true"]), [1, 2, 3, 4])


@pytest.mark.slow
def test_four_rounds_over_a_three_slice_pool_run_with_reuse(pool, tmp_path, ray_local):
    """The same four-round request runs once data.reuse_prompts allows it: round 4 wraps to round 1's slice."""
    import datasets

    from pipelines.round import main
    run_dir = tmp_path / "run"
    tiny = ["generation.k=2", "generation.max_new_tokens=8", "data.eval_limit=8", "eval.samples_per_prompt=1",
            "train.epochs=1", "wandb.mode=disabled"]
    assert main(["--round", "1-4", "--config", "configs/arena_sppo.yaml", f"data.train_prompts={pool}",
                 "data.prompts_per_round=3", "data.reuse_prompts=true", f"run_dir={run_dir}", *tiny]) == 0
    seen = [sorted(set(datasets.load_from_disk(str(round_paths(run_dir, n).stage("generate")))["prompt_id"]))
            for n in (1, 2, 3, 4)]
    assert seen[0] == ["p0", "p1", "p2"] and seen[3] == seen[0] and len({tuple(s) for s in seen[:3]}) == 3


# ---------------------------------------------------------------- which rows are prompts (EGPO's loader)


def _chat(text: str, turns: int = 1) -> list[dict]:
    return [{"role": "user" if k % 2 == 0 else "assistant", "content": text} for k in range(turns)]


@pytest.fixture
def chats(tmp_path):
    """A prompt-collection-like source: chat-message lists in context_messages, no prompt column."""
    rows = [_chat("tell me about owls"),            # 0 kept
            _chat("hi there", turns=3),             # 1 multi-turn: dropped
            _chat("x" * 300),                       # 2 300 characters: dropped (shorter than 300 are kept)
            _chat("y" * 299),                       # 3 kept
            _chat("name a river")]                  # 4 kept
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"context_messages": r}) + "\n" for r in rows))
    return str(path)


def test_single_turn_short_prompts_the_first_n(chats):
    """EGPO's lms/utils.py transform_into_chat: one-message chats shorter than 300 characters, the first 30k
    (here 2). Each key takes effect on its own, ids stay the rows' own indices."""
    d = DataConfig(train_prompts=chats, eval_prompts=chats, prompt_column="context_messages", single_turn=True,
                   max_prompt_chars=300, max_prompts=2, prompts_per_round=2, eval_limit=1)
    assert [(r.prompt_id, r.prompt) for r in round_prompts(d, 1)] == [("0", "tell me about owls"), ("3", "y" * 299)]
    assert ids(data.source_prompts(chats, dataclasses.replace(d, max_prompts=0))) == ["0", "3", "4"]
    assert ids(data.source_prompts(chats, dataclasses.replace(d, max_prompt_chars=0))) == ["0", "2", "3", "4"]
    with pytest.raises(DataError, match="a pool of 2 prompts at data.prompts_per_round=2 covers round 1; round 2"):
        round_prompts(d, 2)                               # max_prompts makes the pool
    assert ids(data.eval_rows(d)) == ["0"]                # the eval prompts are filtered alike, then eval_limit
    cfg = load_config("configs/arena_sppo.yaml", [f"data.train_prompts={chats}", "data.prompt_column=context_messages",
                                                  "data.single_turn=true", "data.prompts_per_round=3"])
    check_rounds(cfg, [1])                                # the up-front count sees the filtered pool
    with pytest.raises(DataError, match="a pool of 4 prompts"):
        check_rounds(cfg, [2])


def test_chat_columns_need_single_turn_and_single_turn_needs_chats(chats, pool):
    d = DataConfig(train_prompts=chats, prompt_column="context_messages", prompts_per_round=1)
    with pytest.raises(DataError, match=r"is a list, not text \(chat messages: set data.single_turn: true\)"):
        round_prompts(d, 1)
    with pytest.raises(DataError, match="holds str, not chat-message lists; remove data.single_turn"):
        round_prompts(DataConfig(train_prompts=pool, single_turn=True, prompts_per_round=1), 1)
    with pytest.raises(DataError, match="none of its 9 prompts is shorter than data.max_prompt_chars=5"):
        round_prompts(DataConfig(train_prompts=pool, max_prompt_chars=5, prompts_per_round=1), 1)
    arena = load_config("configs/arena_sppo.yaml", ["data.single_turn=true"])
    with pytest.raises(DataError, match="remove data.single_turn"):
        check_rounds(arena, [1])                          # builtin prompts are counted, not assumed, once filtered
