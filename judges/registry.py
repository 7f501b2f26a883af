"""The one registry of judges. `judge.name` (and `eval.judge`) pick one by name.

A builder gets the judge section of the config and a context naming the round's policies (the
self-reward and CREAM judges score with the policy itself). Heavy dependencies are imported
inside the builders, so listing the registry costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from judges.base import Judge


@dataclass(frozen=True)
class JudgeContext:
    policy: str = ""            # the round's current policy checkpoint (π_t)
    previous_policy: str = ""   # π_{t-1}, for CREAM's consistency
    reference_policy: str = ""  # π_ref for CREAM's implicit reward
    device: str = "cpu"
    seed: int = 0


def _oracle(cfg, ctx: JudgeContext) -> Judge:
    from judges.oracle import OracleJudge
    return OracleJudge()


def _pairrm(cfg, ctx: JudgeContext) -> Judge:
    from judges.pairrm import PairRMJudge
    return PairRMJudge(cfg.model or "llm-blender/PairRM-hf", device=ctx.device, batch_size=cfg.batch_size,
                       aggregation=cfg.aggregation)


def _llm(cfg, ctx: JudgeContext) -> Judge:
    from judges.llm import build_llm_judge
    return build_llm_judge(cfg, ctx)


def _self_reward(cfg, ctx: JudgeContext) -> Judge:
    from judges.self_reward import build_self_reward_judge
    return build_self_reward_judge(cfg, ctx)


def _cream(cfg, ctx: JudgeContext) -> Judge:
    from judges.cream import build_cream_judge
    return build_cream_judge(cfg, ctx)


JUDGES: dict[str, Callable[..., Judge]] = {
    "oracle": _oracle, "pairrm": _pairrm, "llm": _llm, "self_reward": _self_reward, "cream": _cream,
}


def check_judge_config(cfg, where: str = "judge") -> None:
    """Raise ValueError naming `where`.<key> for any value the named judge cannot honour."""
    c = lambda ok, msg: None if ok else (_ for _ in ()).throw(ValueError(f"{where}.{msg}"))  # noqa: E731
    c(cfg.consistency in ("per_prompt", "mean"), f"consistency: per_prompt or mean, got {cfg.consistency!r}")
    c(cfg.score_mode in ("sample", "logprobs"), f"score_mode: sample or logprobs, got {cfg.score_mode!r}")
    c(cfg.aggregation in ("sppo", "pairwise"), f"aggregation: sppo or pairwise, got {cfg.aggregation!r}")
    c(cfg.samples >= 1, f"samples: must be >= 1, got {cfg.samples}")
    c(cfg.max_new_tokens >= 0, f"max_new_tokens: must be >= 0 (0 = default), got {cfg.max_new_tokens}")
    c(0 < cfg.temperature <= 10, f"temperature: must be in (0, 10], got {cfg.temperature}")
    c(0 < cfg.top_p <= 1, f"top_p: must be in (0, 1], got {cfg.top_p}")
    c(cfg.timeout_s > 0, f"timeout_s: must be positive, got {cfg.timeout_s}")
    c(not (cfg.name == "cream" and cfg.consistency == "mean" and cfg.num_actors > 1),
      "num_actors: the cream judge's consistency=mean spans all prompts; use one judge actor or per_prompt")
    if cfg.name == "llm":
        c(bool(cfg.model or cfg.endpoint), "model: the llm judge needs a checkpoint or an endpoint "
          f"({where}.endpoint plus {where}.model as the served model name)")


def build_judge(name: str, cfg, ctx: JudgeContext = JudgeContext()) -> Judge:
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; choose one of {', '.join(sorted(JUDGES))}")
    return JUDGES[name](cfg, ctx)
