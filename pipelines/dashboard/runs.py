"""A run directory read into one Run record: every round's eval/metrics.json (with its stage times),
versus.json, policy/train_log.jsonl and generations manifest, and the run's config.yaml. Whatever cannot
be read is reported on stderr and left out: a half-written file of the round in progress must not take
the page down."""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.dashboard.values import at, finite


@dataclass(frozen=True)
class Run:
    dir: Path
    rounds: list[dict] = field(default_factory=list)    # metrics.json of rounds 1.., sorted by round
    versus: dict[int, dict] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    tokens_per_s: dict[int, float] = field(default_factory=dict)
    config: str | None = None       # config.yaml's text; None when the run has none
    name: str = ""
    initial: dict = field(default_factory=dict)   # round 0's metrics.json: the initial policy's exploitability

    @property
    def xs(self) -> list[int]:
        return [m["round"] for m in self.rounds]


def load_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    try:
        config = (run_dir / "config.yaml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        config = None
    initial = next((m for m in load_rounds(run_dir, first=0) if m["round"] == 0), {})
    return Run(run_dir, load_rounds(run_dir), load_versus(run_dir), load_train_log(run_dir),
               load_tokens_per_s(run_dir), config, run_dir.resolve().name or str(run_dir), initial)


def run_names(dirs: list[Path]) -> list[str]:
    """Each run's directory basename; where two share one, enough parent directories to tell them apart."""
    full = [d.resolve().parts for d in dirs]
    for depth in range(1, max(map(len, full), default=1) + 1):
        names = ["/".join(p[-depth:]) or str(d) for p, d in zip(full, dirs)]
        if len(set(names)) == len(names):
            return names
    return [f"{n} ({i + 1})" for i, n in enumerate(names)]


def _round_dirs(run_dir: Path, rel: str) -> list[tuple[int, Path]]:
    """(n, run_dir/round_<n>/rel) for every round directory holding rel, sorted by n."""
    found = []
    for f in run_dir.glob(f"round_*/{rel}"):
        name = f.relative_to(run_dir).parts[0]
        if re.fullmatch(r"round_\d+", name):
            found.append((int(name.split("_")[1]), f))
    return sorted(found)


def _read_json(f: Path) -> Any:
    """f's JSON, or None (reported)."""
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as e:
        print(f"dashboard: skipping {f}: {e}", file=sys.stderr)
        return None


def load_rounds(run_dir: Path, first: int = 1) -> list[dict]:
    """Every round's metrics from round `first` on, sorted by round; unreadable files are reported and
    skipped. Round 0's metrics.json (the initial policy: exploitability, no win rates) is read only with first=0."""
    rounds = []
    for n, f in _round_dirs(Path(run_dir), "eval/metrics.json"):
        m = _read_json(f) if n >= first else None
        if isinstance(m, dict):
            from pipelines.evaluate import read_timings, with_timings   # stage times, pairs/s: beside the metrics
            rounds.append({**with_timings(m, read_timings(f.parent)), "round": n})   # the directory is the truth
    return rounds


def load_versus(run_dir: Path) -> dict[int, dict]:
    """{n: round n's versus.json}: its win rate (with intervals) against every earlier round."""
    out = {}
    for n, f in _round_dirs(Path(run_dir), "eval/versus.json"):
        v = _read_json(f)
        if isinstance(v, dict):
            out[n] = v
    return out


def load_train_log(run_dir: Path) -> list[dict]:
    """Every trained round's per-step records (policy/train_log.jsonl), in round order, each with its
    `round` and a `global_step` that counts optimizer steps across rounds. Unparsable lines (the last
    one of a log being written) are skipped."""
    steps: list[dict] = []
    for n, f in _round_dirs(Path(run_dir), "policy/train_log.jsonl"):
        try:
            lines = f.read_text().splitlines()
        except OSError as e:
            print(f"dashboard: skipping {f}: {e}", file=sys.stderr)
            continue
        records = []
        for line in lines:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict):
                records.append(r)
        steps += [{**r, "round": n, "global_step": len(steps) + i + 1} for i, r in enumerate(records)]
    return steps


def load_tokens_per_s(run_dir: Path) -> dict[int, float]:
    """Generation throughput of each round's training samples, from its generations manifest."""
    out = {}
    for n, f in _round_dirs(Path(run_dir), "generations/manifest.json"):
        v = finite(at(_read_json(f), "extra", "tokens_per_s"))
        if v is not None:
            out[n] = v
    return out
