"""Kill anywhere, resume identically; no process of a round outlives it; no silent hang.

The kill matrix runs the driver as a real subprocess on the smallest round and signals it while a
chosen stage runs (the moment a new attempt's header appears in RUN_DIR/logs/round_<n>/<stage>.log).
To stay within minutes on two cores, kills are chained in one run directory: each re-run resumes the
previous kill and is itself killed in a later stage, and the last one finishes. After every step the
finished stages' output hashes must equal an uninterrupted run's, the killed session's processes
(found by its Ray temp dir, recorded in RUN_DIR/.ray_sessions/) must be gone 10 s after the signal,
and the last run must leave no temp dir. The uninterrupted reference runs in the same directory first
(a model card names its parent checkpoint by path).
"""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.reaper import session_processes

pytestmark = pytest.mark.slow   # real drivers, real Ray sessions and signals: minutes on two cores

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["data.prompts_per_round=8", "data.eval_limit=8", "generation.k=2", "train.epochs=1", "wandb.mode=disabled",
         "generation.max_new_tokens=8", "eval.samples_per_prompt=1"]
STAGE_DIRS = {"round_0/init": "round_0/policy", "round_0/evaluate": "round_0/eval",
              "round_1/generate": "round_1/generations", "round_1/judge": "round_1/judgments",
              "round_1/preferences": "round_1/preferences", "round_1/train": "round_1/policy",
              "round_1/evaluate": "round_1/eval"}


# EGPO's online update samples, judges and steps inside the train stage: three extragradient iterations
EGPO = ["--config", "configs/arena_egpo.yaml", "generation.k=3", "train.steps_per_round=3", "train.batch_size=4"]


@dataclass(frozen=True)
class Kill:
    stage: str        # "round_1/train": signal while this stage runs
    how: str          # group_kill | driver_kill | driver_and_watchdog_kill | sigint | sigterm
    code: int         # the driver's exit status
    after: str = "(pid "   # signal once the stage's log gains a line with this: by default a new attempt's header


def _command(run_dir: Path, *extra: str) -> list[str]:
    """The small round; an --config in `extra` replaces the SPPO arena's (overrides follow the last --config)."""
    config = extra[extra.index("--config") + 1] if "--config" in extra else "configs/arena_sppo.yaml"
    rest = [x for i, x in enumerate(extra) if x != "--config" and (i == 0 or extra[i - 1] != "--config")]
    return [sys.executable, "-m", "pipelines.round", "--round", "1", "--config", config, f"run_dir={run_dir}", *SMALL,
            *rest]


def _hashes(run_dir: Path) -> dict[str, str]:
    out = {}
    for stage, d in STAGE_DIRS.items():
        f = run_dir / d / "manifest.json"
        if f.exists():
            out[stage] = json.loads(f.read_text())["output_hash"]
    return out


def _stale(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


def _count(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text) if log.exists() else 0


def _attempts(log: Path) -> int:
    return _count(log, "(pid ")


def _run_to_the_end(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(run_dir, *extra), cwd=ROOT, capture_output=True, text=True, timeout=600)


def _signal(proc: subprocess.Popen, how: str, session: dict) -> None:
    if how == "group_kill":
        os.killpg(proc.pid, signal.SIGKILL)
    elif how == "driver_kill":
        os.kill(proc.pid, signal.SIGKILL)
    elif how == "driver_and_watchdog_kill":   # both gone: the next run must end the leftovers itself
        os.kill(session["reaper_pid"], signal.SIGKILL)
        os.kill(proc.pid, signal.SIGKILL)
    elif how == "sigint":                     # a terminal's Ctrl-C: the whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGTERM)


# In a warm actor (pipelines/actors.py) these stages of the small round finish within 0.2 s of their log
# header, too close to the test's 50 ms polling to land a signal inside them every time; in a new actor
# their imports come first. The other stages are killed in the warm actor.
QUICK_STAGES = ("round_0/evaluate", "round_1/judge", "round_1/preferences")


def _kill_during(run_dir: Path, kill: Kill, extra: tuple[str, ...] = ()) -> tuple[dict, str, float]:
    """Start the driver, signal it once `kill.stage`'s log has gained `kill.after`, wait for it to end; (its
    Ray session's record, its stderr, the time of the signal)."""
    log = run_dir / "logs" / f"{kill.stage}.log"
    before = _count(log, kill.after)
    env = {**os.environ, "SELFPLAY_WARM_ACTORS": "0"} if kill.stage in QUICK_STAGES else None
    proc = subprocess.Popen(_command(run_dir, *extra), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while _count(log, kill.after) <= before:
            assert proc.poll() is None, f"{kill}: the driver ended before the stage started: {proc.stderr.read()}"
            assert time.monotonic() < deadline, f"{kill}: the stage did not start"
            time.sleep(0.05)
        session = json.loads((run_dir / ".ray_sessions" / f"{proc.pid}.json").read_text())
        t_signal = time.monotonic()
        _signal(proc, kill.how, session)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == kill.code, f"{kill}: exit status {proc.returncode}\n{err}"
    return session, err, t_signal


def _assert_gone_10s_after(session: dict, t_signal: float, what) -> None:
    """Polled: a session's processes cannot come back once gone, so the first empty look settles it."""
    while (left := session_processes(session["temp_dir"])) and time.monotonic() < t_signal + 10:
        time.sleep(0.25)
    assert not left, f"{what}: processes of the killed session alive 10 s after the signal: {left}"


def _assert_one_line(err: str, kill: Kill) -> None:
    stage = kill.stage.replace("_", " ", 1).replace("/", " stage ")   # round_1/train -> round 1 stage train
    ours = [ln for ln in err.splitlines() if "interrupted" in ln]
    assert ours == [f"interrupted in {stage}; finished stages are kept — re-run the same command to resume"], err
    assert "Traceback" not in err and "logging.cc" not in err and "*** " not in err, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(the run dir every scenario uses, the uninterrupted run's output hashes there)."""
    run_dir = tmp_path_factory.mktemp("kills") / "run"
    done = _run_to_the_end(run_dir)
    assert done.returncode == 0, done.stderr
    hashes = _hashes(run_dir)
    assert set(hashes) == set(STAGE_DIRS)
    shutil.rmtree(run_dir)
    return run_dir, hashes


def _chain(reference, kills: list[Kill]) -> None:
    run_dir, expected = reference
    shutil.rmtree(run_dir, ignore_errors=True)
    for kill in kills:
        session, err, t_signal = _kill_during(run_dir, kill)
        killed = STAGE_DIRS[kill.stage]
        assert not (run_dir / killed / "manifest.json").exists(), f"{kill}: the stage finished before the signal"
        finished = _hashes(run_dir)
        assert finished == {k: expected[k] for k in finished}, f"{kill}: finished stages differ from the reference"
        if kill.how in ("sigint", "sigterm"):
            _assert_one_line(err, kill)
            assert not _stale(run_dir), f"{kill}: an interrupted stage's temp dir was left: {_stale(run_dir)}"
        if kill.how != "driver_and_watchdog_kill":   # that one is the next run's to clean: checked below
            _assert_gone_10s_after(session, t_signal, kill)
        else:
            assert session_processes(session["temp_dir"]), "nothing was left to clean: the scenario tests nothing"
    done = _run_to_the_end(run_dir)
    assert done.returncode == 0, done.stderr
    assert _hashes(run_dir) == expected
    assert not _stale(run_dir), _stale(run_dir)
    assert not list((run_dir / ".ray_sessions").glob("*.json")), "a session record outlived its run"
    if kills[-1].how == "driver_and_watchdog_kill":
        assert "ended" in done.stderr and "leftover Ray processes" in done.stderr, done.stderr
        _assert_gone_10s_after(session, t_signal, kills[-1])


def test_group_kill_in_every_stage_resumes_identically(reference):
    """SIGKILL of the whole process group (a killed job, a closed terminal) in both of round 0's stages and in
    each of round 1's five, each re-run resuming the previous kill."""
    _chain(reference, [Kill(stage, "group_kill", -9) for stage in
                       ("round_0/init", "round_0/evaluate", "round_1/generate", "round_1/judge", "round_1/preferences",
                        "round_1/train", "round_1/evaluate")])


def test_signals_and_driver_kills_resume_identically(reference):
    """SIGTERM in generate and Ctrl-C (SIGINT to the group) in train end with one line and 143/130; SIGKILL of the
    driver alone (the OOM killer) in train is cleaned up by its watchdog; SIGKILL of the driver and its watchdog
    leaves Ray's processes to the next run, which ends them before it starts Ray."""
    _chain(reference, [Kill("round_1/generate", "sigterm", 143), Kill("round_1/train", "sigint", 130),
                       Kill("round_1/train", "driver_kill", -9), Kill("round_1/evaluate", "driver_and_watchdog_kill", -9)])


def test_a_dead_stage_actor_is_retried_from_the_stage_start(reference):
    """The train actor's process SIGKILLed mid-stage (as an OOM kill): resources.stage_retries=1 (the default) runs
    the stage again and the round ends as the uninterrupted one did; with 0 the round fails naming the stage."""
    run_dir, expected = reference
    shutil.rmtree(run_dir, ignore_errors=True)
    for retries, code in ((0, 1), (1, 0)):
        log = run_dir / "logs" / "round_1" / "train.log"
        before = _attempts(log)
        proc = subprocess.Popen(_command(run_dir, f"resources.stage_retries={retries}"), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            while _attempts(log) <= before:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)
            header = [ln for ln in log.read_text().splitlines() if "(pid " in ln][-1]
            os.kill(int(header.rsplit("(pid ", 1)[1].rstrip(")")), signal.SIGKILL)   # the actor's worker process
            _, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == code, err
        if retries == 0:
            assert "round 1 stage train failed: its Ray actor died in each of 1 attempt(s)" in err, err
            assert "out-of-memory" in err and "Traceback" not in err
        else:
            assert "its actor died" in err and "attempt 2 of 2" in err, err
    assert _hashes(run_dir) == expected
    assert not _stale(run_dir)


def test_kills_inside_egpos_extragradient_steps_resume_identically(tmp_path):
    """EGPO's update samples, judges and steps inside the train stage. SIGKILL of the group between an
    iteration's half step and its full step (weights at θ_{t+½}, the snapshot of θ_t held in memory), then
    SIGTERM after a later full step: each re-run starts the stage over and ends with the uninterrupted hashes."""
    run_dir = tmp_path / "run"
    done = _run_to_the_end(run_dir, *EGPO)
    assert done.returncode == 0, done.stderr
    expected = _hashes(run_dir)
    assert set(expected) == set(STAGE_DIRS)
    assert _count(run_dir / "logs" / "round_1" / "train.log", "egpo iteration 3/3: full step") == 1
    shutil.rmtree(run_dir)
    for kill in (Kill("round_1/train", "group_kill", -9, after="egpo iteration 2/3: half step"),
                 Kill("round_1/train", "sigterm", 143, after="egpo iteration 1/3: full step")):
        session, err, t_signal = _kill_during(run_dir, kill, tuple(EGPO))
        assert not (run_dir / "round_1" / "policy" / "manifest.json").exists(), f"{kill}: train finished first"
        finished = _hashes(run_dir)
        assert finished == {k: expected[k] for k in finished} and "round_1/preferences" in finished, kill
        if kill.how == "sigterm":
            _assert_one_line(err, kill)
        _assert_gone_10s_after(session, t_signal, kill)
    done = _run_to_the_end(run_dir, *EGPO)
    assert done.returncode == 0, done.stderr
    assert _hashes(run_dir) == expected
    assert not _stale(run_dir), _stale(run_dir)


# ---------------------------------------------------------------- no silent hang (in-process, on the test's Ray)

def _sleep_quietly(seconds: float, out: Path) -> dict:
    time.sleep(seconds)
    (out / "done.txt").write_text("done")
    return {}


def _die_once(marker: str, out: Path) -> dict:
    """SIGKILLs its own worker process the first time (as the OOM killer would), succeeds the next."""
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    (out / "done.txt").write_text("done")
    return {}


@pytest.fixture
def by_value(ray_local):
    """The stage functions above travel to the actors by value (the workers cannot import this test module).
    Yields the stage actors of the test's session, whose warm actor ends with the test."""
    import ray.cloudpickle

    from pipelines.actors import Actors
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    actors = Actors()
    yield actors
    actors.end_warm()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _stage(name: str, out: Path, role: str, resources, fn, *args):
    """A stage declared as pipelines/graph.py declares them, whose work is fn(*args, out=<its temp dir>)."""
    import functools

    from pipelines.graph import Stage
    return Stage(name, 1, role, out, {}, {}, resources, functools.partial(_work, fn, args))


def _work(fn, args: tuple, job) -> dict:
    return fn(*args, out=job.out)


def _runner(actors, settings=None):
    from pipelines.runner import StageRunner, StageSettings
    return StageRunner(actors, settings or StageSettings())


def test_an_unschedulable_request_fails_at_once(by_value, tmp_path):
    from pipelines.graph import RoundError
    from selfplay.config import ActorResources, Config
    t0 = time.monotonic()
    with pytest.raises(RoundError) as e:
        _runner(by_value).run(_stage("generate", tmp_path / "out", "generation", ActorResources(num_cpus=1, num_gpus=1),
                             _sleep_quietly, 0), Config())
    assert time.monotonic() - t0 < 10
    assert "resources.generation.num_gpus=1 asks for 1 GPU, but the Ray cluster has 0" in str(e.value)
    assert not list(tmp_path.glob(".out.tmp-*")) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("stall_s", [1.0, 0.0])
def test_the_stall_report_takes_effect(by_value, tmp_path, caplog, stall_s):
    """resources.stall_report_s from the config: a stage silent for longer is reported with its log's tail; 0 is off."""
    from pipelines.runner import StageSettings
    from pipelines.config import load_config
    cfg = load_config("configs/arena_sppo.yaml", [f"resources.stall_report_s={stall_s}", f"run_dir={tmp_path}"])
    runner = _runner(by_value, StageSettings.of(cfg, tmp_path / "logs"))
    with caplog.at_level(logging.WARNING, logger="selfplay"):
        runner.run(_stage("judge", tmp_path / "out", "judge", cfg.resources.judge, _sleep_quietly, 3.5), cfg)
    reports = [r.getMessage() for r in caplog.records if "no progress" in r.getMessage()]
    if stall_s:
        # before the actor starts, the report says so; once it has, the log's tail (its header line) comes along
        assert any("judge.log ---\n==== " in r for r in reports), reports
    else:
        assert not reports
    assert (tmp_path / "out" / "done.txt").exists()


@pytest.mark.parametrize("retries", [1, 0])
def test_stage_retries_takes_effect(by_value, tmp_path, retries):
    from pipelines.graph import RoundError
    from pipelines.runner import StageSettings
    from pipelines.config import load_config
    cfg = load_config("configs/arena_sppo.yaml", [f"resources.stage_retries={retries}", f"run_dir={tmp_path}"])
    marker = str(tmp_path / "died-once")
    runner, stage = _runner(by_value, StageSettings.of(cfg, None)), _stage("train", tmp_path / "out", "trainer",
                                                                 cfg.resources.trainer, _die_once, marker)
    if retries:
        runner.run(stage, cfg)
        assert (tmp_path / "out" / "done.txt").exists()
    else:
        with pytest.raises(RoundError, match="stage train failed: its Ray actor died in each of 1 attempt"):
            runner.run(stage, cfg)
    assert Path(marker).exists() and not list(tmp_path.glob(".out.*"))


def _shard_dies_once(marker_dir: str, shard: int, doomed: int) -> int:
    """Records each start; the doomed shard's first attempt SIGKILLs its own process (as the OOM killer would)."""
    starts = Path(marker_dir) / f"shard{shard}"
    starts.mkdir(exist_ok=True)
    (starts / str(os.getpid())).write_text("")
    if shard == doomed and len(list(starts.iterdir())) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.5)   # the other shards are still running when the doomed one dies
    return shard * 10


@pytest.mark.parametrize("retries", [1, 0])
def test_a_dead_shard_actor_reruns_its_shard_only(by_value, tmp_path, retries):
    """A fanned-out stage (generation.num_engines, judge.num_actors): one shard's actor process is killed; that
    shard alone runs again in a new actor, the others are not rerun; with resources.stage_retries=0 the call
    fails naming the shard."""
    from pipelines.actors import map_in_actors
    from selfplay.config import ActorResources
    calls = [(str(tmp_path), i, 1) for i in range(3)]
    res = ActorResources(num_cpus=0.5, num_gpus=0)
    if retries:
        assert map_in_actors("judge", res, _shard_dies_once, calls, retries=retries) == [0, 10, 20]
    else:
        with pytest.raises(RuntimeError, match="judge shard 2 of 3: its actor died in each of 1 attempt"):
            map_in_actors("judge", res, _shard_dies_once, calls, retries=retries)
    starts = {i: len(list(d.iterdir())) if (d := tmp_path / f"shard{i}").exists() else 0 for i in range(3)}
    if retries:
        assert starts == {0: 1, 1: 2, 2: 1}, starts
    else:   # the failure ends the call at once: the other shards may not have started
        assert starts[1] == 1 and starts[0] <= 1 and starts[2] <= 1, starts


def test_stale_temp_dirs_of_dead_writers_go_live_ones_stay(tmp_path):
    from selfplay.artifacts import _HOST, atomic_dir
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = [tmp_path / f".out.tmp-{_HOST}-{dead_pid}-abc", tmp_path / f".out.old-{_HOST}-{dead_pid}"]
    alive = tmp_path / f".out.tmp-{_HOST}-{os.getppid()}-xyz"   # a writer still running (pytest's parent)
    other_host = tmp_path / f".out.tmp-elsewhere-{dead_pid}-abc"
    for d in (*stale, alive, other_host):
        d.mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("x")
    assert not any(d.exists() for d in stale) and alive.exists() and other_host.exists()
    assert (tmp_path / "out" / "f").read_text() == "x"


def test_two_identical_runs_hash_identically(reference, tmp_path):
    """Timings live in the manifests and eval/timings.json, outside the content hash: a second identical run
    in the same place gives the same output_hash for every stage, evaluate included; the console, wandb and
    the dashboard still get stage_seconds and pairs/s (read_metrics)."""
    from pipelines.evaluate import read_metrics
    run_dir, expected = reference
    shutil.rmtree(run_dir, ignore_errors=True)
    done = _run_to_the_end(run_dir)
    assert done.returncode == 0, done.stderr
    assert _hashes(run_dir) == expected
    metrics = read_metrics(run_dir / "round_1" / "eval")
    assert set(metrics["stage_seconds"]) == {"generate", "judge", "preferences", "train", "evaluate"}
    assert metrics["judge"]["pairs_per_s"] > 0 and metrics["eval_judge"]["pairs_per_s"] > 0
    raw = (run_dir / "round_1" / "eval" / "metrics.json").read_text() + (run_dir / "round_1/eval/versus.json").read_text()
    assert "stage_seconds" not in raw and "pairs_per_s" not in raw
