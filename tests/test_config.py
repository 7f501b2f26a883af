"""Config loading: typed values, one clear message per mistake, every shipped config valid."""
from pathlib import Path

import pytest

from selfplay.config import Config, ConfigError
from pipelines.config import load_config

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
    (["algorithm=apo", "loss.apo_base=ipo"], "loss.apo_base: sppo or dpo, got 'ipo'"),    # apo's own check
    (["algorithm=nash_md", "train.epochs=2"], "train.epochs=2: algorithm nash_md's online update"),
    (["data.teacher_column=gold"], "data.teacher_column='gold' has no effect with algorithm sppo: only dno reads it"),
    (["generation.tensor_parallel_size=2"], "needs the vllm backend"),
    (["train.strategy=fsdp_offload"], "fsdp_offload moves shards"),
    (["model.dtype=float64"], "model.dtype: float32, bfloat16 or float16"),
    (["data.train_prompts=[]"], "data.train_prompts: expected a non-empty list"),
    (["resources.gpu_memory_gb=0"], "resources.gpu_memory_gb: must be positive"),
    # the fidelity keys: out of range, or set where nothing reads them
    (["model.max_prompt_length=128"], "model.max_prompt_length: 0 or < max_length"),
    (["model.max_prompt_length=-1"], "model.max_prompt_length: 0 or < max_length"),
    (["data.max_prompt_chars=-300"], "data.max_prompt_chars / max_prompts: 0"),
    (["data.max_prompts=-1"], "data.max_prompt_chars / max_prompts: 0"),
    (["train.lora_targets=[q_proj]"], "all-linear, or module names with train.lora_rank > 0"),
    (["train.lora_rank=4", "train.lora_targets=q_proj"], "train.lora_targets='q_proj': all-linear, or module names"),
    (["train.extragradient_prompts=same"], "train.extragradient_prompts='same' has no effect with algorithm sppo: only egpo"),
    (["algorithm=egpo", "train.epochs=1", "train.extragradient_prompts=both"], "train.extragradient_prompts: successive or same"),
    (["judge.prompt_format=chat"], "judge.prompt_format: the oracle judge does not read it"),
    (["judge.name=pairrm", "judge.prompt_format=templated"], "judge.prompt_format: raw or chat, got 'templated'"),
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


PAPER_CONFIGS = sorted(p.name for p in (ROOT / "configs/paper").glob("*.yaml"))
SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _yaml(name: str) -> dict:
    """What the file itself says (read as plain YAML, not through load_config)."""
    import yaml
    return yaml.safe_load((ROOT / "configs/paper" / name).read_text())


def _plan(name: str, n: int = 2, *overrides: str):
    from pipelines.plan import build_plan
    return build_plan(load_config(ROOT / "configs/paper" / name, list(overrides)), n, name)


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_training_settings_reach_the_round_plan_and_the_trainer(name):
    """The train stage `make plan` would run — and the DistSpec the trainer is built from — carry the
    file's workers, strategy, LoRA rank/alpha, optimizer, dtype and per-worker GPUs; generation gets its K,
    backend and engines. A setting that the trainer ignored would not show up here."""
    from selfplay.algorithms import get_algorithm
    from selfplay.dist_spec import dist_spec
    from selfplay.memory import reference_round
    raw = _yaml(name)
    t, m, g = raw["train"], raw["model"], raw["generation"]
    workers, strategy, rank = t.get("workers", 1), t.get("strategy", "ddp"), t.get("lora_rank", 0)
    gpus = raw["resources"]["trainer"]["num_gpus"]
    plan = _plan(name)
    assert not plan.problems, plan.problems
    st = {s.stage: s for s in plan.stages}
    train = st["train"]
    assert (train.actors, train.resources.num_gpus, train.device) == (workers, gpus, "cuda" if gpus else "cpu")
    lora = f"LoRA r{rank} (" if rank else "full FT"
    assert train.training.startswith(f"{strategy}×{workers}, {lora}") and train.training.endswith(t["optimizer"])
    c = SHORT[m["dtype"]]
    assert train.dtype == (f"{c} base + fp32 LoRA" if rank else f"fp32 masters, {c} compute")
    refs = tuple(f"{r}=r{reference_round(r, 2)}" for r in get_algorithm(raw["algorithm"]).references)
    assert tuple(x.split(" ")[0] for x in train.references) == refs
    spec = dist_spec(load_config(ROOT / "configs/paper" / name))   # what selfplay.worker.Worker is built from
    assert (spec.workers, spec.strategy, spec.lora_rank, spec.gpus_per_worker) == (workers, strategy, rank, gpus)
    if rank:
        assert spec.lora_alpha == t["lora_alpha"]
    gen = st["generate"]
    assert gen.prompts.endswith(f"×{g['k']}") and gen.dtype.startswith(f"{c} {g['backend']}")
    assert gen.actors == g.get("num_engines", 1)


def test_a_changed_lora_rank_or_strategy_changes_what_the_plan_trains():
    egpo, sppo = "egpo_qwen25_1p5b.yaml", "sppo_mistral7b_pairrm.yaml"
    tr = lambda name, *o: {s.stage: s for s in _plan(name, 2, *o).stages}["train"]  # noqa: E731
    assert tr(egpo).training.startswith("ddp×1, LoRA r256 (")
    # full fine-tuning reads no LoRA targets: the paper's [q_proj, v_proj] goes with the rank
    assert tr(egpo, "train.lora_rank=0", "train.lora_targets=all-linear").training == "ddp×1, full FT, adamw"
    with pytest.raises(ConfigError, match="train.lora_targets=.*unread at rank 0"):
        tr(egpo, "train.lora_rank=0")
    assert tr(sppo, "train.lora_rank=16").training.startswith("fsdp×8, LoRA r16 (")
    assert tr(sppo, "train.lora_rank=16").dtype == "bf16 base + fp32 LoRA"
    assert tr(sppo, "train.workers=4").training.startswith("fsdp×4, ") and tr(sppo, "train.workers=4").actors == 4
    assert tr(sppo, "train.strategy=ddp").training.startswith("ddp×8, ")


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_loss_settings_change_the_loss(name):
    """Each loss key the file sets is read by its algorithm: moving it changes the loss on a fixed batch
    (average_logprobs, read by the trainer's log-prob call rather than the loss, is checked on a model;
    DNO's dno_* keys steer its pair rule, not the loss, and are exercised by the DNO pair-rule tests;
    Nash-MD's mixture_coef steers its opponent sampler, checked to reach it in tests/test_nash_md.py)."""
    import dataclasses

    import torch

    from selfplay.algorithms import PairTensors, get_algorithm
    raw = _yaml(name)
    cfg = load_config(ROOT / "configs/paper" / name)
    algo = get_algorithm(cfg.algorithm)
    g = torch.Generator().manual_seed(0)
    lp = lambda: -1 - 3 * torch.rand(6, generator=g, dtype=torch.float64)  # noqa: E731
    t = PairTensors(lp(), lp(), {r: (lp(), lp()) for r in algo.references},
                    torch.rand(6, generator=g, dtype=torch.float64), torch.rand(6, generator=g, dtype=torch.float64),
                    torch.rand(6, generator=g, dtype=torch.float64))
    base = algo.loss(t, cfg.loss)
    pair_rule = [k for k in raw.get("loss", {}) if k.startswith("dno_")]
    assert set(pair_rule) <= set(algo.loss_keys), name
    sampler = [k for k in raw.get("loss", {}) if k == "mixture_coef"]
    assert set(sampler) <= set(algo.loss_keys), name
    keys = [k for k in raw.get("loss", {}) if k != "average_logprobs" and k not in pair_rule + sampler]
    assert keys, name
    for key in keys:
        value = getattr(cfg.loss, key)
        other = {"sppo": "dpo", "dpo": "sppo"}[value] if isinstance(value, str) else value * 0.5 + 0.01
        moved = algo.loss(t, dataclasses.replace(cfg.loss, **{key: other}))
        assert not torch.allclose(moved, base), f"{name}: loss.{key} does not change the {cfg.algorithm} loss"
    if "average_logprobs" in raw.get("loss", {}):
        _average_logprobs_reaches_the_trainer(cfg)


def _average_logprobs_reaches_the_trainer(cfg):
    """selfplay.trainer.batch_loss scores with per-token means iff loss.average_logprobs (tiny model)."""
    import dataclasses
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fixtures_policy import build_tiny_policy, pairs
    from selfplay.algorithms import get_algorithm
    from selfplay.logprobs import sequence_logprobs
    from selfplay.trainer import batch_loss
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_policy(Path(tmp))
        model, tok = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)
    ps, algo = pairs(3), get_algorithm(cfg.algorithm)
    small = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype="float32", max_length=64))
    with torch.no_grad():
        for avg in (True, False):
            c = dataclasses.replace(small, loss=dataclasses.replace(small.loss, average_logprobs=avg))
            refs = {r: (torch.zeros(3), torch.zeros(3)) for r in algo.references}
            loss, sums = batch_loss(model, tok, algo, ps, [0, 1, 2], refs, c)
            want = sequence_logprobs(model, tok, [p.prompt for p in ps], [p.chosen for p in ps], average=avg,
                                     max_length=64)
            assert torch.allclose(sums[0], want.sum().float(), atol=1e-4), avg   # chosen log-ratio vs zero refs


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


def test_paper_configs_take_the_values_the_authors_code_runs_with():
    """Values read in the authors' code at the pinned commits (docs/algorithms.md, provenance), where the
    code sets nothing and a library default applies. Reverting one of them to a guess fails here."""
    egpo = load_config(ROOT / "configs/paper/egpo_qwen25_1p5b.yaml")
    assert egpo.generation.max_new_tokens == 64            # trl 0.13 OnlineDPOConfig.max_new_tokens (none passed)
    assert egpo.train.lora_targets == ("q_proj", "v_proj")  # peft's qwen2 default (configs.py names no targets)
    assert egpo.train.extragradient_prompts == "successive"  # training_step takes the next batch every step
    d = egpo.data                                           # lms/utils.py transform_into_chat's defaults
    assert (d.prompt_column, d.single_turn, d.max_prompt_chars, d.max_prompts) == ("context_messages", True, 300, 30000)
    assert d.prompts_per_round == 2 * egpo.train.steps_per_round * egpo.train.batch_size   # each prompt once a round
    inpo = load_config(ROOT / "configs/paper/inpo_llama3_8b.yaml")
    assert inpo.train.epochs == 2                           # third-party inpo_train.py's default, not overridden
