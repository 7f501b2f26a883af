"""`make assets`: the tiny local policy and the arena prompt sets, built deterministically.

No hub is reachable in tests or the default demo, so the project makes its own:
* a byte-level BPE tokenizer with a chat template (trained on the arena's words),
* a small Qwen2-architecture causal LM, warm-started on synthetic answers so that it writes
  word-like responses that mix on-topic, off-topic, filler and style words,
* train and eval prompt sets saved as `datasets` files (eval uses held-out audiences).
The result is cached under a directory keyed by the builder's spec; a rebuild is skipped when
its manifest matches.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from selfplay.arena import AUDIENCES, FILLER, STYLES, TEMPLATES, TOPICS
from selfplay.artifacts import atomic_dir, stable_hash

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
EVAL_AUDIENCES = (" for a painter", " for a traveller")  # held out of the train prompts


@dataclass(frozen=True)
class AssetSpec:
    seed: int = 0
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    vocab_size: int = 1024
    warm_examples: int = 3000
    warm_epochs: int = 3
    warm_lr: float = 3e-3
    version: int = 1  # bump when the builder changes what it writes


def arena_prompts(split: str) -> list[dict]:
    rows = []
    for topic in TOPICS:
        for ti, template in enumerate(TEMPLATES):
            for audience in AUDIENCES:
                held_out = audience in EVAL_AUDIENCES
                if held_out != (split == "eval"):
                    continue
                rows.append({"prompt_id": f"{topic}-{ti}-{AUDIENCES.index(audience)}",
                             "prompt": template.format(topic=topic, audience=audience)})
    random.Random(f"prompts-{split}").shuffle(rows)
    return rows


def synthetic_answer(rng: random.Random, topic: str) -> str:
    """What the warm start teaches: a mixture the arena's oracle can rank."""
    others = [w for t, ws in TOPICS.items() if t != topic for w in ws]
    style_words = [w for ws in STYLES.values() for w in ws]
    words = []
    for _ in range(rng.randint(4, 12)):
        r = rng.random()
        pool = TOPICS[topic] if r < 0.35 else others if r < 0.6 else FILLER if r < 0.85 else style_words
        words.append(rng.choice(pool))
    return " ".join(words)


def build_tokenizer(out: Path, spec: AssetSpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(spec.seed)
    corpus = [p["prompt"] for p in arena_prompts("train") + arena_prompts("eval")]
    corpus += [synthetic_answer(rng, rng.choice(list(TOPICS))) for _ in range(2000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_policy(out: Path, spec: AssetSpec, tok) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(spec.seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=spec.hidden_size, intermediate_size=2 * spec.hidden_size,
                      num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                      num_key_value_heads=spec.heads, max_position_embeddings=256, tie_word_embeddings=True,
                      bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(cfg)
    warm_start(model, tok, spec)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def warm_start(model, tok, spec: AssetSpec) -> None:
    """A few epochs of next-token training on chat-formatted synthetic answers."""
    import torch

    from selfplay.progress import bar as progress_bar

    rng = random.Random(spec.seed + 1)
    prompts = arena_prompts("train")
    texts = []
    for _ in range(spec.warm_examples):
        p = rng.choice(prompts)["prompt"]
        from selfplay.arena import prompt_topic
        msgs = [{"role": "user", "content": p}, {"role": "assistant", "content": synthetic_answer(rng, prompt_topic(p))}]
        texts.append(tok.apply_chat_template(msgs, tokenize=False))
    opt = torch.optim.AdamW(model.parameters(), lr=spec.warm_lr)
    batch = 64
    steps = spec.warm_epochs * (len(texts) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.warm_lr, total_steps=steps)
    model.train()
    bar = progress_bar(steps, "assets: warm start", unit="step")
    for epoch in range(spec.warm_epochs):
        random.Random(epoch).shuffle(texts)
        for i in range(0, len(texts) - batch + 1, batch):
            enc = tok(texts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
            loss = model(**enc, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()


def build_assets(root: Path, spec: AssetSpec = AssetSpec()) -> Path:
    """Build (or reuse) the assets; returns the directory holding `policy/`, `prompts/{train,eval}`."""
    import datasets
    import torch

    manifest = root / "manifest.json"
    key = stable_hash(asdict(spec))
    if manifest.exists() and json.loads(manifest.read_text()).get("key") == key:
        return root
    t0 = time.time()
    torch.manual_seed(spec.seed)
    with atomic_dir(root) as tmp:
        tok = build_tokenizer(tmp / "policy", spec)
        build_policy(tmp / "policy", spec, tok)
        for split in ("train", "eval"):
            datasets.Dataset.from_list(arena_prompts(split)).save_to_disk(str(tmp / "prompts" / split))
        (tmp / "manifest.json").write_text(json.dumps({"key": key, "spec": asdict(spec),
                                                       "seconds": round(time.time() - t0, 1)}, indent=1))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="assets/arena")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    if args.force:
        shutil.rmtree(args.out, ignore_errors=True)
    print(f"assets ready in {build_assets(Path(args.out))}")


if __name__ == "__main__":
    main()
