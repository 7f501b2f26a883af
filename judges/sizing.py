"""The weights a judge holds, for `make plan` and the memory checks: the shared parts of the judges'
JudgeSpec.budget and JudgeSpec.dtype_label. A judge holds no model (the oracle, an API), its own
checkpoint (bf16 on a GPU), or the policy itself (in model.dtype); all compute in fp32 on the CPU.
"""
from __future__ import annotations

from selfplay.memory import DTYPE_BYTES, JudgeBudget, ModelFacts, judge_weights

NO_MODEL = "—"   # the dtype label of a judge that holds no model
SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "int8": "int8"}


def no_model(what: str) -> JudgeBudget:
    """A judge that loads nothing here: `what` says what answers instead ("no model", "API gpt-4")."""
    return JudgeBudget(what, 0.0, 0.0)


def own_checkpoint(model: str, device: str) -> JudgeBudget:
    """A judge holding its own checkpoint `model` (a path, builtin: or hub id), bf16 on a GPU; sized
    when the checkpoint is on disk, unknown (None) otherwise."""
    from selfplay.data import resolve_builtin
    from selfplay.memory import checkpoint_facts
    local = checkpoint_facts(resolve_builtin(model))
    return judge_weights(model, local.parameters if local else None, device, 2)


def checkpoint_label(device: str) -> str:
    return "fp32" if device == "cpu" else "bf16"


def the_policy(policy: ModelFacts, device: str, dtype: str) -> JudgeBudget:
    """A judge that scores with the round's policy, loaded in the compute dtype model.dtype."""
    return judge_weights("the policy", policy.parameters, device, DTYPE_BYTES[dtype])


def policy_label(device: str, model_dtype: str) -> str:
    return "fp32" if device == "cpu" else SHORT[model_dtype]
