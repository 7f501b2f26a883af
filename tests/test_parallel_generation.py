"""Data-parallel generation: several engine actors in one placement group give the single engine's samples."""
import dataclasses

import pytest

from selfplay.config import ActorResources, Config, DataConfig, GenerationConfig, ResourcesConfig


def test_split_evenly_is_contiguous_and_never_empty():
    from pipelines.stages import split_evenly
    assert split_evenly(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    assert split_evenly([1, 2], 4) == [[1], [2]]
    assert sum(split_evenly(list(range(11)), 3), []) == list(range(11))


@pytest.mark.slow
def test_two_engines_give_the_same_samples_as_one(ray_local, tmp_path):
    import datasets

    from pipelines.stages import generate
    from selfplay.data import resolve_builtin

    base = Config(data=DataConfig(prompts_per_round=6),
                  generation=GenerationConfig(k=2, max_new_tokens=8, num_engines=1),
                  resources=ResourcesConfig(generation=ActorResources(num_cpus=1)))
    policy = resolve_builtin("builtin:arena")
    one = generate(policy, base, 1, tmp_path / "one")
    two_cfg = dataclasses.replace(base, generation=dataclasses.replace(base.generation, num_engines=2))
    two = generate(policy, two_cfg, 1, tmp_path / "two")
    assert one["samples"] == two["samples"] == 12
    rows = lambda d: datasets.load_from_disk(str(d)).to_list()  # noqa: E731
    assert rows(tmp_path / "one") == rows(tmp_path / "two")


@pytest.mark.slow
def test_a_round_with_two_engines_matches_one_engine(ray_local, tmp_path):
    """The whole round with generation fanned out (and eval judging in its own judge actor) gives the
    single-engine round's samples and win rates."""
    import json

    from pipelines.round import main
    tiny = ["data.prompts_per_round=8", "data.eval_limit=8", "generation.k=3", "generation.max_new_tokens=8",
            "train.epochs=1", "wandb.mode=disabled", "resources.generation.num_cpus=1"]
    metrics = {}
    for engines in (1, 2):
        run_dir = tmp_path / f"e{engines}"
        assert main(["--round", "1", "--config", "configs/arena_sppo.yaml", f"run_dir={run_dir}", *tiny,
                     f"generation.num_engines={engines}"]) == 0
        metrics[engines] = json.loads((run_dir / "round_1/eval/metrics.json").read_text())
    for key in ("mean", "ci_low", "ci_high", "lc", "n"):
        assert metrics[1]["winrate_vs_initial"][key] == metrics[2]["winrate_vs_initial"][key], key
    assert metrics[1]["mean_response_tokens"] == metrics[2]["mean_response_tokens"]
    assert metrics[1]["train_loss"] == metrics[2]["train_loss"]


@pytest.mark.slow
def test_two_judge_actors_give_the_single_actors_matrices(ray_local, tmp_path):
    import datasets

    from judges.registry import JudgeContext
    from pipelines.stages import generate, judge
    from selfplay.config import JudgeConfig
    from selfplay.data import resolve_builtin

    cfg = Config(data=DataConfig(prompts_per_round=5), generation=GenerationConfig(k=3, max_new_tokens=8),
                 resources=ResourcesConfig(judge=ActorResources(num_cpus=1)))
    generate(resolve_builtin("builtin:arena"), cfg, 1, tmp_path / "gen")
    one = judge(tmp_path / "gen", cfg, JudgeContext(), tmp_path / "one")
    two_cfg = dataclasses.replace(cfg, judge=JudgeConfig(num_actors=2))
    two = judge(tmp_path / "gen", two_cfg, JudgeContext(), tmp_path / "two")
    rows = lambda d: datasets.load_from_disk(str(d)).to_list()  # noqa: E731
    assert rows(tmp_path / "one") == rows(tmp_path / "two")
    assert one["pairs"] == two["pairs"] == 5 * 3 and two["judge_actors"] == 2   # K(K−1)/2: the oracle, one order
    for key in ("abstain_rate", "mean_winner_chars", "mean_loser_chars"):
        assert two[key] == pytest.approx(one[key]), key


def test_merged_judge_diagnostics_add_counts_and_weight_rates():
    from judges.base import JudgeStats
    from pipelines.stages import merge_judge_parts
    parts = [(3, JudgeStats(pairs=30, abstained=3, winner_lengths=[10, 20]),
              {"judge": "llm", "unparseable": 3, "parse_failure_rate": 0.1, "consistency_mean": 0.5}),
             (1, JudgeStats(pairs=10, abstained=5, winner_lengths=[60]),
              {"judge": "llm", "unparseable": 1, "parse_failure_rate": 0.5, "consistency_mean": 0.9})]
    s = merge_judge_parts(parts, wall_seconds=4.0)
    assert s["judge"] == "llm" and s["pairs"] == 40 and s["unparseable"] == 4 and s["judge_actors"] == 2
    assert s["abstain_rate"] == 8 / 40 and s["mean_winner_chars"] == 30.0 and s["pairs_per_s"] == 10.0
    assert s["parse_failure_rate"] == pytest.approx((30 * 0.1 + 10 * 0.5) / 40)
    assert s["consistency_mean"] == pytest.approx((3 * 0.5 + 1 * 0.9) / 4)   # a mean over prompts, not pairs
