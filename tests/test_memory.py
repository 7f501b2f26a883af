"""The GPU memory model (selfplay/memory.py): exact bytes for the documented cases, model facts read
from local checkpoints without loading them, and the messages that name what to change."""
import dataclasses

import pytest
import torch

import selfplay.memory as memory
from selfplay.config import Config, GenerationConfig, JudgeConfig, ModelConfig, TrainConfig
from selfplay.memory import (GIB, MemoryBudgetError, ModelFacts, check_fits, check_generation, check_trainer,
                             checkpoint_facts, lora_parameters, model_facts, parameter_count,
                             separate_references, trainer_budget)

N7B = 7_241_732_096   # Mistral-7B
MISTRAL = ModelFacts(N7B, hidden_size=4096, num_layers=32)


def _cfg(dtype: str = "bfloat16", **train) -> Config:
    return Config(model=ModelConfig(dtype=dtype), train=TrainConfig(**train))


# ---------------------------------------------------------------- the trainer, in bytes

def test_full_finetune_ddp_holds_fp32_masters_gradients_states_and_a_bf16_copy():
    b = trainer_budget(MISTRAL, _cfg(optimizer="rmsprop"))
    assert (b.weights, b.gradients, b.optimizer, b.compute_copy) == (4 * N7B, 4 * N7B, 4 * N7B, 2 * N7B)
    assert b.total == (8 + 4 * 1) * N7B + 2 * N7B == 101_384_249_344          # 94.4 GiB
    assert trainer_budget(MISTRAL, _cfg(optimizer="adamw")).total == 18 * N7B   # 121.4 GiB
    assert trainer_budget(MISTRAL, _cfg(optimizer="sgd")).total == 10 * N7B
    assert trainer_budget(MISTRAL, _cfg("float32", optimizer="adamw")).total == 16 * N7B   # fp32: no second copy
    assert trainer_budget(MISTRAL, _cfg(optimizer="rmsprop", workers=8)).total == 14 * N7B  # ddp replicates


def test_fsdp_shards_the_fp32_state_and_gathers_two_layers_in_the_compute_dtype():
    b = trainer_budget(MISTRAL, _cfg(optimizer="rmsprop", workers=8, strategy="fsdp"))
    assert b.compute_copy == 2 * 2 * N7B / 32
    assert b.total == 12 * N7B / 8 + 2 * 2 * N7B / 32 == 1.625 * N7B            # 11.0 GiB
    assert round(b.total / GIB, 1) == 11.0
    unknown_layers = trainer_budget(ModelFacts(N7B), _cfg(workers=8, strategy="fsdp"))
    assert unknown_layers.compute_copy == 2 * 2 * N7B / memory.DEFAULT_LAYERS


def test_fsdp_offload_keeps_the_shards_in_host_memory():
    b = trainer_budget(MISTRAL, _cfg(optimizer="adamw", workers=8, strategy="fsdp_offload"))
    assert (b.weights, b.gradients, b.optimizer, b.reference) == (0, 0, 0, 0)
    assert b.total == 2 * 2 * N7B / 32
    assert b.host == 16 * N7B / 8


def test_lora_freezes_the_base_in_the_compute_dtype_with_fp32_adapters():
    adapters = 16 * 21.5 * 4096 * 32            # the documented estimate without a local config.json
    assert lora_parameters(16, MISTRAL) == (adapters, False)
    b = trainer_budget(MISTRAL, _cfg(optimizer="adamw", lora_rank=16))
    assert b.total == 2 * N7B + 16 * adapters     # 4 weight + 4 gradient + 8 adamw bytes per adapter parameter
    assert round(b.total / GIB, 1) == 14.2
    sharded = trainer_budget(MISTRAL, _cfg(optimizer="adamw", lora_rank=16, workers=8, strategy="fsdp"))
    assert sharded.total == (2 * N7B + 16 * adapters) / 8 + 2 * 2 * N7B / 32
    assert trainer_budget(ModelFacts(N7B), _cfg(lora_rank=16)) is None   # no hidden_size: cannot size adapters


def test_a_frozen_reference_is_transient_but_can_set_the_peak():
    full = trainer_budget(MISTRAL, _cfg(optimizer="rmsprop", workers=8, strategy="fsdp"))
    assert full.reference == 2 * N7B / 8 and full.peak(1) == full.total        # below the training peak
    lora = trainer_budget(MISTRAL, _cfg(optimizer="adamw", lora_rank=16))
    adapters = 16 * 21.5 * 4096 * 32
    assert lora.peak(1) == lora.reference_peak == 2 * N7B + 4 * adapters + 2 * N7B > lora.total   # base + reference
    assert lora.peak(0) == lora.total
    assert trainer_budget(ModelFacts(None), _cfg()) is None


def test_references_loaded_besides_the_policy():
    assert [separate_references(_cfg(), n) for n in (1, 2, 3)] == [0, 0, 0]      # sppo: previous is the policy
    inpo = dataclasses.replace(_cfg(), algorithm="inpo")
    assert [separate_references(inpo, n) for n in (1, 2, 3)] == [0, 1, 1]        # initial = round 0
    apo = dataclasses.replace(_cfg(), algorithm="apo")
    assert [separate_references(apo, n) for n in (1, 2, 3)] == [0, 1, 1]        # previous2 = round n-2
    assert separate_references(inpo) == 1 and separate_references(_cfg()) == 0   # without the round: assume one


# ---------------------------------------------------------------- refusals name the component and the fix

def test_7b_full_finetune_on_one_80gb_gpu_is_refused_and_says_what_to_change():
    with pytest.raises(MemoryBudgetError, match=r"trainer: a 7\.24B-parameter policy needs 94\.4 GiB per GPU .*"
                                                r"fp32 masters 27\.0.*72\.0 GiB is the limit.*train\.strategy=fsdp"):
        check_trainer(MISTRAL, _cfg(optimizer="rmsprop"), 80 * GIB)
    check_trainer(MISTRAL, _cfg(optimizer="rmsprop", workers=8, strategy="fsdp"), 80 * GIB)
    check_trainer(MISTRAL, _cfg(optimizer="adamw", workers=8, strategy="fsdp"), 80 * GIB)
    check_trainer(MISTRAL, _cfg(optimizer="adamw", strategy="fsdp_offload"), 80 * GIB)
    check_trainer(MISTRAL, _cfg(optimizer="adamw", lora_rank=16), 80 * GIB, references=1)
    with pytest.raises(MemoryBudgetError, match=r"needs 27\.1 GiB .*a frozen reference 13\.5"):
        check_trainer(MISTRAL, _cfg(optimizer="adamw", lora_rank=16), 24 * GIB, references=1)


def test_generation_needs_room_for_the_kv_cache():
    cfg = Config(model=ModelConfig(dtype="bfloat16"), generation=GenerationConfig(backend="vllm", gpu_memory_utilization=0.9))
    check_generation(MISTRAL, cfg, 80 * GIB)                   # 13.5 GiB ≤ 0.8 × 0.9 × 80
    with pytest.raises(MemoryBudgetError, match="generation: 130.4 GiB .*tensor_parallel_size"):
        check_generation(ModelFacts(70e9), cfg, 80 * GIB)
    tp4 = dataclasses.replace(cfg, generation=GenerationConfig(backend="vllm", tensor_parallel_size=4))
    check_generation(ModelFacts(70e9), tp4, 80 * GIB)


def judge_budget(j: JudgeConfig, policy: ModelFacts, device: str, dtype: str):
    """Each judge declares its memory in its registry entry (judges/: JudgeSpec.budget)."""
    from judges.registry import judge_spec
    return judge_spec(j.name).budget(j, policy, device, dtype)


def test_judges():
    pairrm = JudgeConfig(name="pairrm")
    assert judge_budget(pairrm, MISTRAL, "cuda", "bfloat16").bytes == 0.44e9 * 2     # fp16 on the GPU
    assert judge_budget(pairrm, MISTRAL, "cpu", "bfloat16").bytes == 0.44e9 * 4
    assert judge_budget(JudgeConfig(name="oracle"), MISTRAL, "cuda", "bfloat16").bytes == 0
    assert judge_budget(JudgeConfig(name="llm", model="gpt-4", endpoint="http://x"), MISTRAL, "cuda", "bfloat16").bytes == 0
    hub = judge_budget(JudgeConfig(name="llm", model="org/not-on-disk"), MISTRAL, "cuda", "bfloat16")
    assert hub.parameters is None and hub.bytes is None                               # unknown, not a failure
    assert judge_budget(JudgeConfig(name="self_reward"), MISTRAL, "cuda", "bfloat16").bytes == 2 * N7B


# ---------------------------------------------------------------- facts from a local checkpoint, nothing loaded

def _tiny(tmp_path, weights: bool):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    if weights:
        model.save_pretrained(tmp_path)
    else:
        cfg.save_pretrained(tmp_path)
    return model


def test_parameter_count_reads_safetensors_headers(tmp_path):
    from safetensors.torch import save_file
    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, str(tmp_path / "model.safetensors"))
    assert parameter_count(str(tmp_path)) == 17
    assert parameter_count(str(tmp_path / "missing")) is None


def test_checkpoint_facts_from_safetensors_or_config_json(tmp_path):
    model = _tiny(tmp_path / "full", weights=True)
    _tiny(tmp_path / "config_only", weights=False)
    n = sum(p.numel() for p in model.parameters())
    for d in ("full", "config_only"):
        assert checkpoint_facts(str(tmp_path / d)) == ModelFacts(n, 64, 2, str(tmp_path / d))
    assert checkpoint_facts("org/hub-id") is None
    stated = ModelConfig(num_parameters=7e9, hidden_size=4096, num_layers=32)
    assert model_facts(str(tmp_path / "full"), stated).parameters == n          # the checkpoint wins
    assert model_facts("org/hub-id", stated) == ModelFacts(7e9, 4096, 32)
    assert model_facts("org/hub-id", ModelConfig()).parameters is None


def test_lora_adapters_are_counted_exactly_from_a_local_config(tmp_path):
    _tiny(tmp_path, weights=False)
    # per layer r·(in+out): q 64+64, k 64+32, v 64+32, o 64+64, gate 64+128, up 64+128, down 128+64; no lm_head
    per_layer = 128 + 96 + 96 + 128 + 192 + 192 + 192
    assert lora_parameters(4, checkpoint_facts(str(tmp_path))) == (4 * 2 * per_layer, True)


def test_lora_targets_count_only_the_named_layers(tmp_path):
    """train.lora_targets: [q_proj, v_proj] (EGPO's authors get peft's qwen2 default) adapts two of the seven
    linear layers: exactly r·((64+64) + (64+32)) a layer from a local config, 2h + 2h a layer estimated."""
    _tiny(tmp_path, weights=False)
    facts = checkpoint_facts(str(tmp_path))
    assert lora_parameters(4, facts, ("q_proj", "v_proj")) == (4 * 2 * (128 + 96), True)
    assert lora_parameters(4, facts, ("self_attn.q_proj",)) == (4 * 2 * 128, True)    # peft's suffix match
    assert lora_parameters(16, MISTRAL, ("q_proj", "v_proj")) == (16 * 4 * 4096 * 32, False)
    assert lora_parameters(16, MISTRAL, ("q_proj", "lm_adapter")) == (None, False)       # a width it cannot guess
    b = trainer_budget(MISTRAL, _cfg(optimizer="adamw", lora_rank=16, lora_targets=("q_proj", "v_proj")))
    assert b.adapters == 16 * 4 * 4096 * 32 and b.total == 2 * N7B + 16 * b.adapters


def test_check_fits_reads_the_checkpoint_and_uses_the_real_gpu(tmp_path, monkeypatch):
    model = _tiny(tmp_path, weights=True)
    n = sum(p.numel() for p in model.parameters())
    cfg = _cfg("float32", optimizer="adamw")
    monkeypatch.setattr(memory, "gpu_bytes", lambda: None)
    check_fits("trainer", str(tmp_path), cfg)                          # no GPU: nothing to check
    monkeypatch.setattr(memory, "gpu_bytes", lambda: 16 * n / 0.9)     # exactly the fp32 adamw need
    check_fits("trainer", str(tmp_path), cfg)
    monkeypatch.setattr(memory, "gpu_bytes", lambda: 16 * n / 0.9 - 1)
    with pytest.raises(MemoryBudgetError, match="trainer: "):
        check_fits("trainer", str(tmp_path), cfg)
    check_fits("trainer", str(tmp_path / "not-local"), cfg)            # cannot be sized: no-op
