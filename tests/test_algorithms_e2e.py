"""Every non-SPPO algorithm runs two tiny rounds end to end through the real driver and Ray path.

(SPPO has its own end-to-end file, tests/test_round_e2e.py.) One Ray session is shared by all cases.
"""
import json
import math

import pytest

from pipelines.round import main

pytestmark = pytest.mark.slow
ALGOS = ["inpo", "dno", "egpo", "apo", "dpo", "ipo"]
TINY = ["data.prompts_per_round=16", "data.eval_limit=16", "generation.k=4", "generation.max_new_tokens=16",
        "train.epochs=1", "wandb.mode=disabled"]


@pytest.fixture(scope="module", params=ALGOS)
def run(request, tmp_path_factory, ray_local):
    algo = request.param
    run_dir = tmp_path_factory.mktemp(algo)
    assert main(["--round", "1-2", "--config", f"configs/arena_{algo}.yaml", f"run_dir={run_dir}", *TINY]) == 0
    return algo, run_dir


def test_artifacts_exist(run):
    import datasets
    algo, run_dir = run
    for n in (1, 2):
        for d in ("generations", "judgments", "preferences", "policy", "eval"):
            assert (run_dir / f"round_{n}" / d / "manifest.json").exists(), (algo, n, d)
        assert (run_dir / f"round_{n}/policy/model.safetensors").exists()
        prefs = datasets.load_from_disk(str(run_dir / f"round_{n}/preferences"))
        assert len(prefs) > 0 and set(prefs["round"]) <= set(range(1, n + 1))


def test_metrics_are_finite(run):
    algo, run_dir = run
    m = json.loads((run_dir / "round_2/eval/metrics.json").read_text())
    assert m["round"] == 2
    for key in ("winrate_vs_initial", "winrate_vs_previous"):
        w = m[key]
        assert math.isfinite(w["mean"]) and 0 <= w["ci_low"] <= w["mean"] <= w["ci_high"] <= 1, (algo, key)
    assert math.isfinite(m["train_loss"]), algo


def test_algorithm_specific_traces(run):
    import datasets
    algo, run_dir = run
    prefs = datasets.load_from_disk(str(run_dir / "round_2/preferences"))
    train = json.loads((run_dir / "round_2/policy/manifest.json").read_text())["extra"]
    if algo == "dno":      # round 2 replays 30% of round 1's own pairs
        r1 = len(datasets.load_from_disk(str(run_dir / "round_1/preferences")))
        assert prefs["round"].count(1) == round(0.3 * r1)
    if algo == "egpo":     # half step on this round's pairs, full step on θ_{t+½}'s fresh pairs
        assert len(train["loss_curve"]) == 2 and train["pairs"] > len(prefs)
    if algo == "inpo":     # K = 4: a 4-player bracket, at most one pair per prompt
        assert len(prefs) <= 16 and len(set(prefs["prompt_id"])) == len(prefs)
