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


def build_judge(name: str, cfg, ctx: JudgeContext = JudgeContext()) -> Judge:
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; choose one of {', '.join(sorted(JUDGES))}")
    return JUDGES[name](cfg, ctx)
