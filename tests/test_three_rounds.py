"""Issue-level check: three rounds of the default config, then `make dashboard`, seen in real Chromium;
metrics.json and the offline wandb run carry the same numbers."""
import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml

from fixtures_wandb import config, history
from pipelines.round import main
from pipelines.tracking import scalar_metrics

pytestmark = [pytest.mark.slow, pytest.mark.browser]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_local):
    run_dir = tmp_path_factory.mktemp("three_rounds")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        mp.delenv(var, raising=False)    # the driver puts them under run_dir
    try:
        assert main(["--round", "1-3", "--config", "configs/arena_sppo.yaml", f"run_dir={run_dir}"]) == 0
    finally:
        mp.undo()
    return run_dir


def _metrics(run_dir: Path, n: int) -> dict:
    return json.loads((run_dir / f"round_{n}/eval/metrics.json").read_text())


def test_metrics_json_and_wandb_carry_the_same_numbers(run):
    assert list((run / "wandb").glob("offline-run-*")), "no offline wandb run under the run directory"
    rows = history(run / "wandb")
    rounds = [r for r in rows if "round" in r]   # round-level metrics live on the `round` axis
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]   # round 0: the initial policy's exploitability
    logged = {r["round"]: r for r in rounds}
    assert logged[0]["exploitability/mean"] == _metrics(run, 0)["exploitability"]["mean"]
    for n in (1, 2, 3):
        expected = scalar_metrics(_metrics(run, n))
        assert len(expected) > 20 and "winrate_vs_initial/lc" in expected and "ratings/elo/round_0" in expected
        assert "exploitability/ci_high" in expected and "style_mix/none" in expected and "mean_quality" in expected
        for key, value in expected.items():
            got = logged[n].get(key)
            assert got is not None and (math.isclose(got, value, rel_tol=1e-12) or got == value), (n, key, got, value)
    # every optimizer step of train_log.jsonl once, on one train/step axis that continues across rounds
    steps = [sum(1 for _ in (run / f"round_{n}/policy/train_log.jsonl").open()) for n in (1, 2, 3)]
    assert all(steps)
    train = [r for r in rows if "train/step" in r]
    assert [r["train/step"] for r in train] == list(range(1, sum(steps) + 1))
    assert [r["train/round"] for r in train] == [1] * steps[0] + [2] * steps[1] + [3] * steps[2]
    assert config(run / "wandb")["train"] == yaml.safe_load((run / "config.yaml").read_text())["train"]


def test_make_dashboard_shows_three_rounds_in_chromium(run, tmp_path):
    from selenium.webdriver.common.by import By

    from test_dashboard import _driver, _screenshot, open_rendered

    (run / "dashboard.html").unlink()   # the page must come from `make dashboard`, not the driver's refresh
    subprocess.run(["make", "-s", "-o", "setup", "dashboard", f"RUN_DIR={run}"], cwd=REPO, check=True,
                   capture_output=True, timeout=120)
    page = run / "dashboard.html"
    drv = _driver()
    try:
        open_rendered(drv, page, rounds=3)
        shown = drv.execute_script("return document.getElementById('chart-winrate').data"
                                   ".find(t => t.name === 'vs initial (raw)').y")
        assert shown == pytest.approx([_metrics(run, n)["winrate_vs_initial"]["mean"] for n in (1, 2, 3)])
        assert len(drv.find_elements(By.CSS_SELECTOR, "#chart-ratings .point")) == 4
        ex = drv.execute_script("return document.getElementById('chart-exploitability').data"
                                ".find(t => t.name === 'exploitability').y")   # round 0 included: the start
        assert ex == pytest.approx([_metrics(run, n)["exploitability"]["mean"] for n in range(4)])
        styles = drv.execute_script("return document.getElementById('chart-style').data.map(t => [t.name, t.y])")
        assert {n: y for n, y in styles}["none"] == pytest.approx([_metrics(run, n)["style_mix"]["none"]
                                                                   for n in range(4)])
        assert drv.find_elements(By.CSS_SELECTOR, "#samples tr[data-round='3']")
        assert [e for e in drv.get_log("browser") if e["level"] == "SEVERE"] == []
        _screenshot(drv, tmp_path)
    finally:
        drv.quit()


def test_bf16_training_reaches_fp32s_win_rate(run, tmp_path_factory):
    """The default config in bf16 compute (fp32 masters) ends round 3 within 0.03 of fp32's oracle
    win rate against the initial policy: mixed precision changes rounding, not what is learned."""
    bf16 = tmp_path_factory.mktemp("three_rounds_bf16")
    assert main(["--round", "1-3", "--config", "configs/arena_sppo.yaml", f"run_dir={bf16}",
                 "model.dtype=bfloat16", "wandb.mode=disabled"]) == 0
    got, want = (_metrics(d, 3)["winrate_vs_initial"]["mean"] for d in (bf16, run))
    assert abs(got - want) <= 0.03, (got, want)
    train = json.loads((bf16 / "round_3/policy/manifest.json").read_text())["extra"]
    assert train["updated_fraction"] > 0.99


def test_exploitability_in_metrics_matches_a_brute_force_best_response_on_the_eval_samples(run):
    """Round 0 to 3's metrics.json exploitability, recomputed from the eval generations by a second route:
    enumerate candidate responses, ask the oracle about each against the policy's samples, keep the best."""
    import numpy as np

    from pipelines.stages import group_generations
    from selfplay.arena import TOPICS, oracle_probability, prompt_topic
    from test_exploitability import _candidates

    for n in range(4):
        m = _metrics(run, n)
        groups = group_generations(run / f"round_{n}/eval/generations")
        per = []
        for _, prompt, rows in groups:
            samples = [r["response"] for r in rows]
            topic_words = TOPICS[prompt_topic(prompt)]
            best = max(np.mean([oracle_probability(prompt, c, y) for y in samples])
                       for c in _candidates(prompt, topic_words))
            per.append(best - 0.5)
        ex = m["exploitability"]
        # the plug-in is this max of sample means (the estimate `mean` is cross-fitted: test_exploitability_estimator)
        assert ex["n"] == len(groups) and ex["plugin"] == pytest.approx(float(np.mean(per)), abs=1e-9), n
        assert ex["ci_low"] <= ex["mean"] <= ex["ci_high"]
        assert ex["plugin_ci_low"] <= ex["plugin"] <= ex["plugin_ci_high"]
        assert sum(m["style_mix"].values()) == pytest.approx(1.0) and math.isfinite(m["mean_quality"])
