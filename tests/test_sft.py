"""The optional SFT stage before round 1 (init.sft_data) and what CREAM's round 1 gets from it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fixtures_policy import build_tiny_policy
from selfplay.config import ConfigError
from pipelines.config import load_config


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> str:
    return build_tiny_policy(tmp_path_factory.mktemp("tiny_policy"))


def test_cream_without_an_sft_stage_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="judge.name=cream.*init.sft_data"):
        load_config("configs/arena_cream.yaml", ["init.sft_data="])
    assert load_config("configs/arena_cream.yaml").init.sft_data == "builtin:arena/sft"


def test_sft_fits_the_demonstrations(tiny_policy, tmp_path):
    """The stage lowers the demonstrations' NLL and leaves a plain checkpoint beside the untouched base."""
    from selfplay.logprobs import sequence_logprobs
    from selfplay.sft import load_demonstrations, train_sft
    from selfplay.trainer import load_policy

    data = tmp_path / "sft.jsonl"
    rows = [{"q": f"tell me about ocean {w}", "a": "wave tide coral"} for w in ("a", "the", "owl", "pine")]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, [f"model.policy={tiny_policy}", f"init.sft_data={data}", "init.epochs=8", "init.lr=1e-2",
                             "init.prompt_column=q", "init.response_column=a",
                             "train.batch_size=2", "train.schedule=constant", "train.warmup_ratio=0"])
    demos = load_demonstrations(cfg)
    res = train_sft(tiny_policy, tmp_path / "m1", cfg, seed=0)
    assert res.steps == 16 and res.step_log[0]["loss"] > res.step_log[-1]["loss"]   # init.epochs, not train.epochs
    assert {r["lr"] for r in res.step_log} == {1e-2}                                   # init.lr, not train.lr
    assert [d.prompt for d in demos][:1] == ["tell me about ocean a"] and demos[0].chosen == "wave tide coral"

    def nll(path):
        tok, model = load_policy(str(path))
        with torch.no_grad():
            return -sequence_logprobs(model, tok, [d.prompt for d in demos], [d.chosen for d in demos],
                                      average=True).mean().item()
    assert nll(tmp_path / "m1") < nll(tiny_policy) - 0.5


def test_round_one_compares_the_sft_model_with_the_base(tmp_path):
    from pipelines.graph import judge_context
    cfg = load_config("configs/arena_cream.yaml", [f"run_dir={tmp_path}"])
    ctx = judge_context(cfg, 1)
    assert Path(ctx.policy) == tmp_path / "round_0/policy"                 # M1
    assert Path(ctx.previous_policy) == Path(ctx.reference_policy) == tmp_path / "round_0/base"   # M0
    assert Path(judge_context(cfg, 2).previous_policy) == tmp_path / "round_0/policy"
    plain = load_config("configs/arena_sppo.yaml", [f"run_dir={tmp_path}"])
    assert Path(judge_context(plain, 1).previous_policy) == tmp_path / "round_0/policy"
