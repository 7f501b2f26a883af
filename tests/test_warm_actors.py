"""Warm stage actors (pipelines/actors.py): CPU stages share one process, a dead or interrupted one is
replaced, SELFPLAY_WARM_ACTORS=0 turns sharing off, and per-stage peak memory and logs stay the stage's own."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from selfplay.config import ActorResources

CPU = ActorResources(num_cpus=1, num_gpus=0)


def _pid() -> int:
    return os.getpid()


def _hold_mb(mb: int) -> int:
    """Touch `mb` MB (so it counts in RSS), free it, return the pid."""
    import numpy as np
    block = np.ones(mb * 2**20, dtype=np.uint8)
    assert int(block[:: 4096].sum()) == len(block[:: 4096])
    del block
    return os.getpid()


def _say(text: str) -> int:
    print(f"stdout {text}")
    print(f"stderr {text}", file=sys.stderr)
    os.write(1, f"fd1 {text}\n".encode())
    return os.getpid()


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@pytest.fixture
def actors(ray_local, monkeypatch):
    """A session's stage actors (pipelines.actors.Actors), with the functions above sent by value (the workers
    cannot import this module) and no warm actor after the test."""
    import ray.cloudpickle

    from pipelines.actors import WARM_ACTORS, Actors
    monkeypatch.delenv(WARM_ACTORS, raising=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    pool = Actors()
    yield pool
    pool.end_warm()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_pool_key_keeps_cpu_shapes_apart_and_gpu_actors_out(monkeypatch):
    from pipelines.actors import WARM_ACTORS, actor_options, pool_key
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(WARM_ACTORS, raising=False)
    key = lambda **r: pool_key(actor_options(ActorResources(**r)))  # noqa: E731
    assert key(num_cpus=2, num_gpus=0) == key(num_cpus=2, num_gpus=0) is not None
    assert len({key(num_cpus=c, num_gpus=0) for c in (0, 1, 2)}) == 3
    assert key(num_cpus=1, num_gpus=1) is None and key(num_cpus=1, num_gpus=0.5) is None   # GPU: killed after
    cpu = key(num_cpus=1, num_gpus=0)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")     # another runtime env: another actor
    assert key(num_cpus=1, num_gpus=0) not in (cpu, None)
    monkeypatch.setenv(WARM_ACTORS, "0")
    assert key(num_cpus=1, num_gpus=0) is None


def test_consecutive_cpu_stages_share_one_process(actors):
    (first, _), (second, _) = (actors.run_in_actor("judge", CPU, _pid) for _ in range(2))
    assert first == second != os.getpid()


def test_another_shape_replaces_the_warm_actor(actors):
    first, _ = actors.run_in_actor("judge", CPU, _pid)
    other, _ = actors.run_in_actor("trainer", ActorResources(num_cpus=2), _pid)   # needs both cores: it must start
    again, _ = actors.run_in_actor("judge", CPU, _pid)
    assert len({first, other, again}) == 3


def test_switched_off_every_stage_has_its_own_process(actors, monkeypatch):
    from pipelines.actors import WARM_ACTORS
    monkeypatch.setenv(WARM_ACTORS, "0")
    (first, _), (second, _) = (actors.run_in_actor("judge", CPU, _pid) for _ in range(2))
    assert first != second
    assert actors.warm is None


def test_a_killed_warm_actor_is_replaced(actors):
    first, _ = actors.run_in_actor("judge", CPU, _pid)
    os.kill(first, signal.SIGKILL)   # idle, as the OOM killer might pick it between stages
    second, _ = actors.run_in_actor("judge", CPU, _pid)
    assert second != first


def test_an_actor_dying_in_its_stage_is_not_reused(actors):
    from ray.exceptions import RayActorError
    pid, _ = actors.run_in_actor("judge", CPU, _pid)
    with pytest.raises(RayActorError):
        actors.run_in_actor("judge", CPU, os.kill, pid, signal.SIGKILL)
    assert actors.warm is None
    assert actors.run_in_actor("judge", CPU, _pid)[0] != pid


def test_an_interrupted_stage_kills_its_actor(actors):
    import threading
    pid, _ = actors.run_in_actor("judge", CPU, _pid)
    threading.Thread(target=_interrupt_the_wait, args=(actors,), daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        actors.run_in_actor("judge", CPU, _sleep, 60)
    assert actors.warm is None
    deadline = time.monotonic() + 20
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(pid), "the interrupted stage's actor still runs"


def _interrupt_the_wait(actors) -> None:
    """What the round's SIGINT handler does, once the stage's wait has begun."""
    time.sleep(1.0)
    while not actors.stop_waiting(KeyboardInterrupt()):
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and ") Z" not in Path(f"/proc/{pid}/stat").read_text()


def test_each_stage_reports_its_own_peak_rss(actors):
    big_pid, big = actors.run_in_actor("judge", CPU, _hold_mb, 300)
    small_pid, small = actors.run_in_actor("judge", CPU, _hold_mb, 1)
    assert big_pid == small_pid   # one process: a lifetime peak would say 300 MB twice
    assert big["peak_rss_mb"] > 300
    assert small["peak_rss_mb"] < big["peak_rss_mb"] - 200, (big, small)


def test_stage_output_lands_in_its_own_log(actors, tmp_path):
    logs = [tmp_path / "round_1" / f"{name}.log" for name in ("judge", "preferences")]
    pids = [actors.run_in_actor("judge", CPU, _say, log.stem, log_file=str(log))[0] for log in logs]
    assert pids[0] == pids[1]
    for log, other in (logs, logs[::-1]):
        text = log.read_text()
        assert all(f"{how} {log.stem}" in text for how in ("stdout", "stderr", "fd1")), text
        assert other.stem not in text.replace(log.stem, ""), text
        assert text.startswith("==== ") and f"{log.stem} done in" in text, text


def test_the_session_ends_the_warm_actor(actors):
    from pipelines.ray_session import ray_session
    with ray_session() as session:   # joins the test's Ray, and still ends the warm actor on the way out
        pid, _ = session.run_in_actor("judge", CPU, _pid)
        assert session.warm is not None
    assert session.warm is None
    deadline = time.monotonic() + 20
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(pid)
