"""The one registry of judges. `judge.name` picks the training judge, `eval_judge.name` the evaluation one.

Each judge is a `JudgeSpec`: a builder, which gets its config section and a context naming the
round's policies (the self-reward and CREAM judges score with the policy itself) and the device, and
a check of the section's values. `selfplay.config.validate` runs the checks (`check_judge_config`)
for both sections before any stage, so a value a judge cannot honour is refused up front, never at
build time inside an actor. Heavy dependencies are imported inside the builders, so listing the
registry costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from judges.base import Judge
from selfplay.arena import DEFAULT_RULES, ArenaRules


@dataclass(frozen=True)
class JudgeContext:
    policy: str = ""            # the round's current policy checkpoint (π_t)
    previous_policy: str = ""   # π_{t-1}, for CREAM's consistency
    reference_policy: str = ""  # π_ref for CREAM's implicit reward
    device: str = "cpu"         # from the resources of the actor the judge runs in (planned_device)
    seed: int = 0
    arena: ArenaRules = DEFAULT_RULES   # the oracle's rules (config section arena:)


def planned_device(resources) -> str:
    """The device an actor holding `resources` computes on, decided from the resources alone.

    The driver (or a coordinating actor) plans the judge's device but is not the actor that runs it,
    so the GPUs its own process sees do not count; the judge's actor confirms it (`actor_device`)."""
    from selfplay.devices import device_for
    return device_for(resources, gpu_count=1)


def actor_device(ctx: JudgeContext) -> str:
    """ctx.device, confirmed inside the actor building the judge: resources that promised a GPU this
    process cannot see raise DeviceError here rather than quietly running on the CPU."""
    from selfplay.config import ActorResources
    from selfplay.devices import device_for
    return device_for(ActorResources(num_gpus=float(ctx.device != "cpu")))


# -- builders --------------------------------------------------------------------------------------

def _oracle(cfg, ctx: JudgeContext) -> Judge:
    from judges.oracle import OracleJudge
    return OracleJudge(ctx.arena)


def _pairrm(cfg, ctx: JudgeContext) -> Judge:
    from judges.pairrm import PairRMJudge
    from judges.train_pairrm import resolve_model   # builtin:arena/pairrm, trained on first use
    return PairRMJudge(resolve_model(cfg.model or "llm-blender/PairRM-hf"), device=actor_device(ctx),
                       batch_size=cfg.batch_size, aggregation=cfg.aggregation,
                       dtype=None if cfg.dtype == "auto" else cfg.dtype)


def _llm(cfg, ctx: JudgeContext) -> Judge:
    from judges.llm import build_llm_judge
    return build_llm_judge(cfg, ctx)


def _self_reward(cfg, ctx: JudgeContext) -> Judge:
    from judges.self_reward import build_self_reward_judge
    return build_self_reward_judge(cfg, ctx)


def _cream(cfg, ctx: JudgeContext) -> Judge:
    from judges.cream import build_cream_judge
    return build_cream_judge(cfg, ctx)


def _pair_pm(cfg, ctx: JudgeContext) -> Judge:
    from judges.pair_pm import build_pair_pm_judge
    return build_pair_pm_judge(cfg, ctx)


def _pair_classifier(cfg, ctx: JudgeContext) -> Judge:
    from judges.pair_classifier import build_pair_classifier_judge
    return build_pair_classifier_judge(cfg, ctx)


# -- checks: each yields "key: problem" for its section ---------------------------------------------

# Field values every judge section must hold, whichever judge it names: a bogus value is refused even
# where this judge would not read it (and an absent eval_judge: copies judge:, values included).
_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("aggregation", lambda v: v in ("sppo", "pairwise"), "sppo or pairwise"),
    ("consistency", lambda v: v in ("per_prompt", "mean"), "per_prompt or mean"),
    ("score_mode", lambda v: v in ("sample", "logprobs"), "sample or logprobs"),
    ("samples", lambda v: v >= 1, "must be >= 1"),
    ("max_new_tokens", lambda v: v >= 0, "must be >= 0 (0 = the judge's default)"),
    ("temperature", lambda v: 0 < v <= 10, "must be in (0, 10]"),    # NaN fails too
    ("top_p", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("timeout_s", lambda v: v > 0, "must be positive"),
    ("mode", lambda v: v in ("pairwise", "rubric"), "pairwise or rubric"),
    ("dtype", lambda v: v in ("auto", "float32", "bfloat16", "float16", "int8"),
     "auto, float32, bfloat16, float16 or int8"),
)


def _no_check(cfg) -> Iterator[str]:
    return iter(())


def _check_llm(cfg) -> Iterator[str]:
    if not cfg.model:   # with an endpoint, the name of the model it serves
        yield "model: the llm judge needs a local checkpoint, or with endpoint set the served model's name"
    if cfg.mode == "rubric" and not cfg.endpoint:
        yield ("endpoint: judge.mode=rubric (DNO's annotation prompt: a written justification and score per "
               "candidate) needs an OpenAI-compatible endpoint; a local checkpoint is read one verdict token at a time")


def _check_local_model(cfg) -> Iterator[str]:
    """pair_pm / pair_classifier: a local model (a checkpoint path or hub id) run with transformers."""
    import os
    import re
    if not cfg.model:
        yield f"model: the {cfg.name} judge needs a checkpoint path or hub id"
    elif not os.path.isdir(cfg.model) and (cfg.model.startswith((".", "/", "~"))
                                           or not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", cfg.model)):
        yield f"model: {cfg.model!r} is neither a checkpoint directory nor a hub id (org/name)"
    if cfg.endpoint:
        yield f"endpoint: the {cfg.name} judge runs its model locally; endpoint is for the llm judge"
    if cfg.backend == "vllm":   # auto resolves to hf for these judges
        yield f"backend: the {cfg.name} judge runs on transformers (hf or auto), got {cfg.backend!r}"


def _check_pairrm(cfg) -> Iterator[str]:
    if cfg.model.startswith("builtin:") and cfg.model != "builtin:arena/pairrm":
        yield f"model: unknown builtin judge {cfg.model!r} (the arena's is builtin:arena/pairrm)"


def _check_cream(cfg) -> Iterator[str]:
    if cfg.consistency == "mean" and cfg.num_actors > 1:
        yield "num_actors: the cream judge's consistency=mean spans all prompts; use one judge actor or per_prompt"


@dataclass(frozen=True)
class JudgeSpec:
    build: Callable[[Any, JudgeContext], Judge]
    check: Callable[[Any], Iterator[str]] = _no_check   # this judge's own needs, beyond _FIELDS
    modes: tuple[str, ...] = ("pairwise",)               # the judge.mode values it has
    # Whether the judge built from a section gives each response an absolute score (score / score_groups,
    # stored as JudgedPrompt.scores): DNO's pair rule needs them.
    scores: Callable[[Any], bool] = lambda cfg: False
    reads_dtype: bool = False                            # whether judge.dtype reaches its model


JUDGES: dict[str, JudgeSpec] = {
    "oracle": JudgeSpec(_oracle, scores=lambda cfg: True),           # the arena's quality q(y)
    "pairrm": JudgeSpec(_pairrm, _check_pairrm, reads_dtype=True),
    "llm": JudgeSpec(_llm, _check_llm, modes=("pairwise", "rubric"), scores=lambda cfg: cfg.mode == "rubric"),
    "self_reward": JudgeSpec(_self_reward),
    "cream": JudgeSpec(_cream, _check_cream),
    "pair_pm": JudgeSpec(_pair_pm, _check_local_model),
    "pair_classifier": JudgeSpec(_pair_classifier, _check_local_model),
}


def check_judge_config(cfg, where: str = "judge") -> None:
    """Raise ValueError naming `where`.<key> for the first value the named judge cannot honour."""
    spec = JUDGES.get(cfg.name)   # an unknown name is reported by selfplay.config itself
    problems = [f"{key}: {rule}, got {getattr(cfg, key)!r}" for key, ok, rule in _FIELDS if not ok(getattr(cfg, key))]
    if spec and cfg.mode not in spec.modes:
        problems.append(f"mode: the {cfg.name} judge has no {cfg.mode!r} mode (it has {', '.join(spec.modes)})")
    problems += list(spec.check(cfg)) if spec else []
    if spec and cfg.dtype != "auto" and not spec.reads_dtype:
        problems.append(f"dtype: the {cfg.name} judge does not read it (only pairrm does); remove it")
    if problems:
        raise ValueError(f"{where}.{problems[0]}")


def judge_scores(cfg) -> bool:
    """Whether the judge this section names gives absolute per-response scores (JudgeSpec.scores)."""
    spec = JUDGES.get(cfg.name)
    return bool(spec and spec.scores(cfg))


def build_judge(name: str, cfg, ctx: JudgeContext = JudgeContext()) -> Judge:
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; choose one of {', '.join(sorted(JUDGES))}")
    return JUDGES[name].build(cfg, ctx)
