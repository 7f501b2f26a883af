"""The GPU memory budget: estimates from checkpoint headers, and the messages that name what to change."""
import dataclasses

import pytest
import torch

from selfplay.config import Config, GenerationConfig, ModelConfig, TrainConfig
from selfplay.memory import GIB, MemoryBudgetError, check_generation, check_trainer, parameter_count, trainer_budget

N7B = 7_241_732_096   # Mistral-7B


def test_parameter_count_reads_safetensors_headers(tmp_path):
    from safetensors.torch import save_file
    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, str(tmp_path / "model.safetensors"))
    assert parameter_count(str(tmp_path)) == 17
    assert parameter_count(str(tmp_path / "missing")) is None


def test_seven_b_budget_matches_the_documented_table():
    full = trainer_budget(N7B, "bfloat16", "adamw", lora_rank=0)
    assert round(full.weights / GIB, 1) == 13.5 and round(full.optimizer / GIB, 1) == 54.0
    assert round(full.total / GIB) == 81
    assert round(trainer_budget(N7B, "bfloat16", "rmsprop", 0).total / GIB) == 54
    assert round(trainer_budget(N7B, "bfloat16", "adamw", 16).total / GIB, 1) == 14.2
    assert round(trainer_budget(N7B, "bfloat16", "adamw", 0, shards=8).total / GIB, 1) == 10.1


def _cfg(**train) -> Config:
    return Config(model=ModelConfig(dtype="bfloat16"), train=TrainConfig(**train))


def test_full_finetune_of_7b_with_adamw_does_not_fit_80gb_and_says_what_to_change():
    with pytest.raises(MemoryBudgetError, match=r"trainer: a 7\.2B-parameter policy needs 81 GiB.*train\.lora_rank"):
        check_trainer(N7B, _cfg(optimizer="adamw"), 80 * GIB)
    check_trainer(N7B, _cfg(optimizer="adamw", lora_rank=16), 80 * GIB)                 # LoRA fits
    check_trainer(N7B, _cfg(optimizer="adamw", workers=8, strategy="fsdp"), 80 * GIB)   # so do 8 shards
    check_trainer(N7B, _cfg(optimizer="adamw", strategy="fsdp_offload"), 80 * GIB)      # states on the host


def test_generation_needs_room_for_the_kv_cache():
    cfg = Config(model=ModelConfig(dtype="bfloat16"), generation=GenerationConfig(gpu_memory_utilization=0.9))
    check_generation(N7B, cfg, 80 * GIB)
    with pytest.raises(MemoryBudgetError, match="generation: .*tensor_parallel_size"):
        check_generation(70_000_000_000, cfg, 80 * GIB)
    check_generation(70_000_000_000, dataclasses.replace(cfg, generation=GenerationConfig(tensor_parallel_size=4)),
                     80 * GIB)
