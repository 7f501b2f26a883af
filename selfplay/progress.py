"""Console output of a round: progress bars, and where a stage's own output goes.

`bar(total, desc)` is the one way code here makes a progress bar. It is a plain tqdm on this
process's stderr. Inside a Ray worker whose driver draws a live bar (see `live_bar`), the bar also
sends its state to a small named actor (the board) that the driver polls, so the terminal shows one
bar for the running stage while the worker's stderr (the stage log) keeps the bar's text. A terminal
that reports no size (0 columns) gets a bar's states as plain lines, as a log does (`terminal_size`).

Why not `ray.experimental.tqdm_ray`: it carries bar states as magic lines on the worker's stdout,
which reach the driver only through Ray's log streaming (log_to_driver=True) from Ray's own worker
log files. A quiet round turns that streaming off and points the worker's stdout at the stage's log
file, so tqdm_ray's states would never arrive. The board is the same idea with its own channel.

`to_log(path)` sends everything a process writes to `path`, at the file-descriptor level (so C
libraries, warnings and child processes such as vLLM's engine are caught too), and turns the
libraries' own bars off.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

BOARD = "selfplay-progress"        # the board actor's name, in the driver's namespace
STAGE_LOG = "SELFPLAY_STAGE_LOG"   # env var: the running stage's log file (for workers it starts)
_PUSH_EVERY_S = 0.5
_LINE_EVERY_S = 10.0   # a bar drawn as plain lines (a stage log, a terminal of no size): a line at most this often

# Read by the libraries when they are imported, and inherited by child processes (vLLM's engine).
_QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "DATASETS_VERBOSITY": "error",
              "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
              "VLLM_LOGGING_LEVEL": "WARNING",   # its warnings still land in the log
              "TQDM_DISABLE": "1"}               # bars of child processes (tqdm reads it at import)


# ---------------------------------------------------------------- worker side

def bar(total: int | None = None, desc: str = "", unit: str = "it", *, disable: bool = False):
    """A tqdm progress bar (update, set_postfix, close, `with`) for this process's work."""
    return make_bar(total=total, desc=desc, unit=unit, disable=disable)


def make_bar(*args, **kwargs) -> tqdm:
    """`bar` with tqdm's own signature, for libraries that take a tqdm factory (vLLM's use_tqdm)."""
    to_terminal = terminal_size(sys.stderr) is not None
    # In a file (a stage log) a bar is read later, top to bottom: a line per redraw, at most every
    # 10 s, and the final state kept. A terminal that reports no size (tqdm would draw nothing) gets the same.
    kwargs = {"file": sys.stderr if to_terminal else _Lines(sys.stderr), "leave": not to_terminal,
              "mininterval": 0.1 if to_terminal else _LINE_EVERY_S, **kwargs}
    board = None if kwargs.get("disable") else _board()
    return _Relayed(*args, board=board, **kwargs) if board is not None else tqdm(*args, **kwargs)


def terminal_size(f) -> tuple[int, int] | None:
    """(columns, rows) of the terminal f writes to, or None: f is no terminal, or one that reports no size.

    Why None for 0 columns or rows (a serial console, a pty nobody sized, some CI runners): tqdm takes
    the size as is, reads 0 rows as every line being off screen, and draws nothing at all. Such a
    terminal gets what a file gets instead: plain lines."""
    try:
        if not f.isatty():
            return None
        columns, rows = os.get_terminal_size(f.fileno())
    except (AttributeError, OSError, ValueError):   # no fileno, a closed file, or no size to ask for
        return None
    return (columns, rows) if columns > 0 and rows > 0 else None


class _Lines:
    """A file for tqdm that writes each redraw ("\\r" + bar + padding) as a line of its own."""

    def __init__(self, f) -> None:
        self.f, self.last = f, ""

    def write(self, s: str) -> None:
        s = s.strip("\r\n ")
        if s and s != self.last:   # closing redraws the final state once more
            self.f.write(s + "\n")
            self.last = s

    def __getattr__(self, name):   # flush, fileno, encoding: the real file's
        return getattr(self.f, name)


def _board():
    """The driver's board when this process runs in Ray and the driver draws bars, else None."""
    if "ray" not in sys.modules:       # never started Ray: a script or a test
        return None
    import ray
    if not ray.is_initialized():
        return None
    try:
        return ray.get_actor(BOARD)
    except Exception:  # noqa: BLE001  no board: the driver draws no bars (-v, or not a terminal)
        return None


class _Relayed(tqdm):
    """A tqdm that also sends its state to the driver's board (at most every 0.5 s, and on close)."""

    def __init__(self, *args, board, **kwargs) -> None:
        self.board, self.key, self._sent = board, uuid.uuid4().hex, 0.0
        super().__init__(*args, **kwargs)
        self._push(force=True)

    def update(self, n: float = 1):
        shown = super().update(n)
        self._push()
        return shown

    def close(self) -> None:
        was_closed = getattr(self, "disable", True)   # tqdm marks a closed bar disabled
        super().close()
        if not was_closed:
            self._push(force=True, closed=True)

    def _push(self, force: bool = False, closed: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._sent < _PUSH_EVERY_S:
            return
        self._sent = now
        state = {"desc": self.desc, "n": self.n, "total": self.total, "unit": self.unit,
                 "postfix": self.postfix or "", "closed": closed}
        try:
            self.board.put.remote(self.key, state)   # fire and forget: never wait on the console
        except Exception:  # noqa: BLE001  a missing console must not stop the work
            pass


# ---------------------------------------------------------------- driver side

class _Board:
    """The latest state of each bar opened in the running stage; the driver polls it."""

    def __init__(self) -> None:
        self.bars: dict[str, dict] = {}

    def put(self, key: str, state: dict) -> None:
        self.bars[key] = state

    def reset(self) -> None:
        self.bars = {}

    def snapshot(self) -> list[dict]:
        return list(self.bars.values())


@contextmanager
def live_bar(label: str) -> Iterator[None]:
    """While the block runs, draw one bar on stderr for the bars the stage's workers open.

    Only on a terminal: redrawn bars in a captured stream are just noise."""
    if not sys.stderr.isatty():
        yield
        return
    import ray
    board = ray.remote(num_cpus=0)(_Board).options(name=BOARD, get_if_exists=True).remote()
    ray.get(board.reset.remote())
    stop = threading.Event()
    drawer = threading.Thread(target=_draw, args=(lambda: ray.get(board.snapshot.remote(), timeout=5), label, stop),
                              daemon=True)
    drawer.start()
    try:
        yield
    finally:
        stop.set()
        drawer.join()


def _draw(poll: Callable[[], list[dict]], label: str, stop: threading.Event) -> None:
    """Until stop: the bars' states from poll, shown as one bar redrawn in place every 0.5 s or, on a
    terminal that reports no size, as a plain line at most every 10 s (the label's line at once)."""
    sized = terminal_size(sys.stderr) is not None
    shown = tqdm(desc=label, leave=False, file=sys.stderr if sized else _Lines(sys.stderr),
                 bar_format="{desc} [{elapsed}]")
    while not stop.wait(_PUSH_EVERY_S if sized else _LINE_EVERY_S):
        try:
            states = poll()
        except Exception:  # noqa: BLE001  a slow board skips a frame
            continue
        _show(shown, label, [s for s in states if not s["closed"]])
    shown.close()


def _show(shown: tqdm, label: str, live: list[dict]) -> None:
    """Several open bars (engines of one stage) add up; the newest names what runs."""
    totals = [s["total"] for s in live]
    if live and None not in totals:
        newest = live[-1]
        shown.bar_format, shown.unit = None, newest["unit"]
        shown.total, shown.n = sum(totals), sum(s["n"] for s in live)
        what = "" if newest["desc"] in label else f": {newest['desc']}"   # "round 1 train", not "...: train"
        shown.set_description_str(label + what, refresh=False)
        shown.set_postfix_str(newest["postfix"], refresh=False)
    else:
        shown.bar_format, shown.total = "{desc} [{elapsed}]", None
        shown.set_description_str(label, refresh=False)
    shown.refresh()


# ---------------------------------------------------------------- where output goes

def part_log(path: str | Path, i: int) -> str:
    """The log of part i of a stage (a fan-out actor, a training rank): train.log -> train.1.log."""
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{i}{p.suffix}"))


@contextmanager
def to_log(path: str | Path | None) -> Iterator[None]:
    """Append everything this process (and its children) writes to `path` while the block runs,
    with the libraries' bars off. None leaves output alone (-v: stream everything). An exception
    is written to the log before it propagates, so the log ends with the stage's traceback."""
    if path is None:
        yield
        return
    header, t0 = Path(path).stem, time.time()
    with _fds_to(path), _env({**_QUIET_ENV, STAGE_LOG: str(path)}):
        _mark(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {header} (pid {os.getpid()})")
        quiet_libraries()
        try:
            yield
        except BaseException:
            traceback.print_exc()
            _mark(f"{header} failed after {time.time() - t0:.1f}s")
            raise
        _mark(f"{header} done in {time.time() - t0:.1f}s")


def _mark(line: str) -> None:
    """A log's own line, straight to fd 2: Ray Train wraps sys.stdout, and would write it twice."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(2, f"==== {line}\n".encode())


@contextmanager
def _fds_to(path: str | Path) -> Iterator[None]:
    """Point fds 1 and 2 at `path` (appending), then back."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def quiet_libraries() -> None:
    """Bars and advisory chatter off in the libraries this process has already imported (the env
    vars of to_log cover those imported later). Not undone: a warm actor (pipelines/actors.py) serves one
    Ray session, whose stages all log to files (or, under -v, none do), so the next stage wants them off too."""
    mods = sys.modules
    if "transformers" in mods:
        from transformers.utils import logging as tlog
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    if "huggingface_hub" in mods:
        from huggingface_hub.utils import disable_progress_bars
        disable_progress_bars()
    if "datasets" in mods:
        from datasets.utils import disable_progress_bars as no_bars
        from datasets.utils import logging as dlog
        no_bars()
        dlog.set_verbosity_error()


@contextmanager
def stage_logging() -> Iterator[None]:
    """The project's INFO lines (e.g. training's per-epoch losses) go to stderr: a worker process
    has no logging set up, and without this only warnings would reach the log."""
    log = logging.getLogger("selfplay")
    if log.handlers or logging.getLogger().handlers:
        yield
        return
    handler = logging.StreamHandler()   # sys.stderr, i.e. fd 2: the log file under to_log
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    level, log.level = log.level, logging.INFO
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
