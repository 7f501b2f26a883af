"""`make assets`: the tiny local policy and the arena prompt sets, built deterministically.

No hub is reachable in tests or the default demo, so the project makes its own:
* a byte-level BPE tokenizer with a chat template (trained on the arena's words),
* a small Qwen2-architecture causal LM, warm-started on synthetic answers so that it writes
  word-like responses that mix on-topic, off-topic, filler and style words,
* train and eval prompt sets saved as `datasets` files (eval uses held-out audiences),
* `topical/`: the same policy warmed further, past the point where it learns to read the prompt's
  topic (`builtin:arena/topical`, the Nash arena's initial policy).
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

from selfplay.arena import AUDIENCES, FILLER, STYLES, TEMPLATES, TOPICS, prompt_topic
from selfplay.artifacts import atomic_dir, build_once, manifest_key, stable_hash

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


def warm_text(rng: random.Random, prompts: list[dict], tok) -> str:
    """One chat-formatted warm-start example: a train prompt and a synthetic answer on its topic."""
    p = rng.choice(prompts)["prompt"]
    msgs = [{"role": "user", "content": p}, {"role": "assistant", "content": synthetic_answer(rng, prompt_topic(p))}]
    return tok.apply_chat_template(msgs, tokenize=False)


def next_token_step(model, tok, opt, texts: list[str]) -> float:
    """One optimizer step of next-token loss over every non-padding token of `texts`; returns the loss."""
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    loss = model(**enc, labels=enc.input_ids.masked_fill(enc.attention_mask == 0, -100)).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def warm_start(model, tok, spec: AssetSpec) -> None:
    """A few epochs of next-token training on chat-formatted synthetic answers."""
    import torch

    from selfplay.progress import bar as progress_bar

    rng = random.Random(spec.seed + 1)
    prompts = arena_prompts("train")
    texts = [warm_text(rng, prompts, tok) for _ in range(spec.warm_examples)]
    opt = torch.optim.AdamW(model.parameters(), lr=spec.warm_lr)
    batch = 64
    steps = spec.warm_epochs * (len(texts) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.warm_lr, total_steps=steps)
    model.train()
    bar = progress_bar(steps, "assets: warm start", unit="step")
    for epoch in range(spec.warm_epochs):
        random.Random(epoch).shuffle(texts)
        for i in range(0, len(texts) - batch + 1, batch):
            loss = next_token_step(model, tok, opt, texts[i:i + batch])
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    model.eval()


@dataclass(frozen=True)
class TopicalSpec:
    """The warm start continued on fresh synthetic answers at a constant rate until the policy reads the
    prompt's topic. The base policy writes topic words at chance (1 in 8 on the prompt's topic): its 141
    steps teach it the words, not which topic asks for them. Continued, it learns that abruptly (measured
    here: on-topic share of its topic words 0.13 at step 500, 0.57 at 600, 0.79 at 800). Where the jump
    comes differs between machines (training is not bit-identical across CPUs), so the build stops on
    the property, not a step count: at the first check where the share reaches `target_share`."""
    target_share: float = 0.5
    check_every: int = 50
    max_steps: int = 2000
    lr: float = 1e-3
    batch: int = 64
    seed: int = 123
    version: int = 1


def on_topic_share(model, tok, prompts: list[str], samples: int = 2, max_new_tokens: int = 6, seed: int = 0) -> float:
    """Of the arena topic words a policy samples (T = 1) for these prompts, the share on the prompt's topic."""
    import torch

    from selfplay.arena import _WORD_TOPIC

    chats = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts for _ in range(samples)]
    side, tok.padding_side = tok.padding_side, "left"   # generation continues from the last prompt token
    enc = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False)
    tok.padding_side = side
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                             max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    hits = [_WORD_TOPIC[w] == prompt_topic(p) for p, t in zip([p for p in prompts for _ in range(samples)], texts)
            for w in t.lower().split() if w in _WORD_TOPIC]
    return sum(hits) / max(len(hits), 1)


def topical_ready(root: Path, spec: TopicalSpec = TopicalSpec()) -> bool:
    """Whether root/topical is built, from root's current policy and this spec (nothing is built to know)."""
    return manifest_key(Path(root) / "topical") == _topical_key(Path(root), spec)


def _topical_key(root: Path, spec: TopicalSpec) -> str:
    return stable_hash({"spec": asdict(spec), "policy": manifest_key(root)})


def build_topical(root: Path, spec: TopicalSpec = TopicalSpec()) -> Path:
    """Build (or reuse) root/topical from root/policy; returns it."""
    root = Path(root)
    build_assets(root)
    out, key = root / "topical", _topical_key(root, spec)
    if manifest_key(out) == key:
        return out
    return build_once(out, key, lambda: _train_topical(root, out, spec, key))


def _train_topical(root: Path, out: Path, spec: TopicalSpec, key: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfplay.progress import bar as progress_bar

    t0 = time.time()
    torch.manual_seed(spec.seed)
    tok = AutoTokenizer.from_pretrained(root / "policy")
    model = AutoModelForCausalLM.from_pretrained(root / "policy")
    rng, prompts = random.Random(spec.seed), arena_prompts("train")
    checks = [p["prompt"] for p in prompts[:96]]
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr)
    step, share = 0, 0.0
    with progress_bar(spec.max_steps, "assets: topical policy", unit="step") as b:
        while share < spec.target_share:
            if step == spec.max_steps:
                raise RuntimeError(f"the topical policy did not reach an on-topic share of {spec.target_share} "
                                   f"in {step} steps (last {share:.2f})")
            model.train()
            next_token_step(model, tok, opt, [warm_text(rng, prompts, tok) for _ in range(spec.batch)])
            step += 1
            b.update(1)
            if step % spec.check_every == 0:
                model.eval()
                share = on_topic_share(model, tok, checks, seed=step)
                b.set_postfix(on_topic=f"{share:.2f}")
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "manifest.json").write_text(json.dumps({
            "key": key, "spec": asdict(spec), "steps": step, "on_topic_share": round(share, 3),
            "seconds": round(time.time() - t0, 1)}, indent=1))


def build_assets(root: Path, spec: AssetSpec = AssetSpec()) -> Path:
    """Build (or reuse) the assets; returns the directory holding `policy/`, `prompts/{train,eval}`."""
    key = stable_hash(asdict(spec))
    return build_once(root, key, lambda: _build_arena(Path(root), spec, key))


def _build_arena(root: Path, spec: AssetSpec, key: str) -> None:
    import datasets
    import torch

    t0 = time.time()
    torch.manual_seed(spec.seed)
    with atomic_dir(root) as tmp:
        tok = build_tokenizer(tmp / "policy", spec)
        build_policy(tmp / "policy", spec, tok)
        for split in ("train", "eval"):
            datasets.Dataset.from_list(arena_prompts(split)).save_to_disk(str(tmp / "prompts" / split))
        (tmp / "manifest.json").write_text(json.dumps({"key": key, "spec": asdict(spec),
                                                       "seconds": round(time.time() - t0, 1)}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="assets/arena")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    if args.force:
        shutil.rmtree(args.out, ignore_errors=True)
    print(f"assets ready in {build_assets(Path(args.out))}")
    print(f"topical policy ready in {build_topical(Path(args.out))}")


if __name__ == "__main__":
    main()
