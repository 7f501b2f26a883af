"""A Ray kept between invocations (pipelines/kept_ray.py, `--keep-ray`, what `make iterate` runs): the next
run joins it instead of starting its own; it ends when unused for its idle time or on `stop`; a killed
driver's actors end with its job while the session stays; a session that cannot serve a driver is started
again. Each test keeps its session in a directory of its own (SELFPLAY_KEPT_RAY_DIR) and ends it."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines import kept_ray
from pipelines.reaper import alive, session_processes, start_time
from test_security import exposed, listening_sockets

pytestmark = pytest.mark.slow   # real Ray sessions started with `ray start`

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["data.prompts_per_round=8", "data.eval_limit=8", "generation.k=2", "train.epochs=1", "wandb.mode=disabled",
         "generation.max_new_tokens=8", "eval.samples_per_prompt=1"]


@pytest.fixture
def kept(tmp_path, monkeypatch) -> Path:
    where = tmp_path / "kept"
    monkeypatch.setenv("SELFPLAY_KEPT_RAY_DIR", str(where))   # the drivers started below inherit it
    yield where
    kept_ray.stop(where)


def _round(run_dir: Path, n: int, keep: str = "60") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines.round", "--round", str(n), "--config", "configs/arena_sppo.yaml",
           f"run_dir={run_dir}", *SMALL, "--keep-ray", keep]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _gone_within(pids_of, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pids_of():
            return True
        time.sleep(0.2)
    return False


def _workers(temp_dir: str) -> list[int]:
    """The session's actor processes (Ray titles them ray::<Class>); its own agents are left out."""
    out = []
    for pid in session_processes(temp_dir):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"ray::") and not cmd.startswith((b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")):
            out.append(pid)
    return out


def test_rounds_join_one_kept_ray_that_outlives_them_until_stopped(kept, tmp_path):
    run = tmp_path / "run"
    first = _round(run, 1)
    assert first.returncode == 0, first.stderr[-3000:]
    s = kept_ray.read(kept)
    assert s is not None and session_processes(s.temp_dir), "the session ended with its first driver"
    listeners = [x for pid in session_processes(s.temp_dir) for x in listening_sockets(pid)]
    assert any("gcs_server" in n for n, _, _ in listeners) and exposed(listeners) == [], listeners
    second = _round(run, 2)
    assert second.returncode == 0, second.stderr[-3000:]
    assert kept_ray.read(kept) == s, "the second round started a Ray of its own instead of joining the kept one"
    said = "Ray: started a local Ray kept for the next rounds; it ends after 60 s unused"
    assert said in first.stderr and "Ray:" not in second.stderr, (first.stderr[-2000:], second.stderr[-2000:])
    assert json.loads((run / "round_2" / "eval" / "metrics.json").read_text())["round"] == 2
    assert not list((kept / "leases").glob("*.json")), "a driver kept its lease after it exited"
    assert _gone_within(lambda: _workers(s.temp_dir), 10), "the finished jobs' actors outlived them"
    assert session_processes(s.temp_dir), "the kept session ended with its drivers"

    stopped = subprocess.run([sys.executable, "-m", "pipelines.kept_ray", "stop"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert f"ended the kept Ray session at {s.address}" in stopped.stdout, stopped.stdout + stopped.stderr
    assert _gone_within(lambda: session_processes(s.temp_dir), 10)
    assert kept_ray.read(kept) is None


def test_an_unused_kept_ray_ends_after_its_idle_time(kept):
    kept_ray.join(2, idle_s=3.0, where=kept)
    s = kept_ray.read(kept)
    kept_ray.leave(kept)
    time.sleep(1.5)
    assert session_processes(s.temp_dir), "ended before its idle time"
    assert _gone_within(lambda: session_processes(s.temp_dir), 15), "still running long after its idle time"
    assert _gone_within(lambda: alive(s.watchdog_pid, s.watchdog_started), 5), "the watchdog outlived its session"
    assert kept_ray.read(kept) is None


DRIVER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from pipelines.ray_session import ray_session
    import ray

    @ray.remote(num_cpus=1)
    class Sleeper:
        def pid(self):
            return os.getpid()

    with ray_session(1, keep_s=60):
        a = Sleeper.remote()
        Path(sys.argv[1]).write_text(str(ray.get(a.pid.remote())))
        time.sleep(600)
""")


def test_a_killed_drivers_actors_end_with_it_and_the_kept_ray_stays(kept, tmp_path):
    out = tmp_path / "actor_pid"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.2)
        assert out.exists(), "the driver's actor never started"
        actor = int(out.read_text())
        assert kept_ray._busy(kept)   # the live driver's lease
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert _gone_within(lambda: start_time(actor), 15), "the killed driver's actor outlived it"
    s = kept_ray.read(kept)
    assert s is not None and session_processes(s.temp_dir), "the kept session ended with a killed driver"
    assert not kept_ray._busy(kept), "a dead driver's lease still holds the session"


def test_a_kept_ray_that_cannot_serve_the_driver_is_refused():
    """_unusable, which join() acts on (end the session, start another), for each reason; the GCS is played
    by a listening socket, the watchdog by this process."""
    with socket.socket() as gcs:
        gcs.bind(("127.0.0.1", 0))
        gcs.listen()
        good = kept_ray.KeptSession(f"127.0.0.1:{gcs.getsockname()[1]}", "/tmp/none", 2, kept_ray._fingerprint(),
                                    60.0, os.getpid(), start_time(os.getpid()))
        assert kept_ray._unusable(good, 2) == ""
        assert "CPUs" in kept_ray._unusable(good, 3)
        other_ray = {**good.fingerprint, "ray": "0.0.1"}
        assert "started for" in kept_ray._unusable(replace(good, fingerprint=other_ray), 2)
        assert "watchdog" in kept_ray._unusable(replace(good, watchdog_started=-1), 2)
    assert "GCS" in kept_ray._unusable(good, 2)   # the socket is closed now
    assert kept_ray._unusable(None, 1)


def test_a_kept_ray_directory_of_another_user_or_open_to_others_is_refused(tmp_path):
    where = tmp_path / "open"
    where.mkdir(mode=0o777)
    where.chmod(0o777)   # whatever the umask made of it
    with pytest.raises(kept_ray.RaySetupError, match="not a directory of this user's alone"):
        kept_ray.join(1, 60, where=where)
    assert not (where / "session.json").exists() and not list(where.iterdir())


@pytest.mark.parametrize("keep, env, said", [
    ("-1", {}, "--keep-ray: seconds >= 0"),
    ("5", {"RAY_ADDRESS": "127.0.0.1:1"}, "--keep-ray 5 keeps a local Ray, but RAY_ADDRESS=127.0.0.1:1 names a cluster"),
])
def test_a_keep_ray_that_cannot_take_effect_is_refused(keep, env, said, tmp_path):
    p = subprocess.run([sys.executable, "-m", "pipelines.round", "--round", "1", "--keep-ray", keep,
                        f"run_dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, **env})
    assert p.returncode == 2 and said in p.stderr, p.stderr
    assert not (tmp_path / "run").exists()   # refused before anything is written


JOIN = textwrap.dedent("""
    import logging, os
    from pipelines.ray_session import ray_session
    logging.basicConfig(level=logging.INFO)
    import ray
    with ray_session(1, keep_s=60):
        print("task ran in", ray.get(ray.remote(lambda: os.getpid()).remote()))
""")


def test_a_kept_ray_with_its_raylet_socket_gone_or_another_token_is_started_again(kept, tmp_path, monkeypatch):
    """The issue's two ways a kept Ray broke every later run: its raylet's socket moved away (ray.init then
    died in a C++ stack trace) and a token it does not take (twenty seconds of retries, then a traceback).
    Each is found before joining, and the session is started again."""
    kept_ray.join(2, 60, where=kept)
    kept_ray.leave(kept)
    first = kept_ray.read(kept)
    socket_ = Path(first.temp_dir) / "session_latest" / "sockets" / "raylet"
    socket_.rename(socket_.with_name("raylet.moved"))
    assert kept_ray._cannot_serve(first).startswith(f"its raylet does not answer on {socket_}")
    _, done = kept_ray.join(2, 60, where=kept)
    kept_ray.leave(kept)
    assert done.startswith(f"started again (its raylet does not answer on {socket_}"), done
    second = kept_ray.read(kept)
    assert second.temp_dir != first.temp_dir and _gone_within(lambda: session_processes(first.temp_dir), 15)

    other = tmp_path / "another_token"
    other.write_text("another token")
    other.chmod(0o600)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(other))
    assert kept_ray._cannot_serve(second) == "its GCS refuses this driver's Ray token"   # asked with the new token
    driver = subprocess.run([sys.executable, "-c", JOIN], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert driver.returncode == 0 and "task ran in" in driver.stdout, driver.stderr[-3000:]
    said = "Ray: started again (started with another Ray token than this driver's) a local Ray kept for the next"
    assert said in driver.stderr and "Traceback" not in driver.stderr, driver.stderr[-3000:]
    third = kept_ray.read(kept)
    assert third.temp_dir != second.temp_dir and _gone_within(lambda: session_processes(second.temp_dir), 15)
    assert kept_ray._cannot_serve(third) == "" and kept_ray._unusable(third, 1) == ""
