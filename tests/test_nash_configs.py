"""configs/nash/: one config per algorithm for the Nash arena's league (`make league CONFIGS=configs/nash`).
Every one loads, plans rounds 1 and 10, plays the same game from the same round 0 (so the league compares
them and copies round 0 instead of remaking it), and `python -m pipelines.league --configs configs/nash
--help` names exactly these entrants. In-process where possible, to stay fast."""
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.graph import round_parts
from pipelines.league import check_comparable, known_entrants
from pipelines.plan import main as plan

ROOT = Path(__file__).resolve().parents[1]
NASH = ROOT / "configs" / "nash"
ENTRANTS = ["apo", "dno", "dpo", "egpo", "inpo", "ipo", "nash_md", "sppo"]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)   # config paths and the arena assets are relative to the repository


def test_one_config_per_algorithm_named_for_it():
    assert known_entrants(NASH) == ENTRANTS
    for name in ENTRANTS:
        cfg = load_config(NASH / f"{name}.yaml")
        assert cfg.algorithm == name and cfg.run_dir == f"runs/nash/{name}"


@pytest.mark.parametrize("name", ENTRANTS)
def test_every_nash_config_plans_rounds_1_and_10(name, capsys):
    for n in (1, 10):
        rc = plan(["--config", f"configs/nash/{name}.yaml", "--round", str(n)])
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert f"✓ round {n} can run as configured" in out.out and out.err == ""


def test_entrants_play_one_game_from_one_round_zero():
    cfgs = [(n, load_config(NASH / f"{n}.yaml")) for n in ENTRANTS]
    check_comparable(cfgs)   # raises LeagueError naming the key they disagree on
    first = round_parts(asdict(cfgs[0][1]), 0)
    assert all(round_parts(asdict(c), 0) == first for _, c in cfgs[1:]), "round 0 would be remade per entrant"
    c = cfgs[0][1]
    assert (c.arena.quality_cap, c.arena.unstyled_penalty, c.model.policy) == (2, 1.0, "builtin:arena/topical")
    assert (c.eval.samples_per_prompt, c.data.eval_prompts) == (16, "builtin:arena/eval")


def test_league_help_lists_the_folders_entrants():
    out = subprocess.run([sys.executable, "-m", "pipelines.league", "--configs", "configs/nash", "--help"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("entrants"))
    assert line == f"entrants (configs/nash/<name>.yaml): {', '.join(ENTRANTS)}"   # not arena_cream, arena_nash, …
