"""One tiny round per model-based judge (llm, self_reward, cream) through the real driver and Ray path.

The eval judge stays the oracle (fast); the training judge's diagnostics must reach the judgments
manifest and the round's metrics.json. One Ray session is shared by all cases.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipelines.round import main

pytestmark = pytest.mark.slow
TINY = ["data.prompts_per_round=16", "data.eval_limit=16", "generation.k=4", "generation.max_new_tokens=16",
        "train.epochs=1", "wandb.mode=disabled", "eval_judge.name=oracle"]
PAIRS = 16 * 4 * 3          # ordered pairs: 16 prompts, K = 4


def _arena_policy() -> str:
    from selfplay.data import resolve_builtin
    return str(Path(resolve_builtin("builtin:arena")).resolve())


CASES = {
    "llm": ("configs/arena_sppo.yaml", lambda: ["judge.name=llm", f"judge.model={_arena_policy()}"]),
    "self_reward": ("configs/arena_sppo.yaml", lambda: ["judge.name=self_reward", "judge.score_mode=logprobs"]),
    "cream": ("configs/arena_cream.yaml", lambda: []),
}


@pytest.fixture(scope="module", params=list(CASES))
def run(request, tmp_path_factory, ray_local):
    name = request.param
    config, overrides = CASES[name]
    run_dir = tmp_path_factory.mktemp(name)
    assert main(["--round", "1", "--config", config, f"run_dir={run_dir}", *TINY, *overrides()]) == 0
    manifest = json.loads((run_dir / "round_1/judgments/manifest.json").read_text())["extra"]
    from pipelines.evaluate import read_metrics
    metrics = read_metrics(run_dir / "round_1/eval")   # judge pairs/s is in its timings.json
    return name, run_dir, manifest, metrics


def test_round_completes_with_the_judge(run):
    import datasets
    name, run_dir, _, m = run
    judged = datasets.load_from_disk(str(run_dir / "round_1/judgments"))
    assert len(judged) == 16 and set(judged["judge"]) == {name}
    prefs = datasets.load_from_disk(str(run_dir / "round_1/preferences"))
    assert len(prefs) > 0
    assert (run_dir / "round_1/policy/model.safetensors").exists()
    assert math.isfinite(m["train_loss"]) and m["eval_judge"]["name"] == "oracle"
    w = m["winrate_vs_initial"]
    assert 0 <= w["ci_low"] <= w["mean"] <= w["ci_high"] <= 1


def test_judge_diagnostics_reach_the_manifest_and_metrics(run):
    name, _, manifest, m = run
    j = m["judge"]
    assert j["judge"] == name == manifest["judge"]
    for key in ("pairs", "pairs_per_s", "abstain_rate", "position_disagreement_rate", "mean_winner_chars",
                "mean_loser_chars"):
        assert key in j and key in manifest, key
    assert j["pairs"] == PAIRS and j["pairs_per_s"] > 0
    assert j["abstain_rate"] == 0.0          # every judge here is soft or scored: nothing abstains
    if name == "llm":                        # both orders asked for every unordered pair
        assert j["both_orders_asked"] == PAIRS // 2 and j["answers"] == PAIRS and j["unparseable"] == 0
        assert j["soft_answers"] == PAIRS and 0 <= j["position_disagreement_rate"] <= 1
    if name == "self_reward":
        assert j["score_mode"] == "logprobs" and j["parse_failures"] == 0 and j["parse_failure_rate"] == 0.0
        assert 0 < j["responses_scored"] <= 16 * 4 and 0 <= j["mean_score"] <= 5
    if name == "cream":   # round 1 starts from the SFT model M1 (init.sft_data) and compares it with the base M0
        assert j["reward"] == "logratio"                    # r = log π_M1 − log π_M0
        assert j["previous_reward"] == "length_normalised_ll"   # M0 is its own reference
        assert j["models_loaded"] >= 2 and j["consistency_computed"] == 16
        assert j["consistency_mean"] < 1.0                  # two different models: not plain DPO


def test_pair_targets_are_the_judged_consistency(run):
    """Each pair's soft label is its prompt's consistency rate: CREAM's C (M1 against M0 in round 1, some
    prompts below 1), 1 for every other judge."""
    import datasets
    name, run_dir, _, _ = run
    judged = datasets.load_from_disk(str(run_dir / "round_1/judgments"))
    prefs = datasets.load_from_disk(str(run_dir / "round_1/preferences"))
    consistency = dict(zip(judged["prompt_id"], judged["consistency"]))
    assert [consistency[p] for p in prefs["prompt_id"]] == prefs["target"]
    if name == "cream":
        assert min(prefs["target"]) < 1.0
        assert (run_dir / "round_0/base/model.safetensors").exists()   # M0 kept beside the SFT model
    else:
        assert set(prefs["target"]) == {1.0}


@pytest.fixture(scope="module")
def cream_two_rounds(tmp_path_factory, ray_local):
    run_dir = tmp_path_factory.mktemp("cream2")
    assert main(["--round", "1-2", "--config", "configs/arena_cream.yaml", f"run_dir={run_dir}", *TINY]) == 0
    return run_dir


def test_cream_round_two_ranks_with_the_previous_model(cream_two_rounds):
    """Round 2 scores with π_1 and ranks again with π_0 (the SFT model M1), both implicit rewards against the
    base M0: C is computed per prompt."""
    import datasets
    j = json.loads((cream_two_rounds / "round_2/eval/metrics.json").read_text())["judge"]
    assert j["models_loaded"] >= 2 and j["consistency_computed"] == 16 and j["consistency_filled_with_mean"] == 0
    assert j["reward"] == j["previous_reward"] == "logratio"   # π_1 and π_0 = M1, each against the base M0
    judged = datasets.load_from_disk(str(cream_two_rounds / "round_2/judgments"))
    c = np.asarray(judged["consistency"])
    assert ((0 <= c) & (c <= 1)).all() and j["consistency_mean"] == pytest.approx(c.mean())
    assert len(set(c.tolist())) > 1      # per-prompt rates, not one number copied everywhere
    prefs = datasets.load_from_disk(str(cream_two_rounds / "round_2/preferences"))
    by_id = dict(zip(judged["prompt_id"], judged["consistency"]))
    assert [by_id[p] for p in prefs["prompt_id"]] == prefs["target"]
