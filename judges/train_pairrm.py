"""`make assets`: a small PairRM-format judge trained on the arena oracle's preferences.

The checkpoint has PairRM's layout and input format exactly (``judges/pairrm_model.py``): a DeBERTa-v2
cross-encoder over ``[CLS]<|source|>x[SEP][CLS]<|candidate1|>a[SEP][CLS]<|candidate2|>b[SEP]`` and a
2-layer tanh head on the three prefix tokens. Training goes through :class:`PairRMJudge` itself
(its tokenisation, its network), so the judge is trained on the very inputs it is later asked.

Objective: for an oracle-labelled pair (x, a, b, p) the logit the judge answers ``compare`` with,
d = L(x, a, b) − L(x, b, a), is fitted to p by binary cross-entropy (soft labels), so
``compare`` (and the K=2 case of the SPPO aggregation) estimates the oracle's P(a ≻ b | x).
Pairs are drawn afresh for every step from ``selfplay.arena_pairs`` (initial-policy samples, edits
of them, answers built from scratch), on the train prompts.

Held-out agreement (written to the manifest): on pairs drawn the same way but on the eval prompts
(audiences never seen in training), from policy samples taken with other seeds, the share of pairs
whose oracle probability is not a near-tie, |p − ½| > 0.05, where the judge's ``compare`` is on the
oracle's side of ½. Also given per pair origin (``sample-sample`` is what round 0 looks like).

Written under ``<assets>/arena/pairrm/`` (``builtin:arena/pairrm`` is ``hf/``), in three layouts
holding the same tensors: ``hf/`` (``llm-blender/PairRM-hf``, ``DebertaV2PairRM``), ``ranker/``
(``llm-blender/PairRM``, what ``Blender.loadranker`` reads; its ``model_name`` is ``backbone/`` by
absolute path, as llm-blender needs a loadable backbone) and ``backbone/``. The manifest key
covers the spec, the policy assets and the oracle's behaviour, so a changed arena retrains.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from judges.pairrm_model import PREFIXES, PairRMJudge, net_logits
from selfplay.arena import DEFAULT_RULES, ArenaRules, oracle_probability
from selfplay.arena_pairs import LabelledPair, draw_pairs, policy_samples
from selfplay.artifacts import atomic_dir, build_once, manifest_key, stable_hash

BUILTIN = "builtin:arena/pairrm"
NEAR_TIE = 0.05   # |p − ½| at or below this is a near-tie, left out of the agreement


@dataclass(frozen=True)
class PairRMAssetSpec:
    seed: int = 0
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    vocab_size: int = 800
    samples_per_prompt: int = 4      # initial-policy samples per prompt, the pool pairs are drawn from
    steps: int = 2000
    batch_pairs: int = 32            # pairs per step (each pair is run in both orders)
    lr: float = 2e-3
    heldout_pairs: int = 2000
    version: int = 1                 # bump when the builder changes what it writes


@dataclass(frozen=True)
class Agreement:
    agreement: float      # sign agreement with the oracle on pairs with |p − ½| > NEAR_TIE
    n: int                # those pairs
    by_kind: dict         # pair origin -> {agreement, n}
    mean_abs_error: float  # mean |compare − p| over all held-out pairs (calibration)


# -------------------------------------------------------------------------- tokenizer and model

def build_tokenizer(texts: list[str], vocab_size: int):
    """A lowercasing WordPiece tokenizer framing each text as [CLS] … [SEP], as DeBERTa-v3's does."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]", mask_token="[MASK]", model_max_length=4096)


def deberta_config(spec: PairRMAssetSpec, vocab_size: int, pad_id: int):
    from transformers import DebertaV2Config

    # PairRM's DeBERTa-v3 flavour: relative attention with log buckets, no absolute positions.
    return DebertaV2Config(
        vocab_size=vocab_size, hidden_size=spec.hidden_size, num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads, intermediate_size=2 * spec.hidden_size, max_position_embeddings=512,
        relative_attention=True, position_buckets=64, norm_rel_ebd="layer_norm", share_att_key=True,
        pos_att_type=["p2c", "c2p"], position_biased_input=False, max_relative_positions=-1, type_vocab_size=0,
        layer_norm_eps=1e-7, pad_token_id=pad_id,
        # Fresh pairs every step, never a repeated one: dropout would only slow a tiny model down.
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def initial_state(config, n_prefixed: int, seed: int) -> dict:
    """Random backbone (embeddings grown by the 4 prefix tokens) and head, keyed as PairRM checkpoints."""
    import torch
    from torch import nn
    from transformers import DebertaV2Model

    torch.manual_seed(seed)
    backbone = DebertaV2Model(config)
    backbone.resize_token_embeddings(n_prefixed, mean_resizing=False)
    h = config.hidden_size
    head = nn.Sequential(nn.Dropout(0.0), nn.Linear(2 * h, h), nn.Tanh(), nn.Dropout(0.0), nn.Linear(h, 1))
    state = {f"pretrained_model.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"head_layer.{k}": v for k, v in head.state_dict().items()})
    return state


def write_layouts(out: Path, state: dict, config, tok, backbone_ref: Path) -> None:
    """out/backbone, out/ranker (llm-blender/PairRM) and out/hf (llm-blender/PairRM-hf), same tensors."""
    import copy

    import safetensors.torch
    from transformers import DebertaV2Model

    state = {k: v.detach().contiguous().cpu() for k, v in state.items() if not k.endswith("position_ids")}
    backbone = DebertaV2Model(config)   # the bare encoder (original vocabulary): what `model_name` names
    emb = "embeddings.word_embeddings.weight"
    bb = {k[len("pretrained_model."):]: v for k, v in state.items() if k.startswith("pretrained_model.")}
    bb[emb] = bb[emb][:config.vocab_size]
    backbone.load_state_dict(bb)
    backbone.save_pretrained(out / "backbone")
    tok.save_pretrained(out / "backbone")

    (out / "ranker").mkdir(parents=True)
    safetensors.torch.save_file(state, out / "ranker" / "model.safetensors")
    (out / "ranker" / "config.json").write_text(json.dumps({
        "ranker_type": "pairranker", "model_type": "deberta", "model_name": str(backbone_ref),
        "cache_dir": None, "load_checkpoint": None, "source_maxlength": 1224, "candidate_maxlength": 412,
        "n_tasks": 1, "drop_out": 0.05, "inference_mode": "bubble", "fp16": True}, indent=1))

    full = copy.deepcopy(tok)
    full.add_tokens(list(PREFIXES))   # what llm-blender's collator adds, in its order
    ids = full.convert_tokens_to_ids(list(PREFIXES))
    cfg = config.to_dict()
    cfg.update(vocab_size=len(full), architectures=["DebertaV2PairRM"], n_tasks=1, drop_out=0.05,
               source_prefix_id=ids[0], cand1_prefix_id=ids[1], cand2_prefix_id=ids[2], cand_prefix_id=ids[3],
               sep_token_id=full.sep_token_id)
    (out / "hf").mkdir(parents=True)
    (out / "hf" / "config.json").write_text(json.dumps(cfg, indent=1))
    safetensors.torch.save_file(state, out / "hf" / "model.safetensors")
    full.save_pretrained(out / "hf")


# -------------------------------------------------------------------------- training

def pair_logits(judge: PairRMJudge, pairs: list[LabelledPair]):
    """d = L(x, a, b) − L(x, b, a) per pair, with gradients (``compare`` answers σ(d))."""
    import torch

    triples = [(q.prompt, q.a, q.b) for q in pairs] + [(q.prompt, q.b, q.a) for q in pairs]
    seqs = judge._sequences(triples)
    width = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), width), judge.tok.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, (s, _) in enumerate(seqs):
        ids[row, :len(s)] = torch.tensor(s)
        mask[row, :len(s)] = 1
    logits = net_logits(judge.net, ids, mask, torch.tensor([p for _, p in seqs]))
    return logits[:len(pairs)] - logits[len(pairs):]


def train(judge: PairRMJudge, prompts: list[str], samples: list[list[str]], spec: PairRMAssetSpec,
          rules: ArenaRules) -> list[float]:
    """AdamW with warm-up and linear decay; fresh pairs every step. Returns the loss per step."""
    import torch

    torch.manual_seed(spec.seed)
    with one_thread():
        return _steps(judge, prompts, samples, spec, rules, random.Random(f"{spec.seed}-train"))


@contextmanager
def one_thread():
    """Torch on one thread: the matrices are tiny, and on a busy machine two OpenMP threads spin against
    each other (measured on the 2-core box under load: 2.6 s/step with two threads, 0.14 s/step with one)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _steps(judge: PairRMJudge, prompts: list[str], samples: list[list[str]], spec: PairRMAssetSpec,
           rules: ArenaRules, rng: random.Random) -> list[float]:
    import torch
    import torch.nn.functional as F

    from selfplay.progress import bar

    net = judge.net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=spec.lr, weight_decay=0.01)
    warm = max(spec.steps // 20, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (spec.steps - s) / (spec.steps - warm))))
    losses = []
    with bar(spec.steps, "assets: PairRM judge", unit="step") as b:
        for _ in range(spec.steps):
            pairs = draw_pairs(rng, prompts, samples, spec.batch_pairs, rules)
            target = torch.tensor([q.p for q in pairs], dtype=torch.float32)
            loss = F.binary_cross_entropy_with_logits(pair_logits(judge, pairs), target)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            b.update(1)
            b.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    net.eval()
    return losses


def agreement(judge, pairs: list[LabelledPair]) -> Agreement:
    """Sign agreement of ``judge.compare`` with the oracle on pairs that are not near-ties."""
    p = np.array([q.p for q in pairs])
    j = np.asarray(judge.compare([q.prompt for q in pairs], [q.a for q in pairs], [q.b for q in pairs]))
    decided = np.abs(p - 0.5) > NEAR_TIE
    agree = (j - 0.5) * (p - 0.5) > 0
    kinds = np.array([q.kind for q in pairs])
    by_kind = {}
    for k in sorted(set(kinds)):
        m = decided & (kinds == k)
        by_kind[k] = {"agreement": round(float(agree[m].mean()), 4) if m.any() else None, "n": int(m.sum())}
    return Agreement(round(float(agree[decided].mean()), 4), int(decided.sum()), by_kind,
                     round(float(np.abs(j - p).mean()), 4))


# -------------------------------------------------------------------------- the asset

def oracle_fingerprint(rules: ArenaRules) -> str:
    """A hash of the oracle's answers on fixed probe pairs: changes whenever the arena's rules do."""
    rng = random.Random("oracle-fingerprint")
    from selfplay.arena_pairs import build
    from selfplay.assets import arena_prompts
    prompts = [r["prompt"] for r in arena_prompts("eval")]
    probes = []
    for _ in range(200):
        x = rng.choice(prompts)
        probes.append(round(oracle_probability(x, build(rng, x), build(rng, x), rules), 6))
    return stable_hash(probes)


def asset_key(spec: PairRMAssetSpec, policy_key: str, rules: ArenaRules) -> str:
    return stable_hash({"spec": asdict(spec), "policy": policy_key, "rules": asdict(rules),
                        "oracle": oracle_fingerprint(rules)})


def build_judge_asset(root: Path, spec: PairRMAssetSpec = PairRMAssetSpec(),
                      rules: ArenaRules = DEFAULT_RULES) -> Path:
    """Build (or reuse) root/pairrm next to the arena's policy and prompts; returns root/pairrm."""
    from selfplay.assets import build_assets

    root = Path(root)
    build_assets(root)
    out = root / "pairrm"
    key = asset_key(spec, manifest_key(root), rules)
    if manifest_key(out) == key:
        return out
    if os.environ.get("SELFPLAY_ASSETS_BUILD", "1") == "0":
        from selfplay.data import DataError
        raise DataError(f"the arena's PairRM judge is missing or stale at {out.absolute()}, and "
                        "SELFPLAY_ASSETS_BUILD=0 does not build it in the job: run `make assets` there first")
    return build_once(out, key, lambda: _train_judge_asset(root, out, spec, rules, key))


def _train_judge_asset(root: Path, out: Path, spec: PairRMAssetSpec, rules: ArenaRules, key: str) -> None:
    from selfplay.assets import arena_prompts

    t0 = time.time()
    train_p = [r["prompt"] for r in arena_prompts("train")]
    eval_p = [r["prompt"] for r in arena_prompts("eval")]
    policy = str(root / "policy")
    train_s = _samples(policy, train_p, spec.samples_per_prompt, spec.seed)
    eval_s = _samples(policy, eval_p, spec.samples_per_prompt, spec.seed + 1)
    with atomic_dir(out) as tmp:
        judge, config, tok = _fresh_judge(tmp, spec, train_p + eval_p, train_s, out.resolve() / "backbone")
        losses = train(judge, train_p, train_s, spec, rules)
        with one_thread():
            held = agreement(judge, draw_pairs(random.Random(f"{spec.seed}-heldout"), eval_p, eval_s,
                                               spec.heldout_pairs, rules))
        shutil.rmtree(tmp / "init")
        write_layouts(tmp, judge.net.state_dict(), config, tok, out.resolve() / "backbone")
        (tmp / "manifest.json").write_text(json.dumps({
            "key": key, "spec": asdict(spec), "rules": asdict(rules), "heldout": asdict(held),
            "near_tie": NEAR_TIE, "train_loss": {"first_50": round(float(np.mean(losses[:50])), 4),
                                                 "last_50": round(float(np.mean(losses[-50:])), 4)},
            "seconds": round(time.time() - t0, 1)}, indent=1))


def _samples(policy: str, prompts: list[str], n: int, seed: int) -> list[list[str]]:
    """The policy's samples; with n = 0 none, and every pair is built from scratch (quick test assets)."""
    return policy_samples(policy, prompts, n, seed) if n > 0 else [[] for _ in prompts]


def _fresh_judge(tmp: Path, spec: PairRMAssetSpec, prompts: list[str], samples: list[list[str]],
                 backbone_ref: Path) -> tuple[PairRMJudge, object, object]:
    """A randomly initialised PairRM written to tmp/init and loaded back as a PairRMJudge, with the
    backbone's config and tokenizer (needed to write the trained layouts)."""
    rng = random.Random(spec.seed)
    from selfplay.arena_pairs import build
    corpus = prompts + [s for ss in samples for s in ss] + [build(rng, rng.choice(prompts)) for _ in range(3000)]
    tok = build_tokenizer(corpus, spec.vocab_size)
    config = deberta_config(spec, len(tok), tok.pad_token_id)
    write_layouts(tmp / "init", initial_state(config, len(tok) + len(PREFIXES), spec.seed), config, tok, backbone_ref)
    return PairRMJudge(str(tmp / "init" / "hf"), batch_size=64), config, tok


def resolve_model(model: str) -> str:
    """judge.model for the pairrm judge: builtin:arena/pairrm → the built checkpoint (built on first use)."""
    if model != BUILTIN:
        return model
    from selfplay.data import assets_root
    return str(build_judge_asset(assets_root()) / "hf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", default="assets/arena", help="the arena assets directory (make assets' --out)")
    args = ap.parse_args()
    out = build_judge_asset(Path(args.assets))
    held = json.loads((out / "manifest.json").read_text())["heldout"]
    print(f"PairRM judge ready in {out}: held-out agreement with the oracle {held['agreement']:.3f} "
          f"on {held['n']} pairs (|p - 1/2| > {NEAR_TIE})")


if __name__ == "__main__":
    main()
