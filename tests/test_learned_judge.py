"""The learned PairRM judge (judges/train_pairrm.py) and the judge–truth gap (pipelines/judge_gap.py).

A small version of the judge is trained here (same code, smaller spec); the real asset is checked by
the slow test, which builds it when `make assets` has not (about 3 minutes on 2 idle cores)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from judges.pairrm import PairRMJudge
from judges.train_pairrm import (BUILTIN, NEAR_TIE, PairRMAssetSpec, agreement, asset_key,
                                 build_judge_asset)
from selfplay.arena import DEFAULT_RULES, ArenaRules, oracle_probability
from selfplay.arena_pairs import LabelledPair

# No policy samples (every pair built from scratch): sampling is the slow part of a build.
SMALL = PairRMAssetSpec(hidden_size=32, layers=1, heads=2, samples_per_prompt=0, steps=150, heldout_pairs=600)
TOL = 1e-5


@pytest.fixture(scope="module")
def arena(tmp_path_factory) -> Path:
    """A private arena root holding copies of the session's policy and prompts (its manifest matches)."""
    from selfplay.assets import build_assets
    from selfplay.data import assets_root
    src = build_assets(assets_root())
    root = tmp_path_factory.mktemp("assets") / "arena"
    root.mkdir()
    for name in ("manifest.json", "policy", "prompts"):
        (shutil.copytree if (src / name).is_dir() else shutil.copy)(src / name, root / name)
    return root


@pytest.fixture(scope="module")
def small(arena) -> Path:
    return build_judge_asset(arena, SMALL)


@pytest.fixture(scope="module")
def manifest(small) -> dict:
    return json.loads((small / "manifest.json").read_text())


@pytest.fixture(scope="module")
def data():
    from selfplay.assets import arena_prompts
    prompts = [r["prompt"] for r in arena_prompts("eval")[:4]]
    responses = [["wave tide coral surely", "pine moss gently", "", "the tide tide oddly wryly"],
                 ["bread oven soup", "bread bread", "orbit comet boldly", "a very many some"],
                 ["peak ridge snow", "peak quietly", "dune sand", "truly boldly summit"],
                 ["melody drum", "drum", "star [SEP] moon", "chord tempo choir piano slyly"]]
    return prompts, responses


# ---------------------------------------------------------------- the checkpoint: llm-blender agrees

def test_blender_loads_the_trained_checkpoint_and_gives_the_same_scores(small, data):
    from judges.blender_compat import import_llm_blender

    prompts, responses = data
    blender = import_llm_blender().Blender()
    blender.blender_config.use_tqdm = False
    blender.loadranker(str(small / "ranker"), device="cpu")
    ours = PairRMJudge(str(small / "hf"))
    theirs = blender.rank(prompts, responses, return_scores=True, batch_size=2, disable_tqdm=True)
    mine = np.array(ours.scores(prompts, responses))
    assert np.abs(mine - theirs).max() < TOL
    assert np.abs(mine).max() > 0.05   # a trained judge, not a constant one
    a, b = [r[0] for r in responses], [r[1] for r in responses]
    both = blender.compare(prompts, a, b, return_logits=True, batch_size=2)
    assert np.abs(ours.compare(prompts, a, b) - 1 / (1 + np.exp(-both))).max() < TOL
    # llm-blender's own ranker layout, read by our loader, holds the very same tensors
    ranker = PairRMJudge(str(small / "ranker"))
    assert np.abs(np.array(ranker.scores(prompts, responses)) - mine).max() < TOL


def test_the_hf_layout_loads_as_llm_blenders_deberta_v2_pairrm(small, data):
    import torch
    from llm_blender.blender.blender_utils import tokenize_pair
    from llm_blender.pair_ranker.pairrm import DebertaV2PairRM
    from transformers import AutoTokenizer

    from judges.blender_compat import import_llm_blender
    import_llm_blender()
    prompts, responses = data
    a, b = [r[0] for r in responses], [r[3] for r in responses]
    model = DebertaV2PairRM.from_pretrained(str(small / "hf")).eval()
    tok = AutoTokenizer.from_pretrained(str(small / "hf"))
    with torch.no_grad():
        theirs = model(**tokenize_pair(tok, prompts, a, b)).logits.numpy()
    assert np.abs(PairRMJudge(str(small / "hf")).logits(prompts, a, b) - theirs).max() < TOL


# ---------------------------------------------------------------- training: it learns the oracle

def test_the_small_judge_learns_the_oracle(small, manifest):
    held = manifest["heldout"]
    assert held["n"] > 400 and manifest["near_tie"] == NEAR_TIE
    # a 1-layer, 32-wide judge after 150 steps: well above chance, and the loss fell
    assert held["agreement"] >= 0.65, held
    assert manifest["train_loss"]["last_50"] < manifest["train_loss"]["first_50"] - 0.02
    assert set(held["by_kind"]) == {"built-built"}


def test_a_matching_manifest_is_reused_and_a_changed_arena_retrains(arena, small, manifest):
    mtime = (small / "hf" / "model.safetensors").stat().st_mtime_ns
    assert build_judge_asset(arena, SMALL) == small
    assert (small / "hf" / "model.safetensors").stat().st_mtime_ns == mtime
    policy = json.loads((arena / "manifest.json").read_text())["key"]
    assert manifest["key"] == asset_key(SMALL, policy, DEFAULT_RULES)
    assert asset_key(SMALL, policy, ArenaRules(quality_weight=1.0)) != manifest["key"]
    assert asset_key(PairRMAssetSpec(), policy, DEFAULT_RULES) != manifest["key"]
    assert asset_key(SMALL, "another-policy", DEFAULT_RULES) != manifest["key"]


class _Fixed:
    """A judge answering a fixed function of the oracle's probability."""
    def __init__(self, f):
        self.f = f

    def compare(self, prompts, a, b):
        return np.array([self.f(oracle_probability(p, x, y)) for p, x, y in zip(prompts, a, b)])


def test_agreement_counts_sides_of_one_half_and_skips_near_ties():
    x = "Describe the ocean."
    pairs = [LabelledPair(x, a, b, oracle_probability(x, a, b), "k")
             for a, b in [("wave tide", "pine"), ("pine", "wave"), ("wave", "tide"), ("wave surely", "tide gently")]]
    assert [round(q.p, 3) for q in pairs][2] == 0.5          # one exact tie, left out
    assert agreement(_Fixed(lambda p: p), pairs).agreement == 1.0
    assert agreement(_Fixed(lambda p: 1 - p), pairs).agreement == 0.0
    assert agreement(_Fixed(lambda p: 0.5), pairs).agreement == 0.0   # no opinion is never agreement
    assert agreement(_Fixed(lambda p: p), pairs).n == 3
    half = agreement(_Fixed(lambda p: 0.9), pairs)           # always "a": right on the pairs a wins
    assert half.agreement == pytest.approx(2 / 3, abs=1e-4) and half.by_kind["k"]["n"] == 3


# ---------------------------------------------------------------- config and the builtin name

def test_the_config_trains_with_the_builtin_judge_and_evaluates_with_the_oracle():
    from pipelines.config import load_config
    cfg = load_config("configs/arena_sppo_pairrm.yaml")
    assert (cfg.judge.name, cfg.judge.model, cfg.eval_judge.name) == ("pairrm", BUILTIN, "oracle")


def test_an_unknown_builtin_judge_is_refused():
    from selfplay.config import ConfigError
    from pipelines.config import load_config
    with pytest.raises(ConfigError, match=r"^judge\.model: unknown builtin judge 'builtin:arena/other'"):
        load_config(None, ["judge.name=pairrm", "judge.model=builtin:arena/other"])


def test_the_registry_builds_the_pairrm_judge_from_the_builtin_asset(small, monkeypatch, data):
    import judges.train_pairrm
    from judges.registry import JudgeContext, build_judge
    from pipelines.config import load_config

    roots = []
    monkeypatch.setattr(judges.train_pairrm, "build_judge_asset", lambda root: roots.append(root) or small)
    cfg = load_config("configs/arena_sppo_pairrm.yaml")
    judge = build_judge(cfg.judge.name, cfg.judge, JudgeContext())
    assert len(roots) == 1 and isinstance(judge, PairRMJudge)
    prompts, responses = data
    ref = PairRMJudge(str(small / "hf")).matrices(prompts, responses)
    assert all(np.abs(m - r).max() < TOL for m, r in zip(judge.matrices(prompts, responses), ref))


# ---------------------------------------------------------------- the judge–truth gap

def _eval_dir(path: Path, rows: list[tuple[str, str, list[str]]]) -> Path:
    import datasets
    datasets.Dataset.from_list([
        {"prompt_id": pid, "prompt": p, "sample_idx": i, "seed": 0, "response": r, "n_tokens": len(r.split()),
         "finished": True} for pid, p, rs in rows for i, r in enumerate(rs)]).save_to_disk(str(path))
    return path


def test_judge_vs_oracle_on_hand_built_eval_dirs(small, tmp_path):
    from judges.registry import JudgeContext
    from pipelines.evaluate import training_judge_gap
    from pipelines.judge_gap import judge_vs_oracle
    from pipelines.layout import round_paths
    from pipelines.config import load_config

    x1, x2 = "Describe the ocean for a painter.", "Tell me about the forest for a traveller."
    old = [("o", x1, ["pine moss oven", "wave"]), ("f", x2, ["tide tide", "fern"])]
    new = [("o", x1, ["wave tide coral", "wave surely", "gull"]), ("f", x2, ["pine bark owl", "moss"]),
           ("only-new", x1, ["shell"])]                       # no round-0 answer: not compared
    _eval_dir(round_paths(tmp_path, 0).eval_generations, old)
    new_dir = _eval_dir(tmp_path / "new", new)
    cfg = load_config("configs/arena_sppo_pairrm.yaml", [f"judge.model={small / 'hf'}"])
    gap = judge_vs_oracle(round_paths(tmp_path, 0).eval_generations, new_dir, cfg, JudgeContext())

    pairs = [(x, a, b) for (_, x, rs), (_, _, os_) in zip(new, old) for a in rs for b in os_]
    assert gap["n_pairs"] == len(pairs) == 3 * 2 + 2 * 2
    per_prompt = lambda f: np.mean([np.mean([f(x, a, b) for a in rs for b in os_])   # noqa: E731
                                    for (_, x, rs), (_, _, os_) in zip(new, old)])
    # both orders asked and averaged; the oracle is order-symmetric, so it is its probability
    assert gap["oracle_winrate"] == pytest.approx(per_prompt(oracle_probability), abs=1e-12)
    assert gap["oracle_winrate"] > 0.7                      # the new answers are on topic
    j = PairRMJudge(str(small / "hf"))
    both = lambda x, a, b: 0.5 * (j.compare([x], [a], [b])[0] + 1 - j.compare([x], [b], [a])[0])  # noqa: E731
    assert gap["judge_winrate"] == pytest.approx(per_prompt(both), abs=1e-6)
    assert gap["judge"] == "pairrm" and gap["vs_round"] == 0
    decided = [(x, a, b) for x, a, b in pairs if abs(oracle_probability(x, a, b) - 0.5) > NEAR_TIE]
    agree = np.mean([(both(x, a, b) - 0.5) * (oracle_probability(x, a, b) - 0.5) > 0 for x, a, b in decided])
    assert gap["agreement"] == pytest.approx(agree)
    lo, hi = gap["oracle_ci"]
    assert lo <= gap["oracle_winrate"] <= hi

    assert training_judge_gap([], new_dir, cfg, JudgeContext()) is None                 # round 0: nothing
    _eval_dir(tmp_path / "chat", [("o", "Hello there", ["hi"])])
    shutil.rmtree(round_paths(tmp_path, 0).eval_generations)
    _eval_dir(round_paths(tmp_path, 0).eval_generations, [("o", "Hello there", ["hey"])])
    assert judge_vs_oracle(round_paths(tmp_path, 0).eval_generations, tmp_path / "chat", cfg,
                           JudgeContext()) is None  # no arena prompt


# ---------------------------------------------------------------- the real asset

@pytest.mark.slow
def test_the_built_judge_agrees_with_the_oracle_on_held_out_pairs():
    """`make assets`' judge (built here when it has not been): held-out agreement ≥ 0.80."""
    from selfplay.data import assets_root
    out = build_judge_asset(assets_root())
    held = json.loads((out / "manifest.json").read_text())["heldout"]
    assert held["n"] > 1500 and held["agreement"] >= 0.80, held


@pytest.mark.slow
def test_a_round_trained_with_the_learned_judge_records_its_gap_to_the_oracle(tmp_path, ray_local):
    """configs/arena_sppo_pairrm.yaml: round 1's metrics.json holds judge_vs_oracle, whose oracle side is the
    round's own win rate vs the initial policy (the same pairs), and the dashboard draws it."""
    from pipelines.round import main

    run = tmp_path / "run"
    assert main(["--round", "1", "--config", "configs/arena_sppo_pairrm.yaml", f"run_dir={run}", "wandb.mode=disabled",
                 "data.prompts_per_round=24", "data.eval_limit=24", "generation.k=3"]) == 0
    m = json.loads((run / "round_1/eval/metrics.json").read_text())
    gap = m["judge_vs_oracle"]
    assert gap["judge"] == "pairrm" and gap["vs_round"] == 0 and gap["n_pairs"] == 24 * 2 * 2
    assert gap["oracle_winrate"] == pytest.approx(m["winrate_vs_initial"]["mean"], abs=1e-12)
    assert 0 < gap["judge_winrate"] < 1 and abs(gap["judge_winrate"] - gap["oracle_winrate"]) < 0.2
    assert 'id="chart-judge-gap"' in (run / "dashboard.html").read_text()


@pytest.mark.slow
def test_cpu_low_precision_paths_on_the_trained_judge():
    """judge.dtype on the CPU, measured on the trained arena judge (decisive: P spans (0, 1)). Both bf16 and
    dynamic int8 keep every decision the fp32 judge is sure of (|P - 1/2| > 0.05), stay within 5e-3 of fp32 on
    average and 3e-2 at worst. Measured here: bf16 mean 0.0005, max 0.0036; int8 mean 0.0017, max 0.013. The
    max is a tail over 288 probabilities and moves with the build (the judge is seeded but training is not
    bit-identical across machines: a CI build's bf16 max was 0.011), so the bound that decides is the mean
    and the kept decisions."""
    import random

    from selfplay.arena_pairs import draw_response
    from selfplay.assets import arena_prompts
    from selfplay.data import assets_root

    path = str(build_judge_asset(assets_root()) / "hf")
    rng = random.Random(0)
    prompts = [r["prompt"] for r in arena_prompts("eval")][:24]
    responses = [[draw_response(rng, p, ["wave gently", "pine moss"])[1] for _ in range(4)] for p in prompts]
    want = np.concatenate([m.ravel() for m in PairRMJudge(path).matrices(prompts, responses)])
    assert np.abs(want - 0.5).max() > 0.4
    sure = np.abs(want - 0.5) > 0.05
    for dtype in ("bfloat16", "int8"):
        got = np.concatenate([m.ravel() for m in PairRMJudge(path, dtype=dtype).matrices(prompts, responses)])
        err = np.abs(want - got)
        assert err.mean() < 5e-3 and err.max() < 3e-2, (dtype, err.mean(), err.max())
        assert np.array_equal(want[sure] > 0.5, got[sure] > 0.5), dtype
