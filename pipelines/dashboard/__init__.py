"""`make dashboard [RUN_DIR=…]` or `python -m pipelines.dashboard --run-dir DIR`: one self-contained
DIR/dashboard.html from every DIR/round_<n>/eval/metrics.json, each round's versus.json and
policy/train_log.jsonl, and the run's config.yaml.

Several runs (`make dashboard RUN_DIR="runs/a runs/b"`, or `--run-dir A B`) give one comparison page
instead: the runs' curves overlaid, one trace per run named by its directory's basename, and the
config keys that differ. It is written to --out, by default dashboard.html in the first run dir's
parent (runs/dashboard.html above); a single run's page goes to RUN_DIR/dashboard.html unless --out.

plotly.js is inlined from the installed plotly package, so the page opens from disk with no server
and no network. `make iterate` rebuilds it after each round. Every key but `round` may be missing
from a round's metrics (older runs wrote fewer): charts show what exists and leave gaps elsewhere.

The package, by seam: runs.py reads a run dir into a Run record (values.py reads one metric value, whatever
shape it is in); plots.py holds the pieces every chart is drawn with; figures.py and arena_figures.py one
run's charts, tables.py the rest of its page, run_page.py puts them together; compare.py does the same for
several runs; page.py is the HTML shell every page shares, with its safe write; cli.py is `make dashboard`.
"""
from pipelines.dashboard.cli import main
from pipelines.dashboard.compare import COMPARE_CHARTS, build_comparison
from pipelines.dashboard.figures import CHARTS
from pipelines.dashboard.page import PageWriteError
from pipelines.dashboard.run_page import build_dashboard, warm_up

__all__ = ["CHARTS", "COMPARE_CHARTS", "PageWriteError", "build_comparison", "build_dashboard", "main", "warm_up"]
