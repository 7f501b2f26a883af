"""Config loading: typed values, one clear message per mistake, every shipped config valid."""
from pathlib import Path

import pytest

from selfplay.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides_are_typed():
    cfg = load_config(ROOT / "configs/arena_sppo.yaml", ["train.lr=1e-3", "generation.k=4", "loss.eta=2"])
    assert isinstance(cfg, Config)
    assert cfg.train.lr == 1e-3 and cfg.generation.k == 4
    assert cfg.loss.eta == 2.0 and isinstance(cfg.loss.eta, float)  # int promoted to float
    assert cfg.resources.trainer.num_cpus == 2


@pytest.mark.parametrize("override, message", [
    (["generation.kk=3"], "unknown key generation.kk"),
    (["bogus=1"], "unknown key bogus"),
    (["generation.k=1"], "generation.k: needs at least 2"),
    (["generation.k=two"], "generation.k: expected int"),
    (["loss.eta=0"], "loss.eta: step size must be positive"),
    (["train.lr=-1e-4"], "train.lr: step size must be positive"),
    (["algorithm=ppo"], "algorithm: unknown 'ppo'"),
    (["judge.name=gpt"], "judge.name: unknown 'gpt'"),
    (["data.train_prompts=./missing/prompts.jsonl"], "data.train_prompts: file not found"),
    (["generation.top_p=1.5"], "generation.top_p"),
    (["train"], "must look like key.sub=value"),
    # settings that no code path of the config would read are refused, not ignored
    (["loss.tau=0.5"], "loss.tau=0.5 has no effect with algorithm sppo"),
    (["algorithm=dpo", "loss.dno_margin=0.2"], "loss.dno_margin=0.2 has no effect with algorithm dpo"),
    (["algorithm=egpo", "loss.eta=3"], "loss.eta=3.0 has no effect with algorithm egpo"),
    (["generation.tensor_parallel_size=2"], "needs the vllm backend"),
    (["train.strategy=fsdp_offload"], "fsdp_offload moves shards"),
    (["model.dtype=float64"], "model.dtype: float32, bfloat16 or float16"),
    (["data.train_prompts=[]"], "data.train_prompts: expected a non-empty list"),
    (["resources.gpu_memory_gb=0"], "resources.gpu_memory_gb: must be positive"),
])
def test_bad_values_give_one_clear_message(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(ROOT / "configs/arena_sppo.yaml", override)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(ROOT / "configs/nope.yaml")


def test_hub_ids_pass_validation_without_network():
    cfg = load_config(None, ["model.policy=mistralai/Mistral-7B-Instruct-v0.2",
                             "data.train_prompts=HuggingFaceH4/ultrafeedback_binarized"])
    assert cfg.model.policy.startswith("mistralai/")


def test_every_shipped_config_validates():
    files = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(files) >= 2, files
    for f in files:
        load_config(f)  # raises on any problem


def test_sppo_paper_config_matches_the_paper():
    """arXiv 2405.00675 §5.1 and uclaml/SPPO scripts: K=5, β=0.001 (η=1000), lr 5e-7, RMSprop."""
    cfg = load_config(ROOT / "configs/paper/sppo_mistral7b_pairrm.yaml")
    assert cfg.model.policy == "mistralai/Mistral-7B-Instruct-v0.2"
    assert cfg.judge.name == "pairrm" and cfg.judge.model == "llm-blender/PairRM"
    assert cfg.generation.k == 5 and cfg.generation.temperature == 0.7 and cfg.generation.top_p == 0.9
    assert cfg.loss.eta == 1000.0 and cfg.train.lr == 5e-7 and cfg.train.optimizer == "rmsprop"
    assert cfg.generation.backend == "vllm"


PAPER = {   # file: (algorithm, policy prefix, K, {loss field: value}, lr, optimizer, trainer workers × GPUs)
    "inpo_llama3_8b.yaml": ("inpo", "RLHFlow/LLaMA3-SFT", 8, {"eta": 0.005, "tau": 0.0016667}, 5e-7, "adamw", 8),
    "dno_orca25_mistral7b.yaml": ("dno", "mistralai/Mistral-7B", 5, {"beta": 0.1, "dno_replay": 0.3}, 5e-5, "adamw", 8),
    "egpo_qwen25_1p5b.yaml": ("egpo", "vectorzhou/Qwen2.5-1.5B", 3, {"beta": 0.1, "average_logprobs": True}, 5e-7,
                              "adamw", 1),
    "apo_mistral7b.yaml": ("apo", "mistralai/Mistral-7B-Instruct-v0.2", 5, {"eta": 1000.0, "apo_base": "sppo"}, 5e-7,
                           "rmsprop", 8),
    "sppo_mistral7b_pairrm.yaml": ("sppo", "mistralai/Mistral-7B-Instruct-v0.2", 5, {"eta": 1000.0}, 5e-7, "rmsprop", 8),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs_carry_the_papers_setup(name):
    algo, policy, k, loss, lr, optimizer, gpus = PAPER[name]
    text = (ROOT / "configs/paper" / name).read_text()
    cfg = load_config(ROOT / "configs/paper" / name)
    assert cfg.algorithm == algo and cfg.model.policy.startswith(policy) and cfg.generation.k == k
    assert {f: getattr(cfg.loss, f) for f in loss} == loss
    assert cfg.train.lr == lr and cfg.train.optimizer == optimizer
    assert cfg.train.workers * cfg.resources.trainer.num_gpus == gpus
    assert "Hardware:" in text and cfg.generation.backend == "vllm"
    if algo == "egpo":   # the authors' --lora
        assert (cfg.train.lora_rank, cfg.train.lora_alpha) == (256, 512)
    if algo == "inpo":   # τ = η/3
        assert cfg.loss.tau == pytest.approx(cfg.loss.eta / 3, rel=1e-4)


def test_print_config_prints_the_resolved_config_that_loads_back(tmp_path, capsys):
    from pipelines.round import main
    from selfplay.config import to_dict
    cfg_file = ROOT / "configs/paper/sppo_mistral7b_pairrm.yaml"
    assert main(["--print-config", "--config", str(cfg_file), "train.lr=1e-6", "judge.batch_size=8"]) == 0
    out = tmp_path / "resolved.yaml"
    out.write_text(capsys.readouterr().out)
    again = load_config(out)
    assert to_dict(again) == to_dict(load_config(cfg_file, ["train.lr=1e-6", "judge.batch_size=8"]))
    assert again.train.lr == 1e-6 and again.data.train_prompts[2].endswith("iter3")


def test_help_lists_plugins_and_make_help_lists_targets(capsys):
    import subprocess

    from pipelines.round import main
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "egpo" in text and "pairrm" in text and "vllm" in text and "--print-config" in text
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    for target in ("iterate", "plan", "test", "dashboard", "submit", "help"):
        assert any(line.split()[:1] == [target] for line in out.splitlines()), target
