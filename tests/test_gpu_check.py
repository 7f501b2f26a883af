"""`make gpu-check` (scripts/gpu_check.py): its CPU version runs a whole round and prints every stage's
measured peak next to the plan's estimate; without a GPU the real one refuses in one line, before any work;
and the table is built from the stage manifests, failing by name when one is missing."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402

STAGES = {"init", "eval r0", "generate", "judge", "preferences", "train", "evaluate"}
HEAD = ["stage", "device", "plan GiB", "measured GiB", "ratio", "seconds", "host RSS GiB"]


def _table(output: str) -> dict[str, dict[str, str]]:
    """The rows of the printed table, by stage, each a dict keyed by the header's columns."""
    lines = output.splitlines()
    starts = [i for i, ln in enumerate(lines) if [c.strip() for c in ln.split("|")] == HEAD]
    assert len(starts) == 1, f"one table header expected:\n{output[-3000:]}"
    rows = {}
    for ln in lines[starts[0] + 1:]:
        if "|" not in ln:
            break
        cells = [c.strip() for c in ln.split("|")]
        assert len(cells) == len(HEAD), ln
        rows[cells[0]] = dict(zip(HEAD, cells))
    return rows


def _number(cell: str) -> float:
    value = float(cell)   # "unknown", "—" or an empty cell fails here
    assert math.isfinite(value), cell
    return value


@pytest.mark.slow
def test_smoke_round_prints_every_stage_measured_against_the_plan(tmp_path):
    p = subprocess.run([sys.executable, "scripts/gpu_check.py", "--smoke", "--work", str(tmp_path / "w")],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    rows = _table(p.stdout)
    assert set(rows) == STAGES, sorted(rows)
    for stage, r in rows.items():
        assert r["device"] == "cpu", r
        assert _number(r["plan GiB"]) >= 0, r
        measured, rss = _number(r["measured GiB"]), _number(r["host RSS GiB"])
        assert measured > 0 and measured == rss, r   # on the CPU the measured peak is the RSS
        assert 0.05 < measured < 8, r                 # an interpreter with torch, and a toy model
        assert _number(r["seconds"]) > 0, r
    # the plan sizes the models: the policy's weights for the generation and training stages, PairRM's for judging
    assert _number(rows["generate"]["plan GiB"]) > 0 and _number(rows["train"]["plan GiB"]) > 0
    assert _number(rows["judge"]["plan GiB"]) > _number(rows["generate"]["plan GiB"])
    assert _number(rows["init"]["plan GiB"]) == 0 and _number(rows["preferences"]["plan GiB"]) == 0
    for stage in ("generate", "train"):
        r = rows[stage]
        assert _number(r["ratio"]) == pytest.approx(_number(r["measured GiB"]) / _number(r["plan GiB"]), rel=0.01)
    assert "round 1 (with round 0) took" in p.stdout


def test_without_a_gpu_the_real_check_refuses_before_any_work(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the refusal is for machines without one")
    p = subprocess.run([sys.executable, "scripts/gpu_check.py", "--work", str(tmp_path / "w")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "no CUDA GPU" in p.stderr and "SMOKE=1" in p.stderr, p.stderr
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------- the table from manifests and a plan

def _plan(stages: list[tuple[str, str, float | None]]):
    from types import SimpleNamespace

    from pipelines.plan import Memory, StagePlan
    from selfplay.config import ActorResources
    return SimpleNamespace(stages=[StagePlan(name, "trainer", 1, ActorResources(), device, memory=Memory(b))
                                   for name, device, b in stages])


def _write(where: Path, **extra) -> None:
    from selfplay.artifacts import Manifest
    where.mkdir(parents=True)
    Manifest(stage=where.name, key="k", config_hash="c", seeds={}, inputs={}, seconds=3.5, extra=extra).write(where)


GIB = 2**30
ROUND = [("init", "cpu", 0.0), ("eval r0", "cuda", 1.0 * GIB), ("generate", "cuda", 1.0 * GIB),
         ("judge", "cuda", 0.8 * GIB), ("preferences", "cuda", 0.0), ("train", "cuda", 6.0 * GIB),
         ("evaluate", "cuda", 1.0 * GIB), ("eval judge", "cuda", 1.5 * GIB)]


def test_rows_come_from_the_manifests_the_eval_judge_folded_into_evaluate(tmp_path):
    for stage, where in gpu_check.stage_dirs(tmp_path).items():
        _write(where, peak_gpu_mb=2048.0, peak_rss_mb=512.0)
    rows = {r.stage: r for r in gpu_check.measured_rows(_plan(ROUND), tmp_path)}
    assert list(rows) == ["init", "eval r0", "generate", "judge", "preferences", "train", "evaluate"]
    assert rows["init"].measured_gib == 0.5                 # planned on the CPU: its RSS
    assert rows["train"].measured_gib == 2.0 and rows["train"].rss_gib == 0.5 and rows["train"].seconds == 3.5
    assert rows["train"].ratio == pytest.approx(2 / 6)
    assert rows["evaluate"].plan_gib == 1.5                 # the larger of evaluate and its eval judge
    assert rows["preferences"].ratio is None


def test_a_missing_manifest_or_peak_is_named(tmp_path):
    dirs = gpu_check.stage_dirs(tmp_path)
    for stage, where in dirs.items():
        if stage != "judge":
            _write(where, peak_gpu_mb=100.0, peak_rss_mb=100.0)
    with pytest.raises(gpu_check.CheckError, match="stage judge left no readable manifest"):
        gpu_check.measured_rows(_plan(ROUND), tmp_path)
    _write(dirs["judge"], peak_rss_mb=100.0)   # a GPU stage without its GPU peak
    with pytest.raises(gpu_check.CheckError, match="stage judge's manifest .* has no peak_gpu_mb"):
        gpu_check.measured_rows(_plan(ROUND), tmp_path)


def test_verdicts_flag_more_than_20_percent_either_way():
    row = lambda plan, measured: gpu_check.Row("train", "cuda", plan, measured, 1.0, 1.0)  # noqa: E731
    assert gpu_check.verdict(row(10.0, 11.9)) == "" and gpu_check.verdict(row(10.0, 8.1)) == ""
    assert "1.30× the plan's 10 GiB (+30%)" in gpu_check.verdict(row(10.0, 13.0))
    assert "(-50%)" in gpu_check.verdict(row(10.0, 5.0))
    assert "counts nothing" in gpu_check.verdict(row(0.0, 0.2)) and gpu_check.verdict(row(0.0, 0.0)) == ""
    assert "cannot size" in gpu_check.verdict(row(None, 1.0))
    text = gpu_check.report([row(10.0, 13.0), row(10.0, 10.5)], wall=500, mode="gpu")
    assert text.count("✗ train") == 1 and "✗ round 1 (with round 0) took 500s" in text


def test_bench_generation_reports_a_missing_vllm_in_one_line_and_keeps_the_rest(monkeypatch, capsys):
    """`make bench` on a plain `make setup`: the vLLM part is skipped with its reason, the HF part still runs."""
    import importlib.util

    import bench_generation
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    assert bench_generation.runnable(["hf", "vllm"]) == ["hf"]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vllm: skipped: the vllm package is not installed"), lines
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())   # installed: nothing skipped
    assert bench_generation.runnable(["hf", "vllm"]) == ["hf", "vllm"] and capsys.readouterr().out == ""
