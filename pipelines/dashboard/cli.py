"""`make dashboard [RUN_DIR=…] [OUT=…]`, i.e. `python -m pipelines.dashboard --run-dir DIR…`: one run's
page, or with several run dirs one page comparing them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.dashboard.compare import build_comparison
from pipelines.dashboard.page import PageWriteError
from pipelines.dashboard.run_page import build_dashboard


def _run_dirs(values: list[str] | None) -> list[Path]:
    """--run-dir values: each may also be a space-separated list (`make dashboard RUN_DIR="a b"`), unless
    it names an existing path as it stands."""
    dirs: list[Path] = []
    for v in values or ["runs/arena"]:
        dirs += [Path(v)] if Path(v).exists() or not v.split() else [Path(w) for w in v.split()]
    return dirs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Write RUN_DIR/dashboard.html from every round's metrics; with several run dirs, one page "
                    "comparing them.")
    ap.add_argument("--run-dir", nargs="+", action="extend", metavar="RUN_DIR",
                    help="one or more run dirs (repeatable; a space-separated list works too); default runs/arena")
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write the page; default RUN_DIR/dashboard.html for one run and, for several, "
                         "dashboard.html in the first run dir's parent")
    args = ap.parse_args(argv)
    dirs = _run_dirs(args.run_dir)
    if missing := [str(d) for d in dirs if not d.is_dir()]:
        ap.error(f"no such run dir: {', '.join(missing)}")
    try:
        print(build_dashboard(dirs[0], args.out) if len(dirs) == 1 else build_comparison(dirs, args.out))
    except PageWriteError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None

