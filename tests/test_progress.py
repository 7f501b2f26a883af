"""What the console bars print on a real terminal (a pseudo-terminal this test opens and sizes): the driver's
live bar redrawn in place where the terminal reports its size, and plain lines where it reports 0 columns,
where tqdm by itself draws nothing at all. No Ray: the board's states come from a stand-in poll."""
import fcntl
import os
import re
import select
import struct
import sys
import termios
import threading
from contextlib import contextmanager

import pytest

from selfplay import progress


@contextmanager
def terminal(columns: int, rows: int):
    """A pty sized columns × rows; yields (its slave as a text file, a function returning what it received)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    f = open(slave, "w", encoding="utf-8")
    got = b""

    def received() -> str:
        nonlocal got
        f.flush()
        while select.select([master], [], [], 0.2)[0]:
            got += os.read(master, 65536)
        return got.decode().replace("\r\n", "\n")   # the pty turns "\n" into "\r\n"; a lone "\r" is a redraw

    try:
        yield f, received
    finally:
        f.close()
        os.close(master)


def state(n: int, total: int = 10) -> dict:
    return {"desc": "generate", "n": n, "total": total, "unit": "it", "postfix": "", "closed": False}


def draw(states: list[list[dict]]) -> None:
    """The driver's drawing thread, fed `states` one poll at a time, stopped once it has shown them all."""
    left, shown_all, stop = list(states), threading.Event(), threading.Event()

    def poll() -> list[dict]:
        if len(left) == 1:
            shown_all.set()
        return left.pop(0) if len(left) > 1 else left[0]

    t = threading.Thread(target=progress._draw, args=(poll, "round 1 generate", stop))
    t.start()
    assert shown_all.wait(10), "the drawer stopped polling"
    stop.set()
    t.join(10)


def counts(text: str) -> list[str]:
    """The distinct n/total the bar showed, in order."""
    seen = [m.group(0) for m in re.finditer(r"\d+/\d+(?= \[)", text)]
    return [x for i, x in enumerate(seen) if i == 0 or seen[i - 1] != x]


@pytest.mark.parametrize(("columns", "rows", "size"), [(0, 0, None), (0, 24, None), (80, 0, None), (100, 30, (100, 30))])
def test_terminal_size_is_none_where_the_terminal_reports_none(columns, rows, size):
    with terminal(columns, rows) as (f, _):
        assert progress.terminal_size(f) == size


def test_terminal_size_of_a_file_or_a_closed_stream_is_none(tmp_path):
    with open(tmp_path / "log", "w") as f:
        assert progress.terminal_size(f) is None
    assert progress.terminal_size(f) is None   # closed: isatty raises ValueError


def test_the_live_bar_on_a_terminal_of_zero_columns_prints_plain_lines(monkeypatch):
    with terminal(0, 0) as (f, received):
        monkeypatch.setattr(sys, "stderr", f)
        monkeypatch.setattr(progress, "_LINE_EVERY_S", 0.05)   # 10 s in a round
        draw([[], [state(3)], [state(7)], [state(10)]])
        text = received()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n"), repr(text)      # no redraws: every frame a line of its own
    assert lines[0] == "round 1 generate [00:00]"                     # the stage's line, at once
    assert all(re.fullmatch(r"round 1 generate( \[\d\d:\d\d\]|: +\d+%\|.{10}\| \d+/10 \[.*\])", ln) for ln in lines), lines
    assert counts(text) == ["3/10", "7/10", "10/10"]
    assert re.search(r"^round 1 generate:  30%\|███ {7}\| 3/10 \[", text, re.M), lines


def test_the_live_bar_on_a_sized_terminal_is_redrawn_in_place(monkeypatch):
    with terminal(100, 30) as (f, received):
        monkeypatch.setattr(sys, "stderr", f)
        monkeypatch.setattr(progress, "_PUSH_EVERY_S", 0.05)
        draw([[], [state(3)], [state(7)], [state(10)]])
        text = received()
    frames = [x.rstrip() for x in text.split("\r") if x.strip()]
    assert "\n" not in text and frames[0] == "round 1 generate [00:00]", repr(text)
    assert counts(text) == ["3/10", "7/10", "10/10"]
    bars = [x for x in frames if "|" in x]
    assert bars and all(len(x) == 99 for x in bars), frames          # fitted to the width (one column spare)
    assert any(re.match(r"round 1 generate:  70%\|█+", x) for x in bars), frames


def test_a_bar_of_this_process_on_a_terminal_of_zero_columns_prints_its_first_and_last_state(monkeypatch):
    with terminal(0, 0) as (f, received):
        monkeypatch.setattr(sys, "stderr", f)
        with progress.bar(total=4, desc="judge") as b:
            for _ in range(4):
                b.update()
        text = received()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 2, repr(text)
    assert lines[0].startswith("judge:   0%|          | 0/4 [00:00<?")
    assert lines[1].startswith("judge: 100%|██████████| 4/4 [00:00<00:00")
