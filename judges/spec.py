"""What a judge module declares (`JUDGE = JudgeSpec(...)`) and what its builder is handed.

Kept apart from judges/registry.py, which discovers the judge modules: they import this module, never the
registry, so discovery and declaration do not import each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from judges.base import Judge
from selfplay.arena import DEFAULT_RULES, ArenaRules
from selfplay.memory import JudgeBudget, ModelFacts


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


# -- the record each judge module declares -----------------------------------------------------------

def _no_check(section) -> Iterator[str]:
    return iter(())


def _no_cross_check(cfg, where: str) -> Iterator[str]:
    return iter(())


def _no_scores(section) -> bool:
    return False


@dataclass(frozen=True)
class JudgeSpec:
    build: Callable[[Any, JudgeContext], Judge]
    # What the judge built from a section holds on `device` ("cpu" | "cuda"): (section, the policy's
    # ModelFacts, which size the judges that score with the policy, device, model.dtype).
    budget: Callable[[Any, ModelFacts, str, str], JudgeBudget]
    # The compute dtype `make plan` prints for it: (section, device, model.dtype) -> "fp16", "fp32", "—" ...
    dtype_label: Callable[[Any, str, str], str]
    check: Callable[[Any], Iterator[str]] = _no_check   # the section's values this judge cannot honour
    # Rules across sections: (the whole Config, "judge" | "eval_judge") -> problems; check_config puts
    # the section's name in front of each.
    cross_check: Callable[[Any, str], Iterator[str]] = _no_cross_check
    modes: tuple[str, ...] = ("pairwise",)               # the judge.mode values it has
    # Whether the judge built from a section gives each response an absolute score (score_groups,
    # stored as JudgedPrompt.scores): DNO's pair rule needs them.
    scores: Callable[[Any], bool] = _no_scores
    reads_dtype: bool = False                            # whether judge.dtype reaches its model
    # Section keys only some judges read (e.g. "prompt_format"): set away from its default for a judge
    # that does not list it, the config refuses it (it would be silently ignored).
    reads: tuple[str, ...] = ()
    plays_arena: bool = False                            # it knows the synthetic arena's truth (the oracle)
