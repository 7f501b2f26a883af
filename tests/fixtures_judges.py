"""Tiny local models for the judge tests and the PairRM benchmark (no hub anywhere).

* :func:`build_tiny_pairrm` writes one random tiny DeBERTa-v2 PairRM in the three layouts that
  matter: the backbone alone, llm-blender's own ranker checkpoint (what ``Blender.loadranker``
  reads, i.e. the ``llm-blender/PairRM`` layout) and the ``llm-blender/PairRM-hf`` layout
  (``DebertaV2PairRM``). Both checkpoints hold the very same tensors, so any two loaders must agree.
* :func:`build_tiny_causal_lm` writes a random tiny Qwen2 chat model with a byte-level BPE tokenizer.

Plain builder functions: test modules wrap them in module-scoped fixtures.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

PAIRRM_PREFIXES = ["<|source|>", "<|candidate1|>", "<|candidate2|>", "<|candidate|>"]  # llm-blender's order
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = ("the a an of to and in is it that for on with as was by be this are or from at which but not have "
         "has had were they you we he she his her their our your one two three four five six seven eight nine "
         "ten good bad best worse answer question explain why how what when where who response assistant user "
         "score rating points helpful harmless honest clear concise detailed correct wrong python code function "
         "list number value sum mean data model train test judge prompt better worse first second both neither "
         "cat dog tree river mountain city music paint travel science history math poem story recipe cook").split()


def _pseudo_words(n: int = 600, seed: int = 1) -> tuple[str, ...]:
    """Made-up words from syllables, so that trained vocabularies reach ~1000 entries."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfgklmnprstvz" for v in "aeiou"]
    return tuple("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(n))


VOCAB = WORDS + list(_pseudo_words())


def corpus(n_lines: int = 3000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(VOCAB) for _ in range(rng.randint(3, 25))]
        lines.append(" ".join(words) + rng.choice([".", "?", "!", ":", ",", " [[A]]", " Score: 3", " 42"]))
    return lines


def random_text(rng: random.Random, lo: int, hi: int) -> str:
    """A word salad of lo..hi words (a stand-in for prompts and responses of varied length)."""
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(lo, hi)))


def _deberta_tokenizer(vocab_size: int):
    """A WordPiece tokenizer that frames texts as [CLS] ... [SEP], like DeBERTa-v3's."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]", mask_token="[MASK]", model_max_length=4096)


def _deberta_config(vocab_size: int, hidden: int, layers: int, heads: int, pad_id: int, init_range: float):
    from transformers import DebertaV2Config

    # The DeBERTa-v3 flavour PairRM uses: relative attention with log buckets, no absolute positions.
    return DebertaV2Config(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=512, relative_attention=True, position_buckets=256,
        norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
        max_relative_positions=-1, type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=pad_id,
        initializer_range=init_range)


def build_tiny_pairrm(root: Path, *, hidden: int = 64, layers: int = 2, heads: int = 2, vocab_size: int = 1000,
                      seed: int = 0, head_gain: float = 4.0,
                      init_range: float = 0.2) -> dict[str, Path]:
    """Write ``backbone/``, ``ranker/`` (llm-blender's PairRM layout) and ``hf/`` (PairRM-hf layout).

    ``head_gain`` scales the random head so logits are O(1) rather than ~0 (a random DeBERTa's
    features are nearly constant after LayerNorm), which makes value checks meaningful; so does the
    wide ``init_range`` (attention that actually depends on content).
    """
    import safetensors.torch
    import torch
    from torch import nn
    from transformers import DebertaV2Model

    root = Path(root)
    paths = {name: root / name for name in ("backbone", "ranker", "hf")}
    tok = _deberta_tokenizer(vocab_size)
    cfg = _deberta_config(len(tok), hidden, layers, heads, tok.pad_token_id, init_range)
    torch.manual_seed(seed)
    backbone = DebertaV2Model(cfg).eval()
    backbone.save_pretrained(paths["backbone"])
    tok.save_pretrained(paths["backbone"])

    tok.add_tokens(PAIRRM_PREFIXES)  # what llm-blender's collator does, in the same order
    backbone.resize_token_embeddings(len(tok), mean_resizing=False)
    head = nn.Sequential(nn.Dropout(0.05), nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Dropout(0.05),
                         nn.Linear(hidden, 1))
    with torch.no_grad():
        for p in head.parameters():
            p.mul_(head_gain)
    state = {f"pretrained_model.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"head_layer.{k}": v for k, v in head.state_dict().items()})
    state = {k: v.contiguous() for k, v in state.items()}

    paths["ranker"].mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(state, paths["ranker"] / "model.safetensors")
    (paths["ranker"] / "config.json").write_text(json.dumps({
        "ranker_type": "pairranker", "model_type": "deberta", "model_name": str(paths["backbone"]),
        "cache_dir": None, "load_checkpoint": None, "source_maxlength": 1224, "candidate_maxlength": 412,
        "n_tasks": 1, "drop_out": 0.05, "inference_mode": "bubble", "fp16": True}, indent=1))

    ids = tok.convert_tokens_to_ids(PAIRRM_PREFIXES)
    hf_cfg = cfg.to_dict()
    hf_cfg.update(vocab_size=len(tok), architectures=["DebertaV2PairRM"], n_tasks=1, drop_out=0.05,
                  source_prefix_id=ids[0], cand1_prefix_id=ids[1], cand2_prefix_id=ids[2], cand_prefix_id=ids[3],
                  sep_token_id=tok.sep_token_id)
    paths["hf"].mkdir(parents=True, exist_ok=True)
    (paths["hf"] / "config.json").write_text(json.dumps(hf_cfg, indent=1))
    safetensors.torch.save_file(state, paths["hf"] / "model.safetensors")
    tok.save_pretrained(paths["hf"])
    return paths


def build_tiny_causal_lm(root: Path, *, hidden: int = 64, layers: int = 2, vocab_size: int = 600,
                         seed: int = 0) -> Path:
    """A random Qwen2 chat model (byte-level BPE, ChatML-style template) saved at ``root``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|pad|>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=None, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return Path(root)
