"""The round driver's dashboard refresh, in a thread of its own: building RUN_DIR/dashboard.html overlaps what
the driver only waits on (the next round's stages, or the end of the Ray session)."""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

log = logging.getLogger("selfplay")


class DashboardRefresher:
    """One refresh at a time; a failed one is raised by the next refresh or by wait(). A class because the
    refresh in progress is state that outlives the call that started it."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def warm_up(self) -> None:
        """Plotly's imports and first-figure setup, while the driver waits on the first stage."""
        self._thread().submit(_warm)

    def refresh(self, run_dir: Path) -> None:
        self.wait()
        self._pending = self._thread().submit(_build, Path(run_dir))

    def wait(self) -> None:
        """Wait for the refresh in progress; its error, if it failed, is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """wait(), then end the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _thread(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard")
        return self._pool


def _build(run_dir: Path) -> None:
    """A page that cannot be written (a full disk) is a warning: the round it shows is finished and kept, and
    the page's writer left no partial file (pipelines/dashboard/page.py)."""
    try:
        from pipelines.dashboard import PageWriteError, build_dashboard
    except ImportError:
        return
    try:
        log.info("dashboard: %s", build_dashboard(run_dir))
    except PageWriteError as e:
        log.warning("warning: %s; the rounds are finished and kept (make dashboard writes it again)", e)


def _warm() -> None:
    with suppress(ImportError):
        from pipelines.dashboard import warm_up
        warm_up()
