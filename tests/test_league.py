"""`make league`: every algorithm from one start in its own run dir, exploitability per round, the oracle's
cross-play of the final policies, league.json and league.html, and a re-run that resumes.

The slow module fixture runs the real thing, `make league ALGOS=sppo,egpo ROUNDS=2` with small ARGS (real
Ray actors, checkpoints and files), twice: the second run must skip every stage. The refusals at the end
need no Ray and run in the fast suite.
"""
import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipelines.league import main

REPO = Path(__file__).resolve().parents[1]
ALGOS = ["sppo", "egpo"]
ROUNDS = 2
EVAL_PROMPTS = 24
# train.epochs=1 for both (EGPO accepts only 1); EGPO's online update: 4 extragradient iterations per round
ARGS = (f"data.prompts_per_round=24 data.eval_limit={EVAL_PROMPTS} generation.k=3 eval.samples_per_prompt=2 "
        "generation.max_new_tokens=16 train.epochs=1 wandb.mode=disabled egpo:train.steps_per_round=4")
STAGE_LINES = len(ALGOS) * (2 + 5 * ROUNDS)   # per entrant: round 0's init and evaluate, five stages a round


def _make(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-o", "setup", "league", f"ALGOS={','.join(ALGOS)}", f"ROUNDS={ROUNDS}",
                           f"RUN_DIR={run_dir}", f"ARGS={ARGS}"], cwd=REPO, capture_output=True, text=True,
                          timeout=3600)


def _manifest_mtimes(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("manifest.json")}


@pytest.fixture(scope="module")
def league(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("league")
    first = _make(run_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    return run_dir, first.stdout + first.stderr


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _metrics(run_dir: Path, algo: str, n: int) -> dict:
    return _json(run_dir / algo / f"round_{n}/eval/metrics.json")


@pytest.mark.slow
def test_every_entrant_and_round_equals_its_metrics(league):
    run_dir, _ = league
    lg = _json(run_dir / "league.json")
    assert [e["name"] for e in lg["entrants"]] == ALGOS and lg["rounds"] == ROUNDS
    for e in lg["entrants"]:
        assert e["algorithm"] == e["name"] and Path(e["run_dir"]) == run_dir / e["name"]
        assert [r["round"] for r in e["rounds"]] == list(range(ROUNDS + 1))
        for r in e["rounds"]:
            m = _metrics(run_dir, e["name"], r["round"])
            ex = m["exploitability"]
            assert r["exploitability"] == {k: ex[k] for k in ("mean", "ci_low", "ci_high", "n")}
            assert (r["quality_part"], r["style_part"]) == (ex["quality_part"], ex["style_part"])
            assert (r["plugin"], r["floor"]) == (ex["plugin"], ex["floor"])   # each figure with its floor
            assert r["style_mix"] == m["style_mix"] and r["mean_quality"] == m["mean_quality"]
            assert set(r["style_mix"]) == {"bold", "calm", "witty", "none"}
            assert math.isclose(sum(r["style_mix"].values()), 1.0)
            assert r["exploitability"]["n"] == EVAL_PROMPTS
            assert 0 <= r["exploitability"]["ci_low"] <= r["exploitability"]["mean"] <= r["exploitability"]["ci_high"]
            if r["round"] == 0:
                assert r["winrate_vs_initial"] is None and "winrate_vs_initial" not in m
            else:
                w = m["winrate_vs_initial"]
                assert r["winrate_vs_initial"] == {k: w[k] for k in ("mean", "ci_low", "ci_high", "n")}


@pytest.mark.slow
def test_round_zero_is_generated_once_and_shared(league):
    run_dir, log = league
    assert "round 0 of egpo copied from sppo" in log
    manifests = [_json(run_dir / a / "round_0/eval/manifest.json") for a in ALGOS]
    assert manifests[0]["key"] == manifests[1]["key"] and manifests[0]["output_hash"] == manifests[1]["output_hash"]
    assert [e["round0_same_as"] for e in _json(run_dir / "league.json")["entrants"]] == ["sppo", "sppo"]
    # egpo's own round-0 stages never ran: only sppo's logs have them
    assert (run_dir / "sppo/logs/round_0/evaluate.log").exists()
    assert not (run_dir / "egpo/logs/round_0").exists()


def _samples(run_dir: Path, algo: str, n: int) -> dict[str, tuple[str, list[str]]]:
    from pipelines.stages import group_generations
    return {pid: (p, [r["response"] for r in rs])
            for pid, p, rs in group_generations(run_dir / algo / f"round_{n}/eval/generations")}


@pytest.mark.slow
def test_cross_play_matrix(league):
    from selfplay.arena import ArenaRules, oracle_probability

    run_dir, _ = league
    lg = _json(run_dir / "league.json")
    xp = lg["cross_play"]
    assert xp["policies"] == ["initial", "sppo/round_2", "egpo/round_2"]
    w = xp["winrate"]
    for i in range(3):
        assert w[i][i]["mean"] == pytest.approx(0.5, abs=1e-12)
        for j in range(3):
            assert w[i][j]["mean"] + w[j][i]["mean"] == pytest.approx(1.0, abs=1e-12)
            assert w[i][j]["ci_low"] <= w[i][j]["mean"] <= w[i][j]["ci_high"] and w[i][j]["n"] == EVAL_PROMPTS
    # against the initial policy, the same number the evaluate stage's oracle judge wrote into metrics.json
    for i, algo in enumerate(ALGOS, start=1):
        assert w[i][0]["mean"] == pytest.approx(_metrics(run_dir, algo, ROUNDS)["winrate_vs_initial"]["mean"], abs=1e-9)
    # sppo vs egpo recomputed from the raw eval samples with the oracle, pair by pair
    rules = ArenaRules(**lg["arena"])
    a, b = _samples(run_dir, "sppo", ROUNDS), _samples(run_dir, "egpo", ROUNDS)
    direct = np.mean([np.mean([oracle_probability(a[i][0], x, y, rules) for x in a[i][1] for y in b[i][1]]) for i in a])
    assert w[1][2]["mean"] == pytest.approx(direct, abs=1e-12)
    assert any(abs(w[i][j]["mean"] - 0.5) > 0.01 for i in range(3) for j in range(3))   # the policies did change


@pytest.mark.slow
def test_rankings_and_mean_cross_play(league):
    run_dir, _ = league
    lg = _json(run_dir / "league.json")
    by_name = {e["name"]: e for e in lg["entrants"]}
    final = {n: e["rounds"][-1]["exploitability"]["mean"] for n, e in by_name.items()}
    assert lg["by_exploitability"] == sorted(final, key=lambda n: (final[n], n))
    w = lg["cross_play"]["winrate"]
    for i, name in enumerate(ALGOS, start=1):
        assert by_name[name]["mean_crossplay"] == pytest.approx(np.mean([w[i][j]["mean"] for j in range(3) if j != i]))
    mean_x = {n: e["mean_crossplay"] for n, e in by_name.items()}
    assert lg["by_crossplay"] == sorted(mean_x, key=lambda n: (-mean_x[n], n))


@pytest.mark.slow
def test_page_is_self_contained(league):
    run_dir, _ = league
    page = (run_dir / "league.html").read_text()
    for cid in ("chart-league-exploitability", "chart-league-crossplay", "chart-league-style", "league-ranking"):
        assert f"id=\"{cid}\"" in page or f"id='{cid}'" in page, cid
    assert "<script src=" not in page and "Plotly" in page   # plotly.js inlined: opens with no network
    assert "floor: what an exact Nash policy reads" in page and "Floor: an exact Nash policy reads" in page
    table = page[page.index("league-ranking"):]
    lg = _json(run_dir / "league.json")
    assert [table.index(f"<td>{n}</td>") for n in lg["by_exploitability"]] == \
        sorted(table.index(f"<td>{n}</td>") for n in lg["by_exploitability"])


@pytest.mark.slow
def test_rerun_resumes_without_running_a_stage(league):
    run_dir, _ = league
    before = _manifest_mtimes(run_dir)
    assert len(before) == len(ALGOS) * (2 + 5 * ROUNDS)
    report = (run_dir / "league.json").read_text()
    again = _make(run_dir)
    assert again.returncode == 0, again.stderr[-5000:]
    out = again.stdout + again.stderr
    assert out.count("skipped (manifest matches)") == STAGE_LINES and " done in " not in out
    assert _manifest_mtimes(run_dir) == before
    assert json.loads((run_dir / "league.json").read_text()) == json.loads(report)


# ------------------------------------------------------------------------------ refusals (no Ray, fast)

def _refused(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("\n") == 0
    return err


def test_unknown_algorithm_is_refused(tmp_path, capsys):
    err = _refused(capsys, "--algos", "sppo,nope", "--run-dir", str(tmp_path))
    assert "unknown algorithm 'nope'" in err and "egpo" in err
    assert not any(tmp_path.iterdir())   # nothing ran


def test_a_config_off_the_arena_is_refused(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi", "prompt_id": "a"}\n{"prompt": "yo", "prompt_id": "b"}\n')
    err = _refused(capsys, "--algos", "sppo", "--rounds", "1", "--run-dir", str(tmp_path / "l"), "judge.name=pairrm",
                   "judge.model=llm-blender/PairRM", f"data.eval_prompts={prompts}", f"data.train_prompts={prompts}",
                   "data.prompts_per_round=1")
    assert "sppo" in err and "does not play the arena" in err


@pytest.mark.parametrize("args, expected", [
    (["egpo:train.steps_per_round=4"], "'egpo' is not in ALGOS"),
    (["run_dir=x"], "the league sets run_dir"),
    (["train.steps_per_round=4"], "sppo: train.steps_per_round=4"),   # a key one entrant refuses
])
def test_bad_overrides_are_refused(tmp_path, capsys, args, expected):
    assert expected in _refused(capsys, "--algos", "sppo,dpo", "--rounds", "1", "--run-dir", str(tmp_path), *args)


def test_entrants_must_play_one_game(tmp_path, capsys):
    err = _refused(capsys, "--algos", "sppo,dpo", "--rounds", "1", "--run-dir", str(tmp_path), "dpo:seed=3")
    assert "disagree on seed" in err and "sppo: 0" in err and "dpo: 3" in err


def test_too_many_rounds_for_the_prompts_is_refused_up_front(tmp_path, capsys):
    assert "round 4 has no fresh prompts" in _refused(capsys, "--algos", "sppo", "--rounds", "4", "--run-dir",
                                                       str(tmp_path))


def test_scoped_overrides_reach_only_their_entrant():
    from pipelines.league import split_overrides
    per = split_overrides(["train.lr=1e-4", "egpo:train.steps_per_round=4", "data.train_prompts=a:b"], ["sppo", "egpo"])
    assert per == {"sppo": ["train.lr=1e-4", "data.train_prompts=a:b"],
                   "egpo": ["train.lr=1e-4", "train.steps_per_round=4", "data.train_prompts=a:b"]}


# ------------------------------------------------------------------------------ the page in a browser (no Ray)

def _hand_built_league():
    """Two entrants over two rounds with made-up numbers: what the page draws does not need real runs."""
    from pipelines.league import CrossPlay, EntrantRecord, Estimate, League, RoundRecord
    from selfplay.arena import ArenaRules

    def rounds(ex: list[float]) -> list:
        mix = {"bold": 0.2, "calm": 0.3, "witty": 0.1, "none": 0.4}
        return [RoundRecord(n, Estimate(e, e - 0.01, e + 0.01, 96), e / 2, e / 4,
                            None if n == 0 else Estimate(0.6, 0.55, 0.65, 96), mix, -1.0) for n, e in enumerate(ex)]
    half = Estimate(0.5, 0.5, 0.5, 96)
    w = [[half, Estimate(0.3, 0.25, 0.35, 96), Estimate(0.2, 0.15, 0.25, 96)],
         [Estimate(0.7, 0.65, 0.75, 96), half, Estimate(0.4, 0.35, 0.45, 96)],
         [Estimate(0.8, 0.75, 0.85, 96), Estimate(0.6, 0.55, 0.65, 96), half]]
    entrants = [EntrantRecord("sppo", "sppo", "r/sppo", "sppo", rounds([0.48, 0.45, 0.44]), 0.55),
                EntrantRecord("egpo", "egpo", "r/egpo", "sppo", rounds([0.48, 0.40, 0.30]), 0.7)]
    return League(2, 0, ArenaRules(), entrants, CrossPlay(["initial", "sppo/round_2", "egpo/round_2"], w),
                  ["egpo", "sppo"], ["egpo", "sppo"])


@pytest.mark.browser
def test_page_renders_in_chromium(tmp_path):
    from pipelines.league_page import build_league_page
    from test_dashboard import _driver, _trace, open_rendered

    page = build_league_page(_hand_built_league(), tmp_path / "league.html")
    drv = _driver()
    try:
        open_rendered(drv, page, 2, ("chart-league-exploitability", "chart-league-crossplay", "chart-league-style"))
        egpo = _trace(drv, "chart-league-exploitability", "egpo")
        assert egpo["x"] == [0, 1, 2] and egpo["y"] == pytest.approx([0.48, 0.40, 0.30])
        heat = drv.execute_script("return document.getElementById('chart-league-crossplay').data[0]")
        assert heat["z"][2][1] == pytest.approx(0.6) and heat["y"] == ["initial", "sppo/round_2", "egpo/round_2"]
        assert drv.execute_script("return window.LEAGUE_ENTRANTS") == ["sppo", "egpo"]
    finally:
        drv.quit()


def test_a_full_disk_leaves_the_old_league_page(tmp_path, monkeypatch):
    from pipelines.dashboard import PageWriteError
    from pipelines.league_page import build_league_page
    from test_dashboard import full_disk

    out = build_league_page(_hand_built_league(), tmp_path / "league.html")
    old = out.read_bytes()
    disk = full_disk(monkeypatch)
    said = f"cannot write the league page {out}: No space left on device"
    with pytest.raises(PageWriteError, match=f"^{re.escape(said)}$"):
        build_league_page(_hand_built_league(), out)
    assert len(disk.seen) == 1 and disk.seen[0][1] > 0            # it was half written ...
    assert [p.name for p in tmp_path.iterdir()] == ["league.html"] and out.read_bytes() == old   # ... then removed
