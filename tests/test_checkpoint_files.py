"""What a saved policy and an eval stage leave besides weights: sampling defaults in
generation_config.json, a model card, and AlpacaEval exports named per run (round 0 included).
The stage functions are called directly (no Ray, no whole rounds)."""
import dataclasses
import json
from pathlib import Path

import datasets
import pytest
import torch

from selfplay.config import Config, DataConfig, EvalConfig, GenerationConfig, ModelConfig, TrainConfig

GEN = GenerationConfig(k=2, temperature=0.7, top_p=0.9, max_new_tokens=12)


def _cfg(run_dir: Path, **kw) -> Config:
    return Config(run_dir=str(run_dir), algorithm="sppo", generation=GEN,
                  model=ModelConfig(max_length=64),
                  train=TrainConfig(lr=1e-3, epochs=1, batch_size=4, schedule="constant", warmup_ratio=0.0), **kw)


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    """Round 0 (init_policy of the arena policy) and round 1 (the train stage on three pairs)."""
    from fixtures_policy import pairs
    from pipelines import stages
    from selfplay.records import pair_to_row

    run = tmp_path_factory.mktemp("myrun")
    cfg = _cfg(run)
    r0 = run / "round_0" / "policy"
    stages.init_policy("builtin:arena", r0, cfg=cfg)
    prefs = run / "round_1" / "preferences"
    rows = [pair_to_row(dataclasses.replace(p, round=1 if i else 0)) for i, p in enumerate(pairs(3))]  # one replayed
    datasets.Dataset.from_list(rows).save_to_disk(str(prefs))
    r1 = run / "round_1" / "policy"
    info = stages.train(str(r0), {"previous": str(r0)}, prefs, cfg, 1, None, r1)
    return cfg, r0, r1, info


@pytest.mark.parametrize("which", [0, 1])
def test_generation_config_holds_the_round_sampling_settings(rounds, which):
    from transformers import AutoModelForCausalLM, GenerationConfig

    cfg, *dirs, _ = rounds
    ckpt = dirs[which]
    saved = json.loads((ckpt / "generation_config.json").read_text())
    assert saved["do_sample"] is True and saved["temperature"] == 0.7 and saved["top_p"] == 0.9
    assert saved["max_new_tokens"] == 12 and saved["top_k"] == 0      # no transformers top-k of 50 sneaking in
    assert (saved["eos_token_id"], saved["pad_token_id"]) == (3, 1)    # kept from the arena policy's file
    # what generate() uses when called with no settings: the checkpoint's generation config
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    loaded = GenerationConfig.from_pretrained(ckpt)
    assert model.generation_config.to_diff_dict() == loaded.to_diff_dict()
    assert (loaded.do_sample, loaded.temperature, loaded.top_p) == (True, 0.7, 0.9)


def test_plain_generate_samples(rounds):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, r0, _, _ = rounds
    tok, model = AutoTokenizer.from_pretrained(r0), AutoModelForCausalLM.from_pretrained(r0)
    text = tok.apply_chat_template([{"role": "user", "content": "Tell me about the ocean."}], tokenize=False,
                                   add_generation_prompt=True)
    inputs = tok([text] * 4, return_tensors="pt", add_special_tokens=False)
    outs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        outs.append(model.generate(**inputs).tolist())
    assert outs[0] != outs[1]                                       # sampling, not greedy
    torch.manual_seed(0)
    assert model.generate(**inputs).tolist() == outs[0]             # and seeded
    assert max(len(o) for o in outs[0]) <= inputs.input_ids.shape[1] + 12   # max_new_tokens from the file


def test_pipeline_sampling_ignores_the_checkpoint_defaults(rounds, tmp_path):
    """The HF backend passes every setting itself: the new generation_config.json changes nothing there."""
    from selfplay.data import resolve_builtin
    from selfplay.generation import Request, SamplingSpec
    from selfplay.hf_backend import HFBackend

    _, r0, _, _ = rounds
    reqs = [Request("Tell me about the ocean.", 5), Request("Describe the forest.", 6)]
    spec = SamplingSpec(2, 1.0, 1.0, 12)
    assert HFBackend(str(r0)).generate(reqs, spec) == HFBackend(resolve_builtin("builtin:arena")).generate(reqs, spec)


def test_model_cards(rounds):
    cfg, r0, r1, info = rounds
    card0 = (r0 / "README.md").read_text()
    assert "| round | 0 |" in card0 and "| algorithm | sppo |" in card0
    assert "| parent checkpoint | builtin:arena |" in card0
    card1 = (r1 / "README.md").read_text()
    assert "| round | 1 |" in card1 and "| algorithm | sppo |" in card1
    assert "| parent checkpoint | round_0/policy |" in card1 and "| judge | oracle |" in card1   # run-relative
    assert "| data: train prompts | builtin:arena/train" in card1 and "| data: pairs of this round | 2 |" in card1
    assert "| data: pairs replayed from earlier rounds | 1 |" in card1 and "| data: prompts with a pair | 2 |" in card1
    assert f"| training: steps | {info['steps']} |" in card1 and f"| training: pairs | {info['pairs']} |" in card1
    assert "training: train_loss" in card1 and "training: updated_fraction" in card1
    assert "round_1/eval/metrics.json" in card1
    assert '"do_sample": true' in card1 and card1.startswith("---\nlibrary_name: transformers\n")


def _eval_dir(run: Path, n: int, cfg: Config) -> Path:
    """A round's eval dir as evaluate/eval_generations leave it, from hand-written generations."""
    from pipelines.evaluate import export_alpaca_eval
    from selfplay.records import Generation, to_rows

    out = run / f"round_{n}" / "eval"
    gens = [Generation(str(i), p, j, 100 * i + j, f"r{n} {p} {j}", 3, True, n)
            for i, p in enumerate(["Tell me about the ocean.", "Describe the forest."]) for j in range(2)]
    datasets.Dataset.from_list(to_rows(gens)).save_to_disk(str(out / "generations"))
    export_alpaca_eval(out / "generations", cfg, n, out)
    return out


def test_alpaca_eval_generator_names_are_per_run(tmp_path):
    """Two runs that differ in a setting (here the seed) never share a generator name; the same config in two
    run dirs does (same outputs, and artifacts that do not depend on where the run dir lives)."""
    from pipelines.checkpoint_files import run_id
    names = set()
    for run_name, seed in (("sppo_a", 0), ("sppo_b", 1)):
        run = tmp_path / run_name
        cfg = Config(run_dir=str(run) + "/", seed=seed,
                     eval=EvalConfig(samples_per_prompt=2, temperature=0.8, top_p=0.95))
        for n in (0, 1):
            out = _eval_dir(run, n, cfg)
            rows = json.loads((out / "alpaca_eval.json").read_text())
            assert [r["output"] for r in rows] == [f"r{n} Tell me about the ocean. 0", f"r{n} Describe the forest. 0"]
            assert {r["generator"] for r in rows} == {f"sppo-{run_id(cfg)}/round_{n}"}
            names.add(rows[0]["generator"])
            decoding = json.loads((out / "alpaca_eval_decoding.json").read_text())
            assert decoding == {"generator": f"sppo-{run_id(cfg)}/round_{n}", "round": n, "temperature": 0.8,
                                "top_p": 0.95, "max_new_tokens": cfg.generation.max_new_tokens, "samples_per_prompt": 2,
                                "exported_sample": 0, "seed": seed, "backend": "hf"}
    assert len(names) == 4
    moved = Config(run_dir=str(tmp_path / "elsewhere"), seed=1,
                   eval=EvalConfig(samples_per_prompt=2, temperature=0.8, top_p=0.95))
    assert run_id(moved) == run_id(cfg)
    # how it runs (resources, retries, logging) is not what it makes
    retried = dataclasses.replace(moved, resources=dataclasses.replace(moved.resources, stage_retries=3))
    assert run_id(retried) == run_id(cfg) != run_id(dataclasses.replace(cfg, algorithm="dpo"))


def test_round_zero_eval_stage_exports_alpaca_eval(tmp_path):
    from pipelines.checkpoint_files import run_id
    from pipelines.evaluate import eval_generations
    from selfplay.data import resolve_builtin

    run = tmp_path / "arena_run"
    cfg = Config(run_dir=str(run), data=DataConfig(eval_limit=3),
                 generation=GenerationConfig(max_new_tokens=6), eval=EvalConfig(samples_per_prompt=1))
    out = run / "round_0" / "eval"
    eval_generations(resolve_builtin("builtin:arena"), cfg, 0, out)
    rows = json.loads((out / "alpaca_eval.json").read_text())
    assert len(rows) == 3 and {r["generator"] for r in rows} == {f"sppo-{run_id(cfg)}/round_0"}
    assert json.loads((out / "alpaca_eval_decoding.json").read_text())["round"] == 0


@pytest.mark.parametrize("which", [0, 1])
def test_tokenizer_files_say_what_the_model_takes(rounds, which):
    """model_max_length is the model's 256 positions (a tokenizer built from a file says 1e30), and no loading
    flag of the machine that saved it travels with the checkpoint."""
    from transformers import AutoTokenizer

    from selfplay.checkpoint import MACHINE_LOCAL
    ckpt = rounds[1 + which]
    saved = json.loads((ckpt / "tokenizer_config.json").read_text())
    assert saved["model_max_length"] == 256 == json.loads((ckpt / "config.json").read_text())["max_position_embeddings"]
    assert not set(MACHINE_LOCAL) & set(saved), saved
    assert AutoTokenizer.from_pretrained(ckpt).model_max_length == 256


def test_model_card_names_the_hub_sources_and_takes_the_evaluation(tmp_path):
    from pipelines.checkpoint_files import add_evaluation, write_model_card

    run = tmp_path / "run"
    ckpt = run / "round_2" / "policy"
    ckpt.mkdir(parents=True)
    cfg = Config(run_dir=str(run), model=ModelConfig(policy="Qwen/Qwen2-0.5B-Instruct"),
                 data=DataConfig(train_prompts=("UCLA-AGI/data-mistral-7b-instruct-sppo-iter1", "./local.jsonl"),
                                 eval_prompts="tatsu-lab/alpaca_eval"))
    write_model_card(ckpt, cfg, 2, parent=str(run / "round_1" / "policy"),
                     references={"previous": str(run / "round_1" / "policy")})
    card = (ckpt / "README.md").read_text()
    front = card.split("---")[1]
    assert "base_model: Qwen/Qwen2-0.5B-Instruct" in front
    assert "datasets: [UCLA-AGI/data-mistral-7b-instruct-sppo-iter1, tatsu-lab/alpaca_eval]" in front
    assert "| parent checkpoint | round_1/policy |" in card and "| reference (previous) | round_1/policy |" in card
    assert str(tmp_path) not in card
    metrics = {"round": 2, "winrate_vs_initial": {"mean": 0.71, "ci_low": 0.66, "ci_high": 0.75},
               "winrate_vs_previous": {"mean": 0.55, "ci_low": 0.5, "ci_high": 0.6}, "eval_judge": {"name": "oracle"}}
    for _ in range(2):   # a second evaluation replaces the first, never appends another
        add_evaluation(ckpt, metrics)
    card = (ckpt / "README.md").read_text()
    assert card.count("## Evaluation") == 1 and "| win rate vs round 0 | 0.710 [0.660, 0.750] |" in card
    assert "| win rate vs the previous round | 0.550 [0.500, 0.600] |" in card and "judged by `oracle`" in card
