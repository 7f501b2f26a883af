"""The driver's Ray session: join a cluster (RAY_ADDRESS), join the local Ray kept between invocations
(pipelines/kept_ray.py), or start a local Ray of this run's own, and end what is ours on every exit path.

`with ray_session(...) as actors:` yields the session's stage actors (pipelines/actors.py: the warm actor,
the stage wait in progress); the warm actor ends with the session.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import re
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from pipelines.ray_env import RaySetupError, gcs_answer, new_temp_dir, use_token   # before ray: loopback, auth
import ray

from pipelines.actors import Actors

log = logging.getLogger("selfplay")


@contextmanager
def ray_session(max_cpus_needed: float = 1, verbose: bool = False, run_dir: str | Path | None = None,
                keep_s: float = 0) -> Iterator[Actors]:
    """Join RAY_ADDRESS (or an already-initialised Ray) if there is one, else the local Ray kept between
    invocations when keep_s > 0 (pipelines/kept_ray.py: started if there is none, ended after keep_s
    seconds unused), else start Ray locally.

    A local session is this driver's own and ends with it on every exit path: ray.shutdown here, and a
    watchdog (pipelines/reaper.py) for the paths that skip it (a SIGKILLed driver). With a run_dir, the
    session is also recorded under RUN_DIR/.ray_sessions/ so that the next run ends the leftovers of a
    session whose driver and watchdog were both killed. Clusters (RAY_ADDRESS) are never touched.
    Unless verbose, Ray neither echoes the workers' output (the stages write it to their logs) nor
    announces itself."""
    actors = Actors()
    if ray.is_initialized():
        try:
            yield actors
        finally:
            actors.end_warm()   # Ray is not ours to shut down; the warm actor still ends with this session
        return
    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    if os.environ.get("RAY_ADDRESS"):
        use_token(create=False)   # the cluster's token: a new one would only be refused
        address, fix = os.environ["RAY_ADDRESS"], "set RAY_AUTH_TOKEN_PATH to the token file it was started with"
        if re.fullmatch(r"[\w.-]+:\d+", address) and gcs_answer(address) == "UNAUTHENTICATED":
            raise RaySetupError(f"the Ray at RAY_ADDRESS={address} refuses this driver's token; {fix}")
        _joined(address, quiet, fix)
        try:
            yield actors
        finally:
            actors.end_warm()
            ray.shutdown()
        return
    if run_dir is not None:
        end_leftover_sessions(run_dir)
    if keep_s > 0:
        with _kept_session(local_cpus(max_cpus_needed), keep_s, quiet, actors):
            yield actors
        return
    use_token(create=True)
    tmp = new_temp_dir()
    record = _own_session(tmp, run_dir)   # before ray.init: a kill while Ray starts leaves nothing behind either
    try:
        with _sigint_ignored():   # Ray's daemons share the driver's process group: Ctrl-C is the driver's alone
            ray.init(address="local", num_cpus=local_cpus(max_cpus_needed),
                     include_dashboard=False, _temp_dir=tmp, runtime_env={"env_vars": _worker_env()}, **quiet)
        yield actors
    finally:
        actors.end_warm()
        ray.shutdown()
        _release(record)


def local_cpus(max_cpus_needed: float) -> int:
    """A local session's CPUs: the machine's, or what the largest actor asks if that is more."""
    return max(os.cpu_count() or 1, int(max_cpus_needed + 0.999))


@contextmanager
def _kept_session(num_cpus: int, keep_s: float, quiet: dict, actors: Actors) -> Iterator[None]:
    from pipelines import kept_ray
    address, done = kept_ray.join(num_cpus, keep_s)
    if done != "joined":   # a Ray that outlives this command: say so, once
        log.info("Ray: %s a local Ray kept for the next rounds; it ends after %g s unused (make ray-stop: now)",
                 done, keep_s)
    try:
        _joined(address, quiet, "end it with `make ray-stop` and run again", runtime_env={"env_vars": _worker_env()})
        yield
    finally:
        try:
            actors.end_warm()
            ray.shutdown()   # leaves the session: this driver's job ends, its actors with it
        finally:
            kept_ray.leave()


def _joined(address: str, quiet: dict, fix: str, **init) -> None:
    """ray.init on a running Ray, its failure one line with the fix (Ray's own is a traceback)."""
    try:
        ray.init(address=address, **init, **quiet)
    except (ConnectionError, RuntimeError) as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise RaySetupError(f"cannot join the Ray at {address}: {first} (a token it does not accept?); {fix}") from None


@dataclass
class SessionRecord:
    """A local Ray session: its driver (pid and start time, as pids are reused), its temp dir (which
    names every process of it, see pipelines/reaper.py) and its watchdog."""
    driver_pid: int
    driver_started: int | None
    temp_dir: str
    host: str
    reaper_pid: int = 0
    path: str = ""     # where this record is kept (not written into it)


SESSIONS = ".ray_sessions"   # under RUN_DIR


def end_leftover_sessions(run_dir: str | Path) -> list[int]:
    """End the processes of recorded local sessions of this host whose driver is gone; the pids ended."""
    from pipelines.reaper import alive, end_processes
    ended = []
    for f in sorted((Path(run_dir) / SESSIONS).glob("*.json")):
        try:
            r = SessionRecord(**json.loads(f.read_text()))
        except (OSError, ValueError, TypeError):
            f.unlink(missing_ok=True)   # unreadable: written by a run killed mid-write
            continue
        if r.host != platform.node() or alive(r.driver_pid, r.driver_started):
            continue   # another machine's, or a driver still running: not ours to end
        pids = end_processes(r.temp_dir)
        if pids:
            log.warning("ended %d leftover Ray processes of a run killed earlier (driver pid %d, Ray temp dir %s)",
                        len(pids), r.driver_pid, r.temp_dir)
        ended += pids
        f.unlink(missing_ok=True)
    return ended


def _own_session(temp_dir: str, run_dir: str | Path | None) -> SessionRecord:
    """Start the watchdog and record the session (under run_dir, when there is one)."""
    import subprocess
    import sys

    from pipelines.reaper import start_time
    me = os.getpid()
    record = SessionRecord(me, start_time(me), temp_dir, platform.node())
    if Path("/proc/self/stat").exists():   # the watchdog reads /proc: Linux only
        reaper = subprocess.Popen([sys.executable, "-m", "pipelines.reaper", str(me), str(record.driver_started),
                                   temp_dir], start_new_session=True, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  cwd=str(Path(__file__).resolve().parents[1]))
        record.reaper_pid = reaper.pid
    if run_dir is not None:
        f = Path(run_dir) / SESSIONS / f"{me}.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps({k: v for k, v in asdict(record).items() if k != "path"}))
        record.path = str(f)
    return record


def _release(record: SessionRecord) -> None:
    """After ray.shutdown: the watchdog sweeps what shutdown left (and exits), the record goes."""
    import signal
    if record.reaper_pid:
        with suppress(OSError):
            os.kill(record.reaper_pid, signal.SIGTERM)
    if record.path:
        Path(record.path).unlink(missing_ok=True)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while Ray starts its daemons, which inherit that across exec: a terminal's Ctrl-C
    (sent to the whole foreground process group) then reaches the driver, which shuts Ray down in order,
    and not the GCS and raylet under it."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _worker_env() -> dict[str, str]:
    keep = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "SELFPLAY_ASSETS",
            "TOKENIZERS_PARALLELISM", "VLLM_CACHE_ROOT", "LD_PRELOAD", "WANDB_MODE")
    return {k: os.environ[k] for k in keep if k in os.environ}
