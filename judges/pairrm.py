"""The pairrm judge (``judge.name: pairrm``): PairRM (llm-blender), natively (judges/pairrm_model.py).

``judge.model`` is a hub id or path in either published layout (default ``llm-blender/PairRM-hf``) or
``builtin:arena/pairrm``, the arena's judge trained on the oracle (judges/train_pairrm.py, built on
first use); ``judge.aggregation`` picks how the K×K logits become probabilities; ``judge.dtype`` the
weights' dtype (auto: fp16 on a GPU, fp32 on the CPU, as llm-blender runs it; int8 is the CPU path);
``judge.prompt_format`` the prompt text it reads (raw, or chat: the policy's chat-templated user turn,
what SPPO's scripts/rank.py gives PairRM; the arena's judge was trained on raw prompts).
"""
from __future__ import annotations

from typing import Iterator

from judges.pairrm_model import PairRMJudge, chat_source
from judges.spec import JudgeContext, JudgeSpec, actor_device
from judges.sizing import SHORT
from judges.train_pairrm import BUILTIN, resolve_model
from selfplay.memory import DTYPE_BYTES, JudgeBudget, ModelFacts, judge_weights

DEFAULT_MODEL = "llm-blender/PairRM-hf"
PARAMETERS = 0.44e9   # llm-blender/PairRM: a DeBERTa-v3-large backbone


def _build(cfg, ctx: JudgeContext) -> PairRMJudge:
    return PairRMJudge(resolve_model(cfg.model or DEFAULT_MODEL), device=actor_device(ctx),
                       batch_size=cfg.batch_size, aggregation=cfg.aggregation,
                       dtype=None if cfg.dtype == "auto" else cfg.dtype, source=_source(cfg, ctx))


def _source(cfg, ctx: JudgeContext):
    """judge.prompt_format chat: the round's policy's chat template (its tokenizer), as SPPO's rank.py."""
    if cfg.prompt_format == "raw":
        return None
    if not ctx.policy:
        raise ValueError("judge.prompt_format=chat renders prompts with the policy's chat template, but the judge "
                         "context names no policy")
    from functools import partial

    from transformers import AutoTokenizer
    return partial(chat_source, AutoTokenizer.from_pretrained(ctx.policy))


def _check(cfg) -> Iterator[str]:
    if cfg.model.startswith("builtin:") and cfg.model != BUILTIN:
        yield f"model: unknown builtin judge {cfg.model!r} (the arena's is {BUILTIN})"


def _budget(cfg, policy: ModelFacts, device: str, dtype: str) -> JudgeBudget:
    """Its weights in judge.dtype on a GPU (auto: fp16); the CPU counts fp32."""
    gpu_bytes = DTYPE_BYTES.get(cfg.dtype, 2)   # auto: fp16 (int8 is refused on a GPU when built)
    return judge_weights(cfg.model or "llm-blender/PairRM", PARAMETERS, device, gpu_bytes)


def _dtype_label(cfg, device: str, model_dtype: str) -> str:
    if cfg.dtype != "auto":
        return SHORT[cfg.dtype]
    return "fp32" if device == "cpu" else "fp16"


JUDGE = JudgeSpec(_build, budget=_budget, dtype_label=_dtype_label, check=_check, reads_dtype=True,
                  reads=("prompt_format",))
