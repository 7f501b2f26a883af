"""What a round shows on the console: one line per stage, the actors' output in per-stage logs,
everything under -v, and a failing stage's error with the end of its log.

The driver's live progress bar is drawn only when stderr is a terminal; these runs capture the
output (not a terminal), so what they count is the plain lines.
"""
import re
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
STAGES = {"round_0": ("init", "evaluate"), "round_1": ("generate", "judge", "preferences", "train", "evaluate")}


def round_1(run_dir, *extra: str, imports: set[str] | None = None) -> subprocess.CompletedProcess:
    """With `imports`, the driver runs under -X importtime; the modules it imported go there, and their
    lines are taken out of its stderr."""
    py = [sys.executable, "-X", "importtime"] if imports is not None else [sys.executable]
    cmd = [*py, "-m", "pipelines.round", "--round", "1", "--config", "configs/arena_sppo.yaml",
           f"run_dir={run_dir}", "wandb.mode=disabled", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if imports is not None:
        lines = p.stderr.splitlines(keepends=True)
        imports.update(ln.rsplit("|", 1)[1].strip() for ln in lines if ln.startswith("import time:"))
        p.stderr = "".join(ln for ln in lines if not ln.startswith("import time:"))
    return p


def terminal_lines(p: subprocess.CompletedProcess) -> list[str]:
    """What the terminal shows, a bar redraw ("\\r") counting as a line of its own."""
    return [ln for ln in re.split(r"[\r\n]", p.stdout + p.stderr) if ln.strip()]


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    run_dir, imported = tmp_path_factory.mktemp("console") / "run", set()
    return run_dir, round_1(run_dir, imports=imported), imported


@pytest.fixture
def quiet(quiet_run):
    return quiet_run[:2]


def test_the_driver_imports_no_ml_library(quiet_run):
    """The driver only dispatches: torch (about a second to import here, once per round when a helper of
    the driver pulled it in), transformers and datasets are the stage actors' imports."""
    _, p, imported = quiet_run
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ray" in imported and "pipelines.graph" in imported   # the lines were read (the driver is __main__)
    assert not imported & {"torch", "transformers", "datasets", "vllm"}, sorted(imported & {"torch", "transformers"})


def test_a_round_prints_a_line_per_stage(quiet):
    run_dir, p = quiet
    lines = terminal_lines(p)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(lines) <= 12, "\n".join(lines)
    for stage in STAGES["round_1"]:
        assert any(f"round 1 {stage}" in ln and "done in" in ln for ln in lines), stage
    assert any("round 1 complete" in ln for ln in lines)
    assert not any("StageActor" in ln or "Started a local Ray instance" in ln for ln in lines)


def test_each_stage_writes_its_own_log(quiet):
    run_dir, _ = quiet
    for rnd, stages in STAGES.items():
        for stage in stages:
            text = (run_dir / "logs" / rnd / f"{stage}.log").read_text()
            assert text.startswith("==== ") and "done in" in text, (rnd, stage, text)
    logs = run_dir / "logs" / "round_1"
    assert "train epoch 1/" in (logs / "train.log").read_text()     # the trainer's per-epoch lines
    assert "generate: 100%" in (logs / "generate.log").read_text()  # the generation's bar, as lines


def test_verbose_streams_the_actors_output(quiet, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(quiet[0], run_dir)
    p = round_1(run_dir, "-v", "--force", "train.epochs=1")   # retrains (and re-evaluates) only
    lines = terminal_lines(p)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(lines) > len(terminal_lines(quiet[1])), "\n".join(lines)
    assert any("StageActor" in ln and "train" in ln for ln in lines), "\n".join(lines)


def test_a_failing_stage_shows_its_error_and_log_tail(quiet, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(quiet[0], run_dir)
    p = round_1(run_dir, "--force", "train.lr=1e30", "train.max_grad_norm=1e30")
    log = run_dir / "logs" / "round_1" / "train.log"
    assert p.returncode == 1, p.stdout + p.stderr
    assert "error: round 1 stage train failed: TrainingError" in p.stderr
    assert f"lines of {log}" in p.stderr
    tail = p.stderr.split(f"lines of {log} ---\n", 1)[1].splitlines()
    assert len(tail) <= 20 and tail[-1].startswith("==== train failed after")   # the log's last lines
    assert any("TrainingError: sppo loss is" in ln for ln in tail)          # ... the traceback's end
