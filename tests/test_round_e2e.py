"""Two rounds of a tiny arena configuration through the real Ray path, then a resume that skips."""
import json
import logging
import math
import re

import pytest

from pipelines.layout import STAGE_DIRS
from pipelines.round import main

pytestmark = pytest.mark.slow
TINY = ["data.prompts_per_round=24", "data.eval_limit=24", "generation.k=4", "train.epochs=1",
        "wandb.mode=disabled", "generation.max_new_tokens=16"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_local):
    run_dir = tmp_path_factory.mktemp("run")
    assert main(["--round", "1", "--config", "configs/arena_sppo.yaml", f"run_dir={run_dir}", *TINY]) == 0
    assert main(["--round", "2", "--config", "configs/arena_sppo.yaml", f"run_dir={run_dir}", *TINY]) == 0
    return run_dir


def test_artifacts_and_manifests(run):
    import datasets
    for n in (1, 2):
        for d in ("generations", "judgments", "preferences", "policy", "eval"):
            m = json.loads((run / f"round_{n}" / d / "manifest.json").read_text())
            assert m["output_hash"] and m["key"] and "torch" in m["packages"]
        assert (run / f"round_{n}/policy/model.safetensors").exists()
        assert (run / f"round_{n}/policy/tokenizer.json").exists()
        prefs = datasets.load_from_disk(str(run / f"round_{n}/preferences"))
        assert {"prompt", "chosen", "rejected", "chosen_winrate", "rejected_winrate"} <= set(prefs.column_names)
        assert all(c >= r for c, r in zip(prefs["chosen_winrate"], prefs["rejected_winrate"]))
        # TRL's conversational preference format (tests/test_trl.py trains TRL's DPOTrainer on it)
        assert prefs[0]["prompt"][0]["role"] == "user" and prefs[0]["chosen"][0]["role"] == "assistant"
        gen_cfg = json.loads((run / f"round_{n}/policy/generation_config.json").read_text())
        assert gen_cfg["do_sample"] is True and gen_cfg["max_new_tokens"] == 16
        assert f"| round | {n} |" in (run / f"round_{n}/policy/README.md").read_text()
        gens = datasets.load_from_disk(str(run / f"round_{n}/generations"))
        assert len(gens) == 24 * 4 and len(set(gens["seed"])) == 24
    names = set()
    for n in (0, 1, 2):   # AlpacaEval exports, round 0's included, named by algorithm and run id, then round
        rows = json.loads((run / f"round_{n}/eval/alpaca_eval.json").read_text())
        (name,) = {r["generator"] for r in rows}
        assert len(rows) == 24 and re.fullmatch(rf"sppo-[0-9a-f]{{8}}/round_{n}", name), name
        names.add(name.split("/")[0])
    assert len(names) == 1   # one run, one id


def test_metrics(run):
    from pipelines.evaluate import read_metrics
    m = read_metrics(run / "round_2/eval")   # with its timings.json (stage_seconds), which the hash leaves out
    assert "stage_seconds" not in json.loads((run / "round_2/eval/metrics.json").read_text())
    assert m["round"] == 2
    for key in ("winrate_vs_initial", "winrate_vs_previous"):
        w = m[key]
        assert 0 <= w["ci_low"] <= w["mean"] <= w["ci_high"] <= 1 and w["n"] == 24
    assert math.isfinite(m["train_loss"]) and m["mean_response_tokens"] > 0
    assert set(m["stage_seconds"]) == {"generate", "judge", "preferences", "train", "evaluate"}
    assert m["judge"]["pairs"] == 24 * 4 * 3 // 2   # K(K−1)/2 pairs: the oracle is asked one order of each
    w = m["winrate_matrix"]["winrate"]
    assert w[2][0] == pytest.approx(m["winrate_vs_initial"]["mean"]) and w[0][2] == pytest.approx(1 - w[2][0])


def test_rerun_skips_every_stage(run, caplog):
    before = {d: (run / "round_2" / d / "manifest.json").read_text() for d in set(STAGE_DIRS.values())}
    with caplog.at_level(logging.INFO, logger="selfplay"):
        assert main(["--round", "2", "--config", "configs/arena_sppo.yaml", f"run_dir={run}", *TINY]) == 0
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 5, skipped
    assert before == {d: (run / "round_2" / d / "manifest.json").read_text() for d in before}


def test_changed_config_reruns_only_what_it_affects(run, caplog):
    with caplog.at_level(logging.INFO, logger="selfplay"):
        assert main(["--round", "2", "--config", "configs/arena_sppo.yaml", f"run_dir={run}", *TINY,
                     "train.lr=1e-4", "--force"]) == 0   # other settings for a finished round: --force
    msgs = [r.getMessage() for r in caplog.records]
    assert any("generate" in s and "skipped" in s for s in msgs)
    assert any("train" in s and "done" in s for s in msgs)


def test_round_out_of_order_names_the_missing_round(run, capsys):
    assert main(["--round", "4", "--config", "configs/arena_sppo.yaml", f"run_dir={run}", *TINY]) == 2
    assert "round 3 is not complete" in capsys.readouterr().err
