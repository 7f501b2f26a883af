"""The judge registry (judges/registry.py): judges discovered from their modules, cheaply and loudly; one
capability protocol every judge declares in full; check_config holding every judge rule of a Config."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import selfplay.config
from judges.base import Judge
from judges.registry import (JudgeContext, JudgeSpec, check_config, discover, judge_spec, judge_specs, opened,
                             uses_arena)
from pipelines.config import load_config
from selfplay.config import ConfigError, JudgeConfig, read_config
from selfplay.memory import ModelFacts

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["cream", "llm", "oracle", "pair_classifier", "pair_pm", "pairrm", "self_reward"]


# ---------------------------------------------------------------- discovery

def test_listing_the_registry_imports_no_torch_or_transformers():
    """A fresh interpreter lists every judge (each module of the package imported) without the heavy stack."""
    code = ("import json, sys\nfrom judges.registry import judge_specs\n"
            "print(json.dumps([sorted(judge_specs()), [m for m in ('torch', 'transformers', 'llm_blender') "
            "if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    names, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert names == NAMES and heavy == []


def _package(root: Path, name: str, modules: dict[str, str]) -> str:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for module, text in modules.items():
        (pkg / f"{module}.py").write_text(text)
    return name


GOOD = ("from judges.registry import JudgeSpec\n"
        "JUDGE = JudgeSpec(build=lambda cfg, ctx: None, budget=lambda *a: None, dtype_label=lambda *a: 'fp32')\n")


def test_a_module_with_a_judge_is_that_judge_and_a_helper_is_not(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    pkg = _package(tmp_path, "judges_found", {"good": GOOD, "helper": "X = 1\n"})
    found = discover(pkg)
    assert list(found) == ["good"] and isinstance(found["good"], JudgeSpec)
    assert found["good"].dtype_label(None, "cpu", "float32") == "fp32"


def test_a_broken_judge_module_is_reported_by_name(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    pkg = _package(tmp_path, "judges_broken", {"good": GOOD, "broken": "import no_such_dependency_here\n"})
    with pytest.raises(ImportError, match=r"module judges_broken\.broken failed to import: ModuleNotFoundError: "
                                          r"No module named 'no_such_dependency_here'"):
        discover(pkg)


def test_a_judge_that_is_not_a_judge_spec_is_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    pkg = _package(tmp_path, "judges_odd", {"odd": "JUDGE = {'build': None}\n"})
    with pytest.raises(ImportError, match=r"judges_odd\.odd\.JUDGE is a dict, not a JudgeSpec"):
        discover(pkg)


def test_every_judge_is_named_after_its_module():
    for name, spec in judge_specs().items():
        assert spec is sys.modules[f"judges.{name}"].JUDGE
    with pytest.raises(ValueError, match="unknown judge 'nope'; choose one of cream, llm, oracle"):
        judge_spec("nope")


# ---------------------------------------------------------------- the capability protocol

MEMBERS = {"name", "order_symmetric", "both_orders", "independent_pairs", "compare", "matrices", "score_groups",
           "consistency", "diagnostics", "close"}


def _judge_classes() -> list[type]:
    from judges.cream import CreamJudge
    from judges.dno_rubric import RubricJudge
    from judges.llm import LLMJudge
    from judges.oracle import OracleJudge
    from judges.pair_classifier import PairClassifierJudge
    from judges.pair_pm import PairPMJudge
    from judges.pairrm_model import PairRMJudge
    from judges.self_reward import SelfRewardJudge
    return [OracleJudge, PairRMJudge, LLMJudge, RubricJudge, SelfRewardJudge, CreamJudge, PairPMJudge,
            PairClassifierJudge]


def test_every_judge_class_declares_the_whole_protocol():
    declared = set(typing.get_type_hints(Judge)) | {n for n, v in vars(Judge).items()
                                                     if callable(v) and not n.startswith("_")}
    assert declared == MEMBERS
    for cls in _judge_classes():
        missing = sorted(m for m in MEMBERS if not hasattr(cls, m))   # flags and name are class attributes
        assert not missing, (cls.__name__, missing)
        assert all(isinstance(getattr(cls, f), bool) for f in ("order_symmetric", "both_orders", "independent_pairs"))


class _Source:
    """A verdict source for the LLM judge that never runs."""
    def __call__(self, prompts):
        raise AssertionError("not asked")

    def close(self):
        pass


def test_judges_without_a_capability_answer_its_none_value():
    from judges.cream import CreamJudge
    from judges.dno_rubric import RubricJudge
    from judges.llm import LLMJudge
    from judges.oracle import OracleJudge
    from judges.self_reward import SelfRewardJudge

    p, rs = ["Describe the ocean."], [["wave tide", "pine"]]
    oracle = OracleJudge()
    assert oracle.matrices(p, rs) is None and oracle.consistency(["i"], p, rs) is None
    assert oracle.diagnostics() == {} and oracle.close() is None
    assert [s.tolist() for s in oracle.score_groups(p, rs)] == [[2.0, -1.0]]   # the capability it has
    llm = LLMJudge(_Source())
    assert llm.score_groups(p, rs) is None and llm.consistency(["i"], p, rs) is None
    assert RubricJudge(endpoint=None).consistency(["i"], p, rs) is None
    policy = SelfRewardJudge("some/policy")          # nothing is loaded before it scores
    assert policy.score_groups(p, rs) is None and policy.consistency(["i"], p, rs) is None
    cream = CreamJudge("some/policy")
    assert cream.score_groups(p, rs) is None and cream.close() is None
    assert cream.consistency(["i"], p, rs) == {"i": 1.0}                     # round 1: no previous model, C = 1


class _Recording:
    name, order_symmetric, both_orders, independent_pairs = "recording", True, False, True

    def __init__(self):
        self.closed = 0

    def close(self):
        self.closed += 1


def test_opened_closes_the_judge_after_the_block_also_when_it_fails(monkeypatch):
    import judges.registry
    built = []
    monkeypatch.setattr(judges.registry, "build_judge", lambda name, cfg, ctx: built.append(_Recording()) or built[-1])
    with opened("x", None) as j:
        assert j.closed == 0
    with pytest.raises(RuntimeError, match="mid-block"):
        with opened("x", None):
            raise RuntimeError("mid-block")
    assert [b.closed for b in built] == [1, 1]


def test_the_oracle_opened_from_the_registry_uses_the_context_arena():
    from selfplay.arena import ArenaRules, oracle_probability
    rules = ArenaRules(quality_weight=0.3)
    with opened("oracle", JudgeConfig(), JudgeContext(arena=rules)) as j:
        got = j.compare(["Describe the ocean."], ["wave tide coral"], ["pine"])
    assert got[0] == oracle_probability("Describe the ocean.", "wave tide coral", "pine", rules)


# ---------------------------------------------------------------- what make plan reads

def test_memory_and_dtype_labels_come_from_each_judge():
    policy = ModelFacts(7e9)
    label = lambda j, device, dtype="bfloat16": judge_spec(j.name).dtype_label(j, device, dtype)   # noqa: E731
    budget = lambda j, device, dtype="bfloat16": judge_spec(j.name).budget(j, policy, device, dtype)  # noqa: E731
    assert label(JudgeConfig(name="oracle"), "cuda") == "—" and budget(JudgeConfig(name="oracle"), "cuda").bytes == 0
    pairrm = JudgeConfig(name="pairrm")
    assert (label(pairrm, "cuda"), label(pairrm, "cpu")) == ("fp16", "fp32")
    as_bf16 = dataclasses.replace(pairrm, dtype="bfloat16")
    assert label(as_bf16, "cuda") == "bf16" and label(dataclasses.replace(pairrm, dtype="int8"), "cpu") == "int8"
    assert budget(dataclasses.replace(pairrm, dtype="float32"), "cuda").bytes == 0.44e9 * 4   # judge.dtype counts
    assert budget(as_bf16, "cuda").bytes == 0.44e9 * 2
    api = JudgeConfig(name="llm", model="gpt-4", endpoint="http://x")
    assert label(api, "cuda") == "—" and budget(api, "cuda").model == "API gpt-4"
    assert label(JudgeConfig(name="llm", model="org/m"), "cuda") == "bf16"
    assert label(JudgeConfig(name="pair_pm", model="org/m"), "cpu") == "fp32"
    assert label(JudgeConfig(name="self_reward"), "cuda", "float16") == "fp16"
    assert budget(JudgeConfig(name="cream"), "cuda", "float16").bytes == 7e9 * 2
    assert budget(JudgeConfig(name="cream"), "cuda", "float32").model == "the policy"


# ---------------------------------------------------------------- check_config: every judge rule

def _unvalidated(overrides: list[str], monkeypatch):
    """The Config load_config would build, without selfplay.config.validate."""
    with monkeypatch.context() as m:
        m.setattr(selfplay.config, "validate", lambda cfg: None)
        return read_config(None, overrides)


RULES = {   # rule: (overrides, the message's start)
    "name": (["judge.name=nope"], "judge.name: unknown 'nope' (choose one of cream, llm, oracle"),
    "eval name": (["eval_judge.name=nope"], "eval_judge.name: unknown 'nope'"),
    "backend": (["judge.backend=nope"], "judge.backend: unknown 'nope' (choose one of auto, hf, vllm)"),
    "batch_size": (["judge.batch_size=0"], "judge.batch_size: must be >= 1, got 0"),
    "num_actors": (["eval_judge.num_actors=0"], "eval_judge.num_actors: at least 1, got 0"),
    "fields": (["judge.temperature=0"], "judge.temperature: must be in (0, 10], got 0"),
    "mode": (["judge.mode=rubric"], "judge.mode: the oracle judge has no 'rubric' mode (it has pairwise)"),
    "own check": (["judge.name=llm"], "judge.model: the llm judge needs a local checkpoint"),
    "own check, eval": (["eval_judge.name=pairrm", "eval_judge.model=builtin:arena/x"],
                        "eval_judge.model: unknown builtin judge 'builtin:arena/x'"),
    "cream's own check": (["judge.name=cream", "judge.consistency=mean", "judge.num_actors=2",
                           "init.sft_data=builtin:arena/sft"], "judge.num_actors: the cream judge's consistency=mean"),
    "dtype not read": (["judge.dtype=int8"], "judge.dtype: the oracle judge does not read it (only pairrm does); remove it"),
    "dtype value": (["judge.name=pairrm", "judge.dtype=int4"], "judge.dtype: auto, float32, bfloat16, float16 or int8"),
    "cream needs sft": (["judge.name=cream"], "judge.name=cream: CREAM's consistency compares the policy's ranking"),
    "arena": (["judge.name=pairrm", "eval_judge.name=pairrm", "data.eval_prompts=PROMPTS", "arena.quality_cap=3"],
              "arena: set, but nothing in this config plays the arena"),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_check_config_refuses_what_the_config_refused_with_the_same_message(rule, tmp_path, monkeypatch):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt_id": "a", "prompt": "hi"}) + "\n")
    overrides, start = RULES[rule]
    overrides = [o.replace("PROMPTS", str(prompts)) for o in overrides]
    with pytest.raises(ValueError) as mine:
        check_config(_unvalidated(overrides, monkeypatch))
    assert str(mine.value).startswith(start), str(mine.value)
    with pytest.raises(ConfigError) as config:   # the loader every entry point uses (pipelines/config.py)
        load_config(None, overrides)
    assert str(mine.value) == str(config.value)


def test_check_config_accepts_what_the_judges_can_honour(tmp_path, monkeypatch):
    for overrides in ([], ["judge.name=pairrm", "arena.quality_cap=3"],            # the oracle evaluates: arena
                      ["eval_judge.name=cream"],                                  # CREAM's SFT rule is training's
                      ["judge.name=cream", "init.sft_data=builtin:arena/sft"],
                      ["judge.name=llm", "judge.model=m", "judge.mode=rubric", "judge.endpoint=http://127.0.0.1:1/v1"]):
        check_config(_unvalidated(overrides, monkeypatch))
        load_config(None, overrides)


def test_uses_arena_reads_the_judges_declarations(tmp_path, monkeypatch):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt_id": "a", "prompt": "hi"}) + "\n")
    cases = {(): True, ("judge.name=pairrm",): True,                               # eval_judge: oracle
             ("judge.name=pairrm", "eval_judge.name=pairrm"): True,              # builtin:arena eval prompts
             ("judge.name=pairrm", "eval_judge.name=pairrm", f"data.eval_prompts={prompts}"): False,
             ("eval_judge.name=pairrm", f"data.eval_prompts={prompts}"): True}   # judge: oracle
    for overrides, want in cases.items():
        cfg = _unvalidated(list(overrides), monkeypatch)
        assert uses_arena(cfg) is want, overrides
    assert [n for n, s in judge_specs().items() if s.plays_arena] == ["oracle"]


def test_scores_are_declared_per_section():
    from judges.registry import judge_scores
    assert judge_scores(JudgeConfig(name="oracle")) and judge_scores(JudgeConfig(name="llm", mode="rubric"))
    assert not judge_scores(JudgeConfig(name="llm")) and not judge_scores(JudgeConfig(name="pairrm"))
