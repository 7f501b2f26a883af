"""Make llm-blender 0.0.2 importable and usable on transformers 5.

llm-blender is optional: our PairRM judge (``judges/pairrm_model.py``) is native and never imports it.
It is only needed to cross-check our scores against the original (tests, ``scripts/bench_pairrm.py``).
llm-blender 0.0.2 breaks on transformers 5 in three places (see research/environment.md §1):

1. ``from transformers.utils.hub import TRANSFORMERS_CACHE`` fails: the constant was removed.
   We restore it as the hub cache path, which is what it used to alias.
2. Its collator calls ``tokenizer.batch_encode_plus``, which transformers 5 removed. ``__call__``
   on a list of texts does the same thing, so the missing method forwards there.
3. ``DebertaV2PairRM.__init__`` reads ``config.sep_token_id``; transformers 5 configs no longer
   carry generic token ids, and the published ``llm-blender/PairRM-hf`` config.json has none, so
   loading it raises AttributeError. The constructor is wrapped to default the attribute to None
   (the model never uses it in ``forward``).

Every step is idempotent and only fills in what is missing, so on transformers 4 nothing changes.
"""
from __future__ import annotations

import functools
from types import ModuleType

_PATCHED_FLAG = "_selfplay_compat_patched"


def _batch_encode_plus(self, batch_text_or_text_pairs, **kwargs):
    """Stand-in for the transformers-4 method: encoding a list is what ``__call__`` does now."""
    return self(batch_text_or_text_pairs, **kwargs)


def _patch_transformers() -> None:
    import huggingface_hub.constants as hub_constants
    import transformers.utils.hub as hub
    from transformers import PreTrainedTokenizerBase

    if not hasattr(hub, "TRANSFORMERS_CACHE"):  # (1)
        hub.TRANSFORMERS_CACHE = hub_constants.HF_HUB_CACHE
    if not hasattr(PreTrainedTokenizerBase, "batch_encode_plus"):  # (2)
        PreTrainedTokenizerBase.batch_encode_plus = _batch_encode_plus


def _patch_pairrm_class() -> None:
    from llm_blender.pair_ranker.pairrm import DebertaV2PairRM  # (3)

    original = DebertaV2PairRM.__init__
    if getattr(original, _PATCHED_FLAG, False):
        return

    @functools.wraps(original)
    def __init__(self, config, *args, **kwargs):
        if not hasattr(config, "sep_token_id"):
            config.sep_token_id = None
        original(self, config, *args, **kwargs)

    setattr(__init__, _PATCHED_FLAG, True)
    DebertaV2PairRM.__init__ = __init__


def apply_patch() -> None:
    """Patch transformers so that llm-blender imports (safe to call many times)."""
    _patch_transformers()


def import_llm_blender() -> ModuleType:
    """``import llm_blender`` with the compat patch applied first (slow: 4-8 s, it also imports vllm if present)."""
    apply_patch()
    import llm_blender

    _patch_pairrm_class()
    return llm_blender
