"""Ray Train data parallelism gives the single worker's update: two gloo workers, a tiny Qwen2, SPPO.

The single-worker side is selfplay.distributed.train_policy with workers=1 (plain torch in this
process, no Ray) on the same pairs, seed and global batches; the multi-worker side is the same
function with train.workers > 1 (Ray Train). Batches are chosen so
that one global batch splits unevenly (2 + 1) and, with three workers, one shard is empty.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selfplay.config import ActorResources, Config, ModelConfig, ResourcesConfig, TrainConfig
from selfplay.dist_spec import dist_spec, needs_worker_group
from selfplay.distributed import train_policy
from selfplay.records import PreferencePair
from selfplay.worker import shard

from fixtures_policy import WORDS, build_tiny_policy, pairs as _pairs


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> str:
    return build_tiny_policy(tmp_path_factory.mktemp("tiny_policy"))


def _cfg(policy: str, *, batch_size: int = 4, cpus: float = 1, optimizer: str = "sgd", lr: float = 0.05,
         **train) -> Config:
    """SGD by default: its update is linear in the gradient, so equal gradients give equal weights to
    float precision. Adam/RMSprop divide by √v: for entries whose gradient nearly cancels, fp32
    summation-order noise (~1e-7 relative) becomes ~1e-3 of lr after normalisation."""
    return Config(model=ModelConfig(policy=policy, max_length=64),
                  train=TrainConfig(lr=lr, epochs=1, batch_size=batch_size, schedule="constant", warmup_ratio=0.0,
                                    optimizer=optimizer, **train),
                  resources=ResourcesConfig(trainer=ActorResources(num_cpus=cpus, num_gpus=0)))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(Path(path) / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_shards_are_contiguous_and_near_equal():
    assert [shard([5, 6, 7], r, 2) for r in range(2)] == [[5, 6], [7]]
    assert [shard([1], r, 3) for r in range(3)] == [[1], [], []]
    assert sum((shard(list(range(10)), r, 4) for r in range(4)), []) == list(range(10))


def test_spec_defaults_and_validation(tiny_policy):
    s = dist_spec(_cfg(tiny_policy))
    assert (s.workers, s.strategy, s.lora_rank, s.cpus_per_worker) == (1, "ddp", 0, 1)
    assert not needs_worker_group(_cfg(tiny_policy)) and needs_worker_group(_cfg(tiny_policy, workers=2))
    with pytest.raises(ValueError, match="train.strategy"):
        dist_spec(_cfg(tiny_policy, strategy="zero3"))


def test_one_worker_runs_in_process_and_is_deterministic(tiny_policy, tmp_path, monkeypatch):
    """workers=1, ddp: no Ray Train, no process group; the same seed gives the same weights (AdamW here)."""
    import selfplay.distributed as d
    monkeypatch.setattr(d, "_fit", lambda job: pytest.fail("one ddp worker must not start Ray Train"))
    cfg = _cfg(tiny_policy, optimizer="adamw")
    a = train_policy(tiny_policy, tmp_path / "a", _pairs(), {"previous": tiny_policy}, cfg, seed=3)
    b = train_policy(tiny_policy, tmp_path / "b", _pairs(), {"previous": tiny_policy}, cfg, seed=3)
    assert a.workers == b.workers == 1
    assert a.loss_curve == b.loss_curve and a.steps == b.steps == 2
    assert _max_diff(_weights(tmp_path / "a"), _weights(tmp_path / "b")) == 0.0
    assert _max_diff(_weights(tmp_path / "a"), _weights(Path(tiny_policy))) > 1e-4
    # The per-step log: before the first step the policy is its own reference, so both log-ratios are 0.
    first, second = a.step_log
    assert first["chosen_logratio"] == first["rejected_logratio"] == 0.0 and first["lr"] == cfg.train.lr
    assert second["margin"] == pytest.approx(second["chosen_logratio"] - second["rejected_logratio"])
    assert second["margin"] != 0.0 and 0.0 <= second["accuracy"] <= 1.0 and second["grad_norm"] > 0


def test_lora_merges_into_a_plain_checkpoint(tiny_policy, tmp_path):
    from transformers import AutoModelForCausalLM

    res = train_policy(tiny_policy, tmp_path / "lora", _pairs(), {"previous": tiny_policy},
                                   _cfg(tiny_policy, lora_rank=4, lora_alpha=8.0), seed=3)
    assert res.steps == 2
    merged = _weights(tmp_path / "lora")
    assert merged.keys() == _weights(Path(tiny_policy)).keys()      # no adapter tensors left
    assert _max_diff(merged, _weights(Path(tiny_policy))) > 1e-5    # the merged adapters changed the weights
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    base = AutoModelForCausalLM.from_pretrained(tiny_policy)
    ids = torch.tensor([[5, 17, 42, 9]])
    assert not torch.allclose(model(ids).logits, base(ids).logits)
    assert (tmp_path / "lora" / "tokenizer.json").exists()


def test_non_finite_loss_stops_training(tiny_policy, tmp_path):
    from selfplay.trainer import TrainingError
    cfg = _cfg(tiny_policy, batch_size=2, lr=1e30, max_grad_norm=1e30)
    with pytest.raises(TrainingError, match="loss is"):
        train_policy(tiny_policy, tmp_path / "x", _pairs(), {"previous": tiny_policy}, cfg, seed=3)
    assert not (tmp_path / "x").exists()


# ---- Ray Train (gloo workers): ~20-60 s each on two cores, hence slow.

@pytest.fixture(scope="module")
def single(tiny_policy, tmp_path_factory):
    """The reference update: plain torch, one process, global batches of 4 then 3 pairs."""
    out = tmp_path_factory.mktemp("single")
    res = train_policy(tiny_policy, out, _pairs(), {"previous": tiny_policy}, _cfg(tiny_policy), seed=3)
    assert res.steps == 2
    return out, res


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_workers_match_one(strategy, ray_local, tiny_policy, single, tmp_path):
    out = tmp_path / "policy"
    res = train_policy(tiny_policy, out, _pairs(), {"previous": tiny_policy},
                                   _cfg(tiny_policy, workers=2, strategy=strategy), seed=3)
    ref_out, ref = single
    assert res.steps == ref.steps == 2 and res.pairs == 7 and res.workers == 2
    for mine, theirs in zip(res.step_log, ref.step_log):   # the log describes the global batch, not a shard
        numbers = lambda row: {k: v for k, v in row.items() if k != "phase"}  # noqa: E731
        assert mine["phase"] == theirs["phase"]
        # abs 1e-5: a log-ratio is the difference of two log-prob sums of size ~30, whose fp32 spacing is
        # 2e-6; split into other length groups or shards, a sum may differ in its last bits.
        assert numbers(mine) == pytest.approx(numbers(theirs), rel=1e-5, abs=1e-5)
    assert res.loss_curve == pytest.approx(ref.loss_curve, rel=1e-6)
    base, a, b = _weights(Path(tiny_policy)), _weights(ref_out), _weights(out)
    assert _max_diff(a, base) > 1e-4          # the steps did move the weights ...
    assert _max_diff(a, b) < 1e-6             # ... and both paths moved them the same way
    assert (out / "tokenizer.json").exists()


@pytest.mark.slow
def test_empty_shard_still_matches(ray_local, tiny_policy, tmp_path):
    """Three workers, batches of 2: the last global batch has one pair, so two shards are empty."""
    one = train_policy(tiny_policy, tmp_path / "one", _pairs(5), {"previous": tiny_policy},
                       _cfg(tiny_policy, batch_size=2), seed=5)
    three = train_policy(tiny_policy, tmp_path / "three", _pairs(5), {"previous": tiny_policy},
                                     _cfg(tiny_policy, batch_size=2, cpus=0.5, workers=3), seed=5)
    assert three.steps == one.steps == 3
    assert three.loss_curve == pytest.approx(one.loss_curve, rel=1e-6)
    assert _max_diff(_weights(tmp_path / "one"), _weights(tmp_path / "three")) < 1e-6


@pytest.mark.slow
def test_lora_under_fsdp_matches_lora_alone(ray_local, tiny_policy, tmp_path):
    """FSDP gathers the sharded LoRA model on rank 0, merges and saves: the same checkpoint as one process."""
    lora = dict(lora_rank=4, lora_alpha=8.0)
    solo = train_policy(tiny_policy, tmp_path / "solo", _pairs(), {"previous": tiny_policy},
                                    _cfg(tiny_policy, **lora), seed=3)
    duo = train_policy(tiny_policy, tmp_path / "duo", _pairs(), {"previous": tiny_policy},
                                   _cfg(tiny_policy, workers=2, strategy="fsdp", **lora), seed=3)
    assert duo.loss_curve == pytest.approx(solo.loss_curve, rel=1e-6)
    assert _max_diff(_weights(tmp_path / "solo"), _weights(tmp_path / "duo")) < 1e-6
