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
