"""Mixed precision as at scale: with model.dtype bfloat16 the trainer keeps fp32 master weights, so
the papers' small learning rates move the weights; checkpoints come out in the compute dtype.

The control in the first test is what the trainer did before: AdamW stepping bf16 weights in place,
where an update of ~lr = 5e-7 is below bf16's spacing (~1.2e-4 at |w| ≈ 0.02) and is rounded away."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fixtures_policy import build_tiny_policy, pairs
from selfplay.config import ActorResources, Config, ModelConfig, ResourcesConfig, TrainConfig
from selfplay.distributed import train_policy

STEPS = 100   # 10 pairs, batch 2, 20 epochs


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> str:
    return build_tiny_policy(tmp_path_factory.mktemp("tiny_policy"))


def _cfg(policy: str, dtype: str = "bfloat16", **train) -> Config:
    tc = dict(lr=5e-7, epochs=20, batch_size=2, optimizer="adamw", schedule="constant", warmup_ratio=0.0)
    return Config(model=ModelConfig(policy=policy, dtype=dtype, max_length=64), train=TrainConfig(**{**tc, **train}),
                  resources=ResourcesConfig(trainer=ActorResources(num_cpus=1, num_gpus=0)))


def _changed_share_pure_bf16(policy: str) -> float:
    """The old trainer's update: AdamW on bf16 weights, same loss, lr and step count."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.bfloat16)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-7, weight_decay=0.0)
    ids = torch.randint(0, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
    for _ in range(STEPS):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    moved = sum(int((p.detach() != b).sum()) for p, b in zip(model.parameters(), before))
    return moved / sum(b.numel() for b in before)


def test_small_lr_updates_survive_in_bf16(tiny_policy, tmp_path):
    res = train_policy(tiny_policy, tmp_path / "bf16", pairs(10), {"previous": tiny_policy}, _cfg(tiny_policy), seed=0)
    assert res.steps == STEPS
    assert res.updated_fraction > 0.99           # fp32 masters: every sampled weight moved
    assert _changed_share_pure_bf16(tiny_policy) < 0.5   # the control: in-place bf16 drops most updates


def test_checkpoint_is_saved_in_the_compute_dtype(tiny_policy, tmp_path):
    from safetensors import safe_open
    out = tmp_path / "bf16"
    train_policy(tiny_policy, out, pairs(4), {"previous": tiny_policy}, _cfg(tiny_policy, epochs=1, lr=1e-3), seed=0)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_lora_base_frozen_in_compute_dtype_with_fp32_adapters(tiny_policy):
    from selfplay.dist_spec import dist_spec
    from selfplay.distributed import TrainJob
    from selfplay.worker import Worker
    cfg = _cfg(tiny_policy, lora_rank=4, lora_alpha=8.0)
    job = TrainJob(tiny_policy, "", pairs(2), {}, cfg, 0, dist_spec(cfg))
    w = Worker(job, rank=0, world=1, device=torch.device("cpu"), total_steps=1)
    trainable = {n: p.dtype for n, p in w.model.named_parameters() if p.requires_grad}
    frozen = {p.dtype for p in w.model.parameters() if not p.requires_grad}
    assert trainable and all("lora_" in n and d == torch.float32 for n, d in trainable.items())
    assert frozen == {torch.bfloat16}


@pytest.mark.slow
def test_fsdp_two_gloo_workers_keep_fp32_masters(ray_local, tiny_policy, tmp_path):
    res = train_policy(tiny_policy, tmp_path / "fsdp", pairs(10), {"previous": tiny_policy},
                       _cfg(tiny_policy, workers=2, strategy="fsdp"), seed=0)
    assert res.workers == 2 and res.steps == STEPS
    assert res.updated_fraction > 0.99
