"""A run dir is safe to share and to move: a finished round is never made again by other settings without
--force, one invocation writes a run dir at a time, its artifacts do not depend on where it lives, reading an
artifact with `datasets` does not invalidate it, and every "regenerate it" advice works when followed."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fixtures_round import TINY, copy_run, finished_round, tree_digest
from pipelines.round import main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/arena_sppo.yaml"


def _round(run: Path, n: str, *extra: str) -> list[str]:
    return ["--round", n, "--config", CONFIG, f"run_dir={run}", *TINY, *extra]


def _errors(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln for ln in err.splitlines() if ln.startswith("error: ")]


def _hashes(run: Path) -> dict[str, tuple[str, str]]:
    """stage dir -> (key, output_hash) of every finished artifact of the run."""
    return {str(m.parent.relative_to(run)): (json.loads(m.read_text())["key"], json.loads(m.read_text())["output_hash"])
            for m in sorted(run.glob("round_*/*/manifest.json"))}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    return finished_round(tmp_path_factory.mktemp("finished"))


@pytest.mark.slow
def test_other_settings_never_overwrite_a_finished_round(capsys, tmp_path, done, ray_local):
    run = copy_run(done.run_dir, tmp_path / "run")
    before = tree_digest(run)
    assert main(_round(run, "1", "train.lr=1e-3")) == 2
    [line] = _errors(capsys.readouterr().err)
    lr = yaml.safe_load((ROOT / CONFIG).read_text())["train"]["lr"]
    assert "finished round 1 again" in line and "round 1 train" in line and f"train.lr: {lr} → 0.001" in line, line
    assert "--force" in line and "A run dir holds one history" in line
    assert tree_digest(run) == before                          # nothing ran, nothing moved
    assert main(_round(run, "1")) == 0                        # the same settings: a resume, every stage skipped
    assert "skipped (manifest matches)" in capsys.readouterr().err
    assert tree_digest(run, skip=("logs", "config.yaml", "dashboard")) == \
        {k: v for k, v in before.items() if not k.startswith(("logs", "config.yaml", "dashboard"))}
    old_policy = tree_digest(run / "round_1/policy")
    assert main(_round(run, "1", "train.lr=1e-3", "--force")) == 0
    [kept] = run.glob("round_1/policy.replaced-*")
    assert tree_digest(kept) == old_policy                     # the old one, byte for byte, beside the new one
    assert tree_digest(run / "round_1/policy") != old_policy


@pytest.mark.slow
def test_two_concurrent_invocations_do_each_stage_once(tmp_path, done):
    """A second invocation on a run dir in use stops at once, naming the first, which finishes alone."""
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "pipelines.round", *_round(run, "1")], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lock = run / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and str(first.pid) in lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    t0 = time.monotonic()
    second = subprocess.run([sys.executable, "-m", "pipelines.round", *_round(run, "1")], cwd=ROOT, text=True,
                            capture_output=True, timeout=300)
    assert second.returncode == 2 and time.monotonic() - t0 < 60, second.stderr
    [line] = _errors(second.stderr)
    assert f"{run} is in use by another invocation (pid {first.pid}" in line and "wait for it to end" in line
    out, _ = first.communicate(timeout=900)
    assert first.returncode == 0, out
    for stage in ("init", "evaluate", "generate", "judge", "preferences", "train"):
        assert len(re.findall(rf"round \d {stage:<11} done in", out)) == (2 if stage == "evaluate" else 1), out
    assert "skipped" not in out


@pytest.mark.slow
def test_identical_runs_in_two_dirs_give_identical_hashes_and_a_moved_run_resumes(capsys, tmp_path, done, ray_local):
    other = tmp_path / "elsewhere" / "another-name"
    assert main(_round(other, "1", "wandb.mode=offline")) == 0
    a, b = _hashes(done.run_dir), _hashes(other)
    assert set(a) == set(b) == {"round_0/policy", "round_0/eval", "round_1/generations", "round_1/judgments",
                                "round_1/preferences", "round_1/policy", "round_1/eval"}
    assert a == b                                              # every key and every output_hash
    card = (other / "round_1/policy/README.md").read_text()
    assert str(tmp_path) not in card and "| parent checkpoint | round_0/policy |" in card
    assert "## Evaluation" in card and "win rate vs round 0" in card
    moved = tmp_path / "moved"
    other.rename(moved)                                        # a run dir moved elsewhere resumes where it was
    capsys.readouterr()
    assert main(_round(moved, "1", "wandb.mode=offline")) == 0
    err = capsys.readouterr().err
    assert err.count("skipped (manifest matches)") == 7 and "done in" not in err, err


@pytest.mark.slow
def test_reading_an_artifact_with_datasets_breaks_nothing(tmp_path, done, ray_local):
    """TRL (or a user) opening round 1's preferences and mapping them writes cache-*.arrow beside them; the
    next round still reads the artifact as finished and unchanged."""
    import datasets
    run = copy_run(done.run_dir, tmp_path / "run")
    prefs = run / "round_1/preferences"
    ds = datasets.load_from_disk(str(prefs))
    ds.map(lambda row: {"n": len(row["prompt"])})
    assert list(prefs.glob("cache-*.arrow")), "datasets wrote no cache file: the test would prove nothing"
    assert main(_round(run, "2")) == 0


@pytest.mark.slow
def test_every_regenerate_advice_works_when_followed(capsys, tmp_path, done, ray_local):
    """A damaged artifact of an earlier round: the advice names the command that makes it again; following it
    literally (delete, then that command) repairs the run, and the refused command then runs."""
    run = copy_run(done.run_dir, tmp_path / "run")
    f = next((run / "round_1/preferences").glob("data-*.arrow"))
    f.write_bytes(f.read_bytes()[:-8])
    assert main(_round(run, "2")) == 1
    [line] = _errors(capsys.readouterr().err)
    m = re.search(r"Regenerate it: delete (\S+) and run `(python -m pipelines\.round [^`]+)`", line)
    assert m and Path(m[1]) == run / "round_1/preferences", line
    subprocess.run(["rm", "-rf", m[1]], check=True)
    command = shlex.split(m[2])
    assert command[0] == "python"                              # this environment's python runs it
    done_again = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done_again.returncode == 0, done_again.stderr[-3000:]
    assert main(_round(run, "2")) == 0
