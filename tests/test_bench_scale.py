"""scripts/bench_scale.py: its stand-ins give what they promise, its goals are judged from the rows as the
docs say, and a smoke run at tiny size prints every stage with measured values (slow: it starts Ray)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _script("bench_scale")
si = bench.si


def test_synthesized_lengths_have_the_asked_mean_and_a_tail_to_the_cap():
    lengths = si.response_lengths(np.random.default_rng(0), 200_000, 500.0, 2048)
    assert abs(lengths.mean() - 500) < 10          # the log-normal's mean, barely moved by the cap
    assert lengths.min() >= 1 and lengths.max() == 2048
    assert 0.001 < (lengths == 2048).mean() < 0.01  # a tail that reaches the cap, as AlpacaEval answers do


def test_the_synthesized_backend_answers_k_seeded_responses_of_arena_words():
    from selfplay.sampling import Request, SamplingSpec
    backend = si.SynthBackend("unused")
    reqs = [Request("Tell me about the ocean.", seed=s) for s in (1, 2)]
    spec = SamplingSpec(n=5, max_new_tokens=60)
    out = backend.generate(reqs, spec)
    assert [len(c) for c in out] == [5, 5]
    for cs in out:
        for c in cs:
            words = c.text.split()
            assert len(words) == c.n_tokens <= 60 and set(words) <= set(si.WORDS)
            assert c.finished == (c.n_tokens < 60) or c.n_tokens == 60
    assert out == backend.generate(reqs, spec)                      # seeded by the request
    assert [c.text for c in out[0]] != [c.text for c in out[1]]     # another seed, other answers


def test_the_backend_stand_in_reaches_the_real_sampling_path():
    """Registered in the registry's own dicts, the real sample_checkpoint builds it by name."""
    from dataclasses import replace

    from selfplay.backends import BACKENDS
    from selfplay.config import Config
    from selfplay.generation import Request, SamplingSpec, sample_checkpoint
    cfg = Config()
    cfg = replace(cfg, generation=replace(cfg.generation, backend=si.BACKEND_NAME))
    with si.standins():
        completions, _ = sample_checkpoint("unused", cfg, [Request("Describe the forest.", 7)], SamplingSpec(n=3))
    assert [len(c) for c in completions] == [3]
    assert completions[0][0].text.split()[0] in si.WORDS
    assert si.BACKEND_NAME not in BACKENDS   # taken out again: other tests see the registry as it is


def test_the_cheap_judge_is_a_proper_preference_and_stands_in_only_inside_the_block():
    from judges.oracle import OracleJudge
    j = OracleJudge()
    a, b = ["wave tide coral", "moss fern"], ["pine owl", "wave wave"]
    real = j.compare(["Tell me about the ocean."] * 2, a, b)
    with si.standins():
        p, q = j.compare(["x"] * 2, a, b), j.compare(["x"] * 2, b, a)
        np.testing.assert_allclose(p + q, 1.0)
        assert not np.allclose(p, real)
    np.testing.assert_allclose(j.compare(["Tell me about the ocean."] * 2, a, b), real)   # restored


def _row(size, stage, cpu, grew=0.0, data=0.0, driver=100.0):
    return bench.Row(size, stage, cpu + 2, cpu + 1, cpu, 300.0 + grew, grew, 0.0, 0.0, data, driver)


def test_goals_pass_linear_stages_and_miss_a_quadratic_one_a_big_driver_and_a_second_copy():
    """Copies are the memory grown per byte of data between the sizes: what does not grow with it (the 200 MB
    the train stage holds at both sizes) is left out."""
    rows = [_row(10, "1.judge", 2.0, grew=50, data=10), _row(100, "1.judge", 21.0, grew=170, data=110),
            _row(10, "1.train", 1.0, grew=200, data=10), _row(100, "1.train", 100.0, grew=360, data=110, driver=2500)]
    checks = {name: ok for name, ok, _ in bench.goals(rows, 10, 100)}
    assert checks == {"time 1.judge": True, "time 1.train": False, "driver peak": False,
                      "copies 1.judge": True, "copies 1.train": False}
    r = bench.ratios(rows, 10, 100)
    assert r["1.judge"]["cpu"] == pytest.approx(10.5) and r["1.judge"]["copies"] == pytest.approx(1.2)
    assert r["1.train"]["copies"] == pytest.approx(1.6)


def test_copies_are_not_judged_where_the_data_barely_grows():
    rows = [_row(10, "1.judge", 1.0, grew=10, data=1), _row(100, "1.judge", 10.0, grew=400, data=bench.MIN_DATA_MB)]
    assert [name for name, _, _ in bench.goals(rows, 10, 100)] == ["time 1.judge", "driver peak"]


STAGES = {"0.init", "0.evaluate", "1.generate", "1.judge", "1.preferences", "1.train", "1.evaluate",
          "driver.preflight", "driver.session"}


@pytest.mark.slow
def test_a_smoke_run_measures_every_stage_at_both_sizes(tmp_path):
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_scale.py"), "--sizes", "40,80",
                        "--eval-prompts", "12", "--mean-tokens", "40", "--max-tokens", "120", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = {(r["size"], r["stage"]): r for r in data["rows"]}
    assert set(rows) == {(n, s) for n in (40, 80) for s in STAGES}
    for (n, stage), r in rows.items():
        assert r["wall"] >= r["work"] > 0 and r["cpu"] > 0 and r["driver"] > 50, (n, stage, r)
        if not stage.startswith("driver."):
            assert r["peak"] > 50 and (r["data"] > 0) == (stage != "0.init"), (n, stage, r)   # init writes no dataset
    for stage in ("1.generate", "1.judge"):   # fanned out over two actors, each measured
        assert rows[(80, stage)]["shard"] > 50
    # twice the prompts: twice the responses on disk (the eval set is the same size at both)
    gen = rows[(80, "1.generate")]["data"] / rows[(40, "1.generate")]["data"]
    assert 1.7 < gen < 2.3, gen
    assert rows[(80, "1.evaluate")]["data"] == pytest.approx(rows[(40, "1.evaluate")]["data"], rel=0.3)
    goals = {g["goal"] for g in data["goals"]}
    assert {f"time {s}" for s in STAGES} <= goals and "driver peak" in goals
    assert "| 1.judge |" in p.stdout and "(N=80 over N=40)" in p.stdout
