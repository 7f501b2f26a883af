"""The inputs of `make gpu-check` (scripts/gpu_check.py): two randomly initialised models of real
architecture and size, and prompts of real length, built into a work dir and reused while their sizes
are unchanged (a manifest keyed by them, as selfplay.assets keys the arena).

* policy: Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocabulary
  151936, tied embeddings), saved in its compute dtype, with the arena's tokenizer and chat template
  (selfplay.assets.build_tokenizer). That tokenizer has under a thousand tokens, so it is padded with
  ordinary added tokens " w<i>" up to the vocabulary: a random model spreads its samples over every id,
  and an id no tokenizer can decode would leave the responses empty. Padded, every sampled id decodes
  to a word and encodes back to itself, so responses are as long as the tokens sampled.
* judge: a PairRM (judges/pairrm_model.py's `DebertaV2PairRM` layout) of DeBERTa-v3-large's shape (hidden 1024,
  24 layers, 16 heads, MLP 4096, 256 relative-position buckets, 128100 embedding rows) with a WordPiece
  tokenizer trained here to that vocabulary on the prompts' words and the policy's padding words (so a
  response costs the judge about one token per policy token, as with real text). Written by
  judges/train_pairrm.py's own `initial_state` and `write_layouts`, untrained.
* prompts: jsonl files, each an arena prompt followed by `prompt_words` arena words.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from selfplay.artifacts import atomic_dir, build_once, stable_hash

VERSION = 1   # bump when the builder changes what it writes


@dataclass(frozen=True)
class PolicyShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    dtype: str              # the checkpoint's dtype: the config's model.dtype, as a hub checkpoint is stored


@dataclass(frozen=True)
class JudgeShape:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int              # embedding rows, the 4 PairRM prefix tokens included
    position_buckets: int


@dataclass(frozen=True)
class Sizes:
    policy: PolicyShape
    judge: JudgeShape
    train_prompts: int      # = data.prompts_per_round: round 1 takes them all
    eval_prompts: int
    prompt_words: int       # arena words after each arena prompt (~1 policy token each)
    seed: int = 0


GPU = Sizes(PolicyShape(896, 24, 14, 2, 4864, 151936, "bfloat16"),
            JudgeShape(1024, 24, 16, 4096, 128100, 256), train_prompts=64, eval_prompts=32, prompt_words=120)
# Toy sizes for the CPU (--smoke): the same builders, a few seconds.
SMOKE = Sizes(PolicyShape(64, 2, 4, 2, 128, 2048, "float32"),
              JudgeShape(64, 2, 4, 128, 2048, 64), train_prompts=4, eval_prompts=4, prompt_words=12)


@dataclass(frozen=True)
class CheckInputs:
    policy: Path
    judge: Path             # the DebertaV2PairRM (hf) layout
    train_prompts: Path
    eval_prompts: Path


def build_inputs(root: Path, sizes: Sizes) -> CheckInputs:
    """Build root/{policy,pairrm,prompts} unless root's manifest says they are of these sizes."""
    root = Path(root)
    key = stable_hash({"sizes": asdict(sizes), "version": VERSION})
    build_once(root, key, lambda: _build(root, sizes, key))
    return CheckInputs(root / "policy", root / "pairrm" / "hf", root / "prompts" / "train.jsonl",
                       root / "prompts" / "eval.jsonl")


def _build(root: Path, sizes: Sizes, key: str) -> None:
    with atomic_dir(root) as tmp:
        prompts = write_prompts(tmp / "prompts", sizes)
        padding = build_policy(tmp / "policy", sizes.policy, sizes.seed)
        build_judge(tmp / "pairrm", sizes.judge, prompts + padding, sizes.seed, (root / "pairrm").resolve())
        (tmp / "manifest.json").write_text(json.dumps({"key": key, "sizes": asdict(sizes)}, indent=1))


def write_prompts(out: Path, sizes: Sizes) -> list[str]:
    """train.jsonl and eval.jsonl (prompt_id, prompt); returns every prompt written."""
    from selfplay.arena import FILLER, STYLES, TOPICS
    from selfplay.assets import arena_prompts

    words = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER) | {w for ws in STYLES.values() for w in ws})
    rng = random.Random(sizes.seed)
    out.mkdir(parents=True)
    written = []
    for split, count in (("train", sizes.train_prompts), ("eval", sizes.eval_prompts)):
        rows = arena_prompts(split)
        if count > len(rows):
            raise ValueError(f"{count} {split} prompts asked, the arena has {len(rows)}")
        with open(out / f"{split}.jsonl", "w") as f:
            for r in rows[:count]:
                text = r["prompt"] + " Notes: " + " ".join(rng.choice(words) for _ in range(sizes.prompt_words))
                f.write(json.dumps({"prompt_id": r["prompt_id"], "prompt": text}) + "\n")
                written.append(text)
    return written


def build_policy(out: Path, shape: PolicyShape, seed: int) -> list[str]:
    """A random Qwen2 of `shape` with the arena's tokenizer padded to its vocabulary; returns the padding words."""
    import torch
    from tokenizers import AddedToken
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from selfplay.assets import AssetSpec, build_tokenizer

    tok = build_tokenizer(out, AssetSpec())   # the arena's tokenizer and chat template, trained as `make assets` does
    padding = [f"w{i}" for i in range(shape.vocab - len(tok))]
    # normalized=False: matched on the raw text, so decoding and encoding again gives the same id
    tok.add_tokens([AddedToken(" " + w, normalized=False) for w in padding])
    cfg = Qwen2Config(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                      num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                      num_key_value_heads=shape.kv_heads, max_position_embeddings=32768, rope_theta=1e6,
                      tie_word_embeddings=True, bos_token_id=None, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).to(getattr(torch, shape.dtype))
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return padding


def build_judge(out: Path, shape: JudgeShape, corpus: list[str], seed: int, final: Path) -> None:
    """A random PairRM of `shape` in judges/train_pairrm.py's layouts under out (`final`: where out ends up,
    which the ranker layout names)."""
    from judges.pairrm_model import PREFIXES
    from judges.train_pairrm import PairRMAssetSpec, build_tokenizer, deberta_config, initial_state, write_layouts

    tok = build_tokenizer(corpus, shape.vocab - len(PREFIXES))
    spec = PairRMAssetSpec(seed=seed, hidden_size=shape.hidden, layers=shape.layers, heads=shape.heads)
    config = deberta_config(spec, len(tok), tok.pad_token_id)
    # DeBERTa-v3-large's own values where deberta_config sizes the arena's small judge
    config.intermediate_size, config.position_buckets = shape.intermediate, shape.position_buckets
    rows = max(shape.vocab, len(tok) + len(PREFIXES))   # a small corpus may give fewer words than asked
    write_layouts(out, initial_state(config, rows, seed), config, tok, final / "backbone")
