"""One writer per run dir: an invocation holds RUN_DIR/.lock (an flock) from its checks to its end.

A second invocation on the same run dir stops at once, naming the one that holds it, instead of running
the same stages beside it (each replacing the other's artifacts while the other reads them). The kernel
drops the lock when its holder dies, SIGKILL included, so a crashed run never leaves a stale lock; the
file itself stays and only says who held it last.
"""
from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK = ".lock"


class RunDirBusy(RuntimeError):
    """Another invocation holds the run dir."""


@contextmanager
def holding(run_dir: str | Path, command: str) -> Iterator[None]:
    """Hold `run_dir` for this process; RunDirBusy at once when another process holds it."""
    path = Path(run_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusy(f"{run_dir} is in use by another invocation ({_holder(path)}); wait for it to end, "
                             "or use another run_dir (run_dir=...)") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": platform.node(), "since": time.strftime("%H:%M:%S"),
                            "command": command}))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _holder(path: Path) -> str:
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']} since {h['since']}: {h['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its details are not readable"
