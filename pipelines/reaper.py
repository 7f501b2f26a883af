"""The processes of a local Ray session, found and ended when the driver that started them is gone.

Ray started by `ray.init(address="local")` is a dozen processes (GCS, raylet, its agents, the
monitors, one worker per actor). They outlive a driver that is SIGKILLed (the OOM killer, a killed
process group), and the actors' workers sit in process groups of their own. What ties them all to
the session is its temp dir: every one of them holds a file under it open (its log) or names it on
its command line, so that is how they are found; the process tree is lost once the raylet dies.

`python -m pipelines.reaper DRIVER_PID STARTTIME TEMP_DIR` is the watchdog the driver starts in a
session of its own (so a kill of the driver's group spares it): it ends the session's processes
within a second or two of the driver's death, and on SIGTERM (the driver's clean exit) at once.
Imports nothing heavy: it must start in milliseconds and hold no memory worth counting.
"""
from __future__ import annotations

import os
import re
import signal
import sys
import time

POLL_S = 0.5
GRACE_S = 3.0   # SIGTERM first (Ray's processes exit cleanly on it), SIGKILL after this


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None if it is
    gone or a zombie (dead, not yet waited for): with the pid, it names a process uniquely (a pid alone
    may be reused)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def alive(pid: int, started: int | None) -> bool:
    now = start_time(pid)
    return now is not None and (started is None or now == started)


# Ray's own programs: `ray::<name>` (workers, agents), a file of the ray package (raylet, gcs_server,
# dashboard.py), or a module of it run with -m (the Ray Client server, `python -m ray.util.client.server`,
# which names no temp dir on its command line).
RAY_PROGRAM = re.compile(rb"^ray::|/ray/|\x00-m\x00ray\.")


def session_processes(temp_dir: str) -> list[int]:
    """Pids of this user's processes (other than this one) that name temp_dir on their command line, or
    that are Ray's (RAY_PROGRAM) and hold a file under it open. A user's `tail -f` of a Ray log holds
    such a file too, and is left alone."""
    me, found = os.getpid(), []
    named = re.compile(re.escape(temp_dir.rstrip("/").encode()) + rb"(/|\x00|$)")
    root = temp_dir.rstrip("/") + "/"
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
            if named.search(cmd):
                found.append(int(name))
            elif RAY_PROGRAM.search(cmd):
                fd_dir = f"/proc/{name}/fd"
                if any(os.readlink(f"{fd_dir}/{fd}").startswith(root) for fd in os.listdir(fd_dir)):
                    found.append(int(name))
        except OSError:   # gone meanwhile, or another user's
            continue
    return found


def _with_children(pids: list[int]) -> list[int]:
    """pids and their descendants: what a Ray process started (a job's driver, a vLLM engine core) is
    the session's too, though it may name nothing of it."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(pids), list(pids)
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in found and c != os.getpid()]
        found.update(kids)
        frontier += kids
    return sorted(found)


def end_processes(temp_dir: str, grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM every process of the session and their descendants, SIGKILL those still there after
    grace_s; the pids found."""
    pids = _with_children(session_processes(temp_dir))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(start_time(p) for p in pids):
            time.sleep(0.1)
    return pids


def watch(driver: int, started: int | None, temp_dir: str) -> None:
    """Wait for the driver to exit (or for SIGTERM), then end what is left of its session."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # a Ctrl-C is the driver's to handle
    try:
        while alive(driver, started):
            if signal.sigtimedwait([signal.SIGTERM], POLL_S) is not None:
                break
    finally:
        end_processes(temp_dir)


def stop(temp_dir: str) -> int:
    """`python -m pipelines.reaper stop TEMP_DIR`: end the Ray started with --temp-dir=TEMP_DIR, and no
    other (`ray stop` ends every Ray of the user on the machine)."""
    if not os.path.isdir(temp_dir):
        print(f"error: {temp_dir} is not a directory: name the --temp-dir the Ray was started with", file=sys.stderr)
        return 2
    pids = end_processes(os.path.abspath(temp_dir))
    print(f"ended {len(pids)} processes of the Ray in {temp_dir}" if pids else f"no Ray process uses {temp_dir}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["stop"] and len(sys.argv) == 3:
        raise SystemExit(stop(sys.argv[2]))
    pid, ticks, where = sys.argv[1:4]
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])   # taken by sigtimedwait, never lost
    watch(int(pid), int(ticks) if ticks.isdigit() else None, where)
