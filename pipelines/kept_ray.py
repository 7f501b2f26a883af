"""A local Ray kept running between invocations: `python -m pipelines.round --keep-ray SECONDS` (what
`make iterate` passes, KEEP_RAY=600 by default).

Starting a local Ray costs this 2-core machine 3-4 s and ending it 1-1.5 s, against about 10 s of work in a
default arena round: a third of each invocation's wall time. A kept session is joined in about 0.05 s and
left in 0.3 s. There is one per user and host, recorded in /tmp/selfplay-ray-<uid>/ (SELFPLAY_KEPT_RAY_DIR
elsewhere).

Only Ray's daemons are kept (GCS, raylet, agents: about 0.5 GiB). Each invocation is a Ray job of its own:
its workers start fresh, so they run the code as it is now, and they end with the job. Ray ends a job's
actors when its driver dies, SIGKILL included. The session is started again when its Ray, Python or
CUDA_VISIBLE_DEVICES differ from the joining driver's, or when it has fewer CPUs than the run needs.

A watchdog (`python -m pipelines.kept_ray watch DIR`, in a session of its own) ends the session once no
driver has used it for SECONDS; `make ray-stop` (`python -m pipelines.kept_ray stop`) ends it at once.
Its processes are found by the session's temp dir (pipelines/reaper.py), never by `ray stop`, which would
end every Ray of this user on the host.

The session runs with token authentication (pipelines/ray_env.py): a request without this user's token to
any of its ports is refused, and its temp dir is under a directory only this user can enter. A session
that cannot serve a driver (its raylet's socket gone, its raylet dead, its GCS refusing this driver's
token, its temp dir's parent open to others) is ended and started again, never joined: joining it ends
in a C++ stack trace or twenty seconds of retries.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pipelines.ray_env import RaySetupError, gcs_answer, new_temp_dir, private_dir, token_digest, use_token
from pipelines.reaper import alive, end_processes, session_processes, start_time

POLL_S = 1.0

# The kept session could not be started or used (the name pipelines/round.py catches): one error class for
# every Ray the project cannot set up, its message naming the fix.


@dataclass(frozen=True)
class KeptSession:
    address: str          # 127.0.0.1:<GCS port>
    temp_dir: str         # names every process of the session (pipelines/reaper.py)
    num_cpus: int
    fingerprint: dict     # what a joining driver must share with it (see _fingerprint)
    idle_s: float
    watchdog_pid: int
    watchdog_started: int | None


def home() -> Path:
    return Path(os.environ.get("SELFPLAY_KEPT_RAY_DIR") or Path(tempfile.gettempdir()) / f"selfplay-ray-{os.getuid()}")


def _private(where: Path) -> Path:
    """where, made this user's alone: a directory another user made in /tmp could name a Ray of theirs,
    and the driver would send its work there."""
    return private_dir(where, "remove it, or set SELFPLAY_KEPT_RAY_DIR to one that is, or run without a "
                              "kept Ray (KEEP_RAY=0)")


def join(num_cpus: int, idle_s: float, where: Path | None = None) -> tuple[str, str]:
    """The kept session's address, started (or started again) if it cannot serve this driver, and what
    was done ("joined", "started", "started again (<why>)"); the driver holds a lease on it until leave()."""
    from selfplay.artifacts import build_lock
    where = _private(where or home())
    use_token(create=True)
    with build_lock(where / "session"):   # two drivers at once start one session
        s = read(where)
        why = _unusable(s, num_cpus) or _cannot_serve(s)
        done = "joined" if not why else "started" if s is None else f"started again ({why})"
        if s is not None and why:
            _end(s, where)
        if s is None or why:
            s = _start(where, num_cpus, idle_s)
        elif s.idle_s != idle_s:   # the latest --keep-ray is the one that holds
            s = replace(s, idle_s=idle_s)
            _write(where, s)
        lease = where / "leases" / f"{os.getpid()}.json"
        lease.parent.mkdir(parents=True, exist_ok=True)
        lease.write_text(json.dumps({"pid": os.getpid(), "started": start_time(os.getpid())}))
    return s.address, done


def leave(where: Path | None = None) -> None:
    """This driver is done with the session: its idle time starts now."""
    where = where or home()
    (where / "leases" / f"{os.getpid()}.json").unlink(missing_ok=True)
    (where / "last_used").touch()


def read(where: Path) -> KeptSession | None:
    with suppress(OSError, ValueError, TypeError):
        return KeptSession(**json.loads((where / "session.json").read_text()))
    return None


def stop(where: Path | None = None) -> KeptSession | None:
    """End the kept session now (its drivers' jobs with it); the session that was ended, if any."""
    from selfplay.artifacts import build_lock
    where = where or home()
    if not where.exists():
        return None
    with build_lock(_private(where) / "session"):
        s = read(where)
        if s is not None:
            _end(s, where)
    return s


def _fingerprint() -> dict:
    from importlib.metadata import version   # not `import ray`: the bench calls join() before any Ray setting
    return {"ray": version("ray"), "python": sys.executable,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "token": token_digest()}


def _unusable(s: KeptSession | None, num_cpus: int) -> str:
    """Why s cannot serve a driver that needs num_cpus ("" if it can)."""
    if s is None:
        return "none"
    if s.fingerprint.get("token") != _fingerprint()["token"]:
        return "started with another Ray token than this driver's"
    if s.fingerprint != _fingerprint():
        return f"started for {s.fingerprint}, not {_fingerprint()}"
    if s.num_cpus < num_cpus:
        return f"{s.num_cpus} CPUs, {num_cpus} needed"
    if not alive(s.watchdog_pid, s.watchdog_started):
        return "its watchdog is gone"
    port = int(s.address.rsplit(":", 1)[1])
    with socket.socket() as sock:   # the GCS answers: the session is up
        sock.settimeout(1.0)
        if sock.connect_ex(("127.0.0.1", port)) != 0:
            return "its GCS does not answer"
    return ""


def _cannot_serve(s: KeptSession | None) -> str:
    """Why the running session s would fail a driver that joins it ("" if it would not): checked before
    ray.init, which answers a gone raylet socket with a C++ stack trace and a refused token with twenty
    seconds of retries."""
    if s is None:
        return ""
    for d, mask in ((Path(s.temp_dir).parent, 0o077), (Path(s.temp_dir), 0)):   # Ray makes the temp dir 0777
        try:
            st = os.lstat(d)
        except OSError:
            return f"its temp dir {s.temp_dir} is gone"
        if st.st_uid != os.getuid() or st.st_mode & mask or not stat.S_ISDIR(st.st_mode):
            return f"{d} is not this user's alone (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})"
    raylet = Path(s.temp_dir) / "session_latest" / "sockets" / "raylet"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(raylet))
        except OSError as e:
            return f"its raylet does not answer on {raylet} ({e.strerror or e})"
    answer = gcs_answer(s.address)
    if answer == "UNAUTHENTICATED":
        return "its GCS refuses this driver's Ray token"
    return "" if answer == "OK" else f"its GCS does not answer ({answer})"


def _end(s: KeptSession, where: Path) -> None:
    """End the session's processes and its watchdog (unless the watchdog is the caller), and forget it."""
    end_processes(s.temp_dir)
    if s.watchdog_pid != os.getpid() and alive(s.watchdog_pid, s.watchdog_started):
        with suppress(OSError):
            os.kill(s.watchdog_pid, signal.SIGTERM)
    (where / "session.json").unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(where: Path, num_cpus: int, idle_s: float) -> KeptSession:
    """`ray start --head` on loopback, in a session of its own (a Ctrl-C or a killed process group of the
    driver spares it), with its watchdog."""
    tmp = new_temp_dir()
    port = _free_port()
    # Ports that default to a fixed number are given free ones (another Ray of the machine may hold the
    # default); the dashboard agent's port 0 is its own pick, which Ray records for its job agent.
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address=127.0.0.1",
           f"--port={port}", f"--num-cpus={num_cpus}", "--include-dashboard=false", f"--temp-dir={tmp}",
           "--disable-usage-stats", f"--ray-client-server-port={_free_port()}", "--dashboard-agent-listen-port=0"]
    # os.environ holds RAY_AUTH_MODE=token and the token file (use_token): the session and its workers use them
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    with open(where / "ray_start.log", "w") as out:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                           start_new_session=True, timeout=120)
    if p.returncode != 0:
        end_processes(tmp)
        raise RaySetupError(f"could not start the kept Ray session (`ray start` exited {p.returncode}); "
                           f"see {where / 'ray_start.log'}")
    dog = subprocess.Popen([sys.executable, "-m", "pipelines.kept_ray", "watch", str(where)], start_new_session=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           cwd=str(Path(__file__).resolve().parents[1]))
    s = KeptSession(f"127.0.0.1:{port}", tmp, num_cpus, _fingerprint(), idle_s, dog.pid, start_time(dog.pid))
    (where / "last_used").touch()
    _write(where, s)
    return s


def _write(where: Path, s: KeptSession) -> None:
    tmp = where / f"session.json.tmp-{os.getpid()}"   # a reader never sees half a record
    tmp.write_text(json.dumps(asdict(s)))
    tmp.replace(where / "session.json")


def _busy(where: Path) -> bool:
    """A live driver holds a lease; the leases of dead ones are removed."""
    busy = False
    for f in (where / "leases").glob("*.json"):
        with suppress(OSError, ValueError, KeyError):
            lease = json.loads(f.read_text())
            if alive(lease["pid"], lease["started"]):
                busy = True
                continue
            f.unlink(missing_ok=True)
    return busy


def watch(where: Path) -> None:
    """End the session once no driver has used it for its idle_s; exit when it was ended or replaced
    meanwhile (stop(), a driver that started a new one) or its processes are gone."""
    from selfplay.artifacts import build_lock
    me, last_busy, checked = os.getpid(), time.time(), 0.0
    while True:
        time.sleep(POLL_S)
        s = read(where)
        if s is None or s.watchdog_pid != me:
            return
        if time.time() - checked > 10:   # a /proc scan: not every second
            checked = time.time()
            if not session_processes(s.temp_dir):
                (where / "session.json").unlink(missing_ok=True)
                return
        if _busy(where):
            last_busy = time.time()
            continue
        with suppress(OSError):
            last_busy = max(last_busy, (where / "last_used").stat().st_mtime)
        if time.time() - last_busy > s.idle_s:
            with build_lock(where / "session"):
                if read(where) == s and not _busy(where):   # no driver joined meanwhile
                    _end(s, where)
                    return


def main(argv: list[str]) -> int:
    if argv[:1] == ["watch"] and len(argv) == 2:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        watch(Path(argv[1]))
        return 0
    if argv == ["stop"]:
        s = stop()
        print(f"ended the kept Ray session at {s.address} ({s.temp_dir})" if s else "no kept Ray session is running")
        return 0
    print("usage: python -m pipelines.kept_ray stop | watch DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
