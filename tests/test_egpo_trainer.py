"""EGPO's online extragradient update runs on the one trainer path: LoRA, workers and dtype apply to it.

Every step's fresh samples come from the trainer's own weights (the HF sampler on the live model),
judged by the pipeline's real judge (the arena oracle)."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from judges.registry import JudgeContext
from pipelines.stages import trainer_judge
from selfplay.config import ActorResources, Config, GenerationConfig, ModelConfig, ResourcesConfig, TrainConfig
from selfplay.distributed import train_policy
from selfplay.records import PreferencePair


@pytest.fixture(scope="module")
def tiny_policy() -> str:
    """The arena's tiny policy: it writes arena words, so the oracle has real preferences to give."""
    from selfplay.data import resolve_builtin
    return str(Path(resolve_builtin("builtin:arena")).resolve())


def pairs(n: int) -> list[PreferencePair]:
    topics = ["ocean", "forest", "city", "music"]
    return [PreferencePair(prompt=f"Tell me about the {topics[i % 4]}.", chosen="wave tide coral boldly",
                           rejected="the the a", prompt_id=str(i), chosen_winrate=0.7, rejected_winrate=0.3)
            for i in range(n)]


def _cfg(policy: str, **train) -> Config:
    tc = dict(lr=0.05, epochs=1, batch_size=4, optimizer="sgd", schedule="constant", warmup_ratio=0.0,
              steps_per_round=2)
    return Config(algorithm="egpo", model=ModelConfig(policy=policy, max_length=64),
                  generation=GenerationConfig(k=4, max_new_tokens=6, batch_size=16),
                  train=TrainConfig(**{**tc, **train}),
                  resources=ResourcesConfig(trainer=ActorResources(num_cpus=1, num_gpus=0)))


def _egpo(policy: str, out: Path, cfg: Config):
    judge = functools.partial(trainer_judge, cfg=cfg, judge_ctx=JudgeContext())
    return train_policy(policy, out, pairs(6), {"initial": policy}, cfg, seed=3, round_=1, make_judge=judge)


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(Path(path) / "model.safetensors"))


def test_egpo_with_lora_trains_only_adapters_and_merges_them(tiny_policy, tmp_path):
    res = _egpo(tiny_policy, tmp_path / "lora", _cfg(tiny_policy, lora_rank=2, lora_alpha=4.0))
    assert res.steps == 4 and res.pairs > 6          # two half+full iterations, each on fresh pairs
    new, base = _weights(tmp_path / "lora"), _weights(tiny_policy)
    assert new.keys() == base.keys()                 # merged: no adapter tensors in the checkpoint
    # Only linear layers carry adapters: norms and embeddings are bit-identical ...
    untouched = [k for k in base if "norm" in k or "embed" in k]
    assert untouched and all(torch.equal(new[k], base[k]) for k in untouched)
    # ... and each adapted weight moved by a rank <= r matrix (B·A), as LoRA's update must.
    q = next(k for k in base if k.endswith("self_attn.q_proj.weight"))
    delta = (new[q].double() - base[q].double())
    assert delta.abs().max() > 1e-6 and torch.linalg.matrix_rank(delta, atol=1e-6) <= 2


@pytest.mark.parametrize("targets, adapted", [("all-linear", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                 "up_proj", "down_proj"}),
                                              (("q_proj", "v_proj"), {"q_proj", "v_proj"})])
def test_lora_targets_choose_the_adapted_layers(tiny_policy, targets, adapted):
    """train.lora_targets reaches peft (EGPO's paper config: q_proj and v_proj, peft's default for qwen2 that
    the authors get by naming none), and the trainable count is the one `make plan` sizes (lora_parameters)."""
    from selfplay.dist_spec import DistSpec
    from selfplay.memory import checkpoint_facts, lora_parameters
    from selfplay.worker import _load_trainable
    _, model = _load_trainable(tiny_policy, "float32", DistSpec(lora_rank=2, lora_alpha=4.0, lora_targets=targets), "cpu")
    names = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert names == adapted
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora_parameters(2, checkpoint_facts(tiny_policy), targets) == (float(trainable), True)


@pytest.mark.slow
def test_egpo_with_two_workers_matches_one(ray_local, tiny_policy, tmp_path):
    cfg = _cfg(tiny_policy)
    one = _egpo(tiny_policy, tmp_path / "one", cfg)
    two = _egpo(tiny_policy, tmp_path / "two", _cfg(tiny_policy, workers=2))
    assert (one.workers, two.workers) == (1, 2)
    assert two.steps == one.steps and two.pairs == one.pairs
    assert two.loss_curve == pytest.approx(one.loss_curve, rel=1e-5)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
