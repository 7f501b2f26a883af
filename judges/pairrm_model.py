"""PairRM (llm-blender) as a judge: a native, batched re-implementation, no llm-blender import.
The judge's registry entry is judges/pairrm.py; this module is its model (torch is imported where
it is used, so listing the judges imports no torch).

Model. PairRM is a DeBERTa-v3 cross-encoder over one sequence holding the prompt and *both*
responses; the last-layer states at the three prefix tokens feed a 2-layer tanh head:

    L(x, a, b) = head([h_source; h_cand1]) − head([h_source; h_cand2])      (>0: a, left, is better)

The same tensors are published in two layouts, both loaded here from a hub id or a local path:
``llm-blender/PairRM-hf`` (``DebertaV2PairRM``: DeBERTa config + prefix ids in config.json) and
``llm-blender/PairRM`` (llm-blender's own ranker: a RankerConfig whose ``model_name`` names the
backbone, e.g. ``microsoft/deberta-v3-large``, whose config must then be reachable too).
Both store ``pretrained_model.*`` (a ``DebertaV2Model``) and ``head_layer.{1,4}.*``.

Input format (as llm-blender's collator and the PairRM-hf model card build it): three segments,
each tokenised with the tokenizer's own framing ([CLS] ... [SEP] for DeBERTa), concatenated:

    [CLS]<|source|>{prompt}[SEP] [CLS]<|candidate1|>{a}[SEP] [CLS]<|candidate2|>{b}[SEP]

Literal sep-token text inside prompt or responses is replaced by a space (as llm-blender does). The
prompt text is the caller's, or with ``source`` set (``judge.prompt_format: chat``) what :func:`chat_source`
makes of it: SPPO's scripts/rank.py gives PairRM the policy's chat-templated user turn, not the raw prompt.
Truncation keeps the framing tokens: the prompt to ``source_max_length`` tokens, each response to
``candidate_max_length + (source_max_length − len(prompt tokens)) // 2`` (unused prompt budget is
shared by the two responses; 1224 / 412 / 2048 total are the model card's values). We use the
prompt's own length; ``Blender.rank`` uses the longest prompt of its batch, so the two agree
exactly whenever nothing is truncated or Blender runs with ``batch_size=1`` (as SPPO's rank.py does).

Speed. All ordered pairs of a call are built from token ids tokenised once per text, deduplicated,
sorted by length (little padding) and run in batches of ``batch_size`` under ``inference_mode``.

Aggregation of the K×K logits ``L_ij = L(x, r_i, r_j)`` (diagonal 0) into ``P̂_ij = P(r_i ≻ r_j)``:

* ``"sppo"`` (default; what SPPO and ``Blender.rank(return_scores=True)`` do):
  ``s_i = (1/K) Σ_j (L_ij − L_ji)`` over all K (the self term is 0), then ``P̂_ij = σ(s_i − s_j)``.
  A Bradley–Terry re-fit: transitive, and sharper than one logit. ``compare(a, b)`` is the K=2 case,
  ``σ(L_ab − L_ba)``, which is also TRL's ``PairRMJudge`` probability.
* ``"pairwise"``: the raw model probability, both orders averaged:
  ``P̂_ij = ½(σ(L_ij) + σ(−L_ji))``; keeps intransitive preferences.

Both give ``P̂_ii = ½`` and ``P̂ + P̂ᵀ = 1``. The judge never abstains.
"""
from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

PREFIXES = ("<|source|>", "<|candidate1|>", "<|candidate2|>", "<|candidate|>")  # llm-blender's order
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def pairrm_net(config, n_tasks: int = 1) -> nn.Module:
    """``pretrained_model`` (a DebertaV2Model) + ``head_layer``: attribute names match the checkpoints'
    keys. Built as a plain container (no subclass of nn.Module, so this module imports no torch until
    a net is built); :func:`net_logits` is its forward."""
    from torch import nn
    from transformers import DebertaV2Model

    net = nn.Module()
    with _no_init():  # weights come from the checkpoint; random init of 435M params is wasted time
        net.pretrained_model = DebertaV2Model(config)
    h = config.hidden_size
    net.head_layer = nn.Sequential(nn.Dropout(0.0), nn.Linear(2 * h, h), nn.Tanh(), nn.Dropout(0.0),
                                   nn.Linear(h, n_tasks))
    return net


def net_logits(net: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               pos: torch.Tensor) -> torch.Tensor:
    """[B] logits of a :func:`pairrm_net`; ``pos`` [B, 3] holds the positions of the source/cand1/cand2
    prefix tokens."""
    import torch

    hidden = net.pretrained_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
    src, c1, c2 = hidden[rows, pos].unbind(1)  # each [B, H]
    left = net.head_layer(torch.cat([src, c1], dim=-1))
    right = net.head_layer(torch.cat([src, c2], dim=-1))
    return (left - right).mean(-1)


def _no_init():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        return nullcontext()
    return no_init_weights()


def _local_dir(model: str) -> Path:
    if os.path.isdir(model):
        return Path(model)
    from huggingface_hub import snapshot_download

    # Only what loading needs: configs, tokenizer files and safetensors (not training_args.bin etc.).
    path = Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    if not any((path / w).exists() for w in _WEIGHTS):
        path = Path(snapshot_download(model, allow_patterns=["pytorch_model.bin"]))
    return path


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    import torch

    if (path / "model.safetensors").exists():
        import safetensors.torch
        return safetensors.torch.load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").exists():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {path}")


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.json").exists() or (path / "spm.model").exists()


def load_pairrm(model: str) -> tuple[nn.Module, object, tuple[int, int, int]]:
    """(net on CPU in fp32, tokenizer, (source, cand1, cand2) prefix ids) from either layout."""
    from transformers import AutoConfig, AutoTokenizer

    path = _local_dir(model)
    raw = json.loads((path / "config.json").read_text())
    if "ranker_type" in raw:  # llm-blender's ranker layout: the backbone is named, not stored
        config = AutoConfig.from_pretrained(raw["model_name"])
        tok = AutoTokenizer.from_pretrained(str(path) if _has_tokenizer(path) else raw["model_name"])
        tok.add_tokens([p for p in PREFIXES if p not in tok.get_vocab()])
    else:
        config = AutoConfig.from_pretrained(str(path))
        tok = AutoTokenizer.from_pretrained(str(path))
    state = _load_state(path)
    config.vocab_size = state["pretrained_model.embeddings.word_embeddings.weight"].shape[0]
    net = pairrm_net(config, n_tasks=raw.get("n_tasks", 1))
    # Older transformers saved the position_ids buffer; it is rebuilt by the module, so drop it.
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{model}: checkpoint does not match PairRM (missing {missing[:5]}, unexpected {unexpected[:5]})")
    ids = tuple(int(i) for i in tok.convert_tokens_to_ids(list(PREFIXES[:3])))
    return net.eval(), tok, ids  # type: ignore[return-value]


class PairRMJudge:
    """PairRM as a :class:`judges.base.Judge` with a native batched ``matrices`` (see module doc)."""

    name = "pairrm"
    # compare averages both orders inside, but the judge stage and the evaluation ask each order anyway
    # (their counts and numbers have always been so); the matrix comes from the whole set (aggregation).
    order_symmetric = False
    both_orders = False
    independent_pairs = False

    def __init__(self, model: str = "llm-blender/PairRM-hf", device: str = "cpu", batch_size: int = 32,
                 aggregation: str = "sppo", source_max_length: int = 1224, candidate_max_length: int = 412,
                 dtype: str | None = None, max_batch_tokens: int | None = -1,
                 source: Callable[[str], str] | None = None):
        if aggregation not in ("sppo", "pairwise"):
            raise ValueError(f"aggregation must be 'sppo' or 'pairwise', not {aggregation!r}")
        self.aggregation, self.batch_size, self.device = aggregation, batch_size, device
        self.source_max_length, self.candidate_max_length = source_max_length, candidate_max_length
        net, self.tok, self.prefix_ids = load_pairrm(model)
        self.net = _place(net, device, dtype)
        # On CPU the attention tensors of a big batch outgrow the caches and throughput falls (measured:
        # 22.5 pairs/s at 4 sequences of ~600 tokens, 12.3 at 64), so CPU batches are capped by tokens.
        # GPUs want big batches: no cap there unless asked. -1 = that device default, None = no cap.
        self.max_batch_tokens = (2048 if device == "cpu" else None) if max_batch_tokens == -1 else max_batch_tokens
        self.sep = self.tok.sep_token or self.tok.eos_token
        self._frame = _framing(self.tok)
        self.source = source   # prompt text -> the source text PairRM reads; None = the prompt itself

    # -- public API -------------------------------------------------------------------------------
    def logits(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Raw single-order PairRM logits L(prompt, a, b), shape [N] (a in the left slot)."""
        if self.source is not None:
            shown = {p: self.source(p) for p in dict.fromkeys(prompts)}
            prompts = [shown[p] for p in prompts]
        triples = list(zip(prompts, a, b))
        uniq = list(dict.fromkeys(triples))
        values = dict(zip(uniq, self._run(uniq)))
        return np.array([values[t] for t in triples], dtype=np.float64)

    def logit_matrices(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Per prompt the K×K matrix L_ij (diagonal 0), all prompts' ordered pairs in one batched run.

        Pairs are by index, so two identical responses still get their (position-biased) L(x, x)."""
        index = [(k, i, j) for k, rs in enumerate(responses) for i in range(len(rs)) for j in range(len(rs)) if i != j]
        values = self.logits([prompts[k] for k, _, _ in index], [responses[k][i] for k, i, _ in index],
                             [responses[k][j] for k, _, j in index])
        out = [np.zeros((len(rs), len(rs))) for rs in responses]
        for (k, i, j), v in zip(index, values):
            out[k][i, j] = v
        return out

    def scores(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """SPPO/llm-blender aggregated scores s_i = mean_j (L_ij − L_ji); = ``Blender.rank(return_scores=True)``."""
        return [aggregate_scores(m) for m in self.logit_matrices(prompts, responses)]

    def matrices(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Per prompt the K×K matrix P̂_ij = P(r_i ≻ r_j) under ``self.aggregation``."""
        return [to_probabilities(m, self.aggregation) for m in self.logit_matrices(prompts, responses)]

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """P(a ≻ b) from both orders: σ(L_ab − L_ba) ("sppo") or ½(σ(L_ab) + σ(−L_ba)) ("pairwise")."""
        n = len(prompts)
        both = self.logits(list(prompts) * 2, list(a) + list(b), list(b) + list(a))
        fwd, bwd = both[:n], both[n:]
        if self.aggregation == "sppo":
            return _sigmoid(fwd - bwd)
        return 0.5 * (_sigmoid(fwd) + _sigmoid(-bwd))

    def score_groups(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> None:
        return None   # its aggregated scores are relative to the set (see scores), not absolute

    def consistency(self, prompt_ids: Sequence[str], prompts: Sequence[str],
                    responses: Sequence[Sequence[str]]) -> None:
        return None

    def diagnostics(self) -> dict:
        return {}

    def close(self) -> None:
        pass   # the net goes with the judge object

    # -- internals --------------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str], prefix: str) -> dict[str, list[int]]:
        """Token ids (with the tokenizer's framing, untruncated) of prefix + text, once per distinct text."""
        uniq = list(dict.fromkeys(texts))
        clean = [prefix + t.replace(self.sep, " ") for t in uniq]
        ids = self.tok(clean, add_special_tokens=True, truncation=False).input_ids if clean else []
        return dict(zip(uniq, ids))

    def _sequences(self, triples: Sequence[tuple[str, str, str]]) -> list[tuple[list[int], tuple[int, int, int]]]:
        """Concatenated ids and the positions of the three prefix tokens, per (prompt, left, right)."""
        src_ids = self._encode([t[0] for t in triples], PREFIXES[0])
        cand_ids = self._encode([x for t in triples for x in t[1:]], PREFIXES[1])
        head = self._frame[0]  # each prefix token sits right after the segment's leading framing tokens
        cand2 = self.prefix_ids[2]
        out = []
        for p, x, y in triples:
            src = _truncate(src_ids[p], self.source_max_length, self._frame)
            budget = self.candidate_max_length + (self.source_max_length - len(src)) // 2
            left = _truncate(cand_ids[x], budget, self._frame)
            right = _truncate(cand_ids[y], budget, self._frame)
            right = right[:head] + [cand2] + right[head + 1:]  # the right slot's prefix is <|candidate2|>
            out.append((src + left + right, (head, len(src) + head, len(src) + len(left) + head)))
        return out

    def _run(self, triples: Sequence[tuple[str, str, str]]) -> np.ndarray:
        import torch

        seqs = self._sequences(triples)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))  # similar lengths share a batch
        out = np.zeros(len(seqs), dtype=np.float64)
        pad = self.tok.pad_token_id or 0
        with torch.inference_mode():
            for idx in _batches(order, [len(s) for s, _ in seqs], self.batch_size, self.max_batch_tokens):
                width = max(len(seqs[i][0]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids[row, :len(seqs[i][0])] = torch.tensor(seqs[i][0])
                    mask[row, :len(seqs[i][0])] = 1
                pos = torch.tensor([seqs[i][1] for i in idx])
                logits = net_logits(self.net, ids.to(self.device), mask.to(self.device), pos.to(self.device))
                out[idx] = logits.float().cpu().numpy()
        return out


def chat_source(tok, prompt: str) -> str:
    """The prompt as SPPO's scripts/rank.py hands it to PairRM: the policy tokenizer's chat template over the
    user turn and an assistant turn "None", cut where that "None" starts (template text, BOS included, up to
    the answer). rank.py cuts at the first "None", which also cuts a prompt that contains the word; the
    assistant's own is the last one, so such a prompt stays whole here."""
    mark = "None"
    text = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": mark}],
                                   tokenize=False)
    return text[:text.rindex(mark)]


def _place(net: nn.Module, device: str, dtype: str | None) -> nn.Module:
    """The net on `device` in `dtype`. None: fp16 on GPUs and fp32 elsewhere, as llm-blender runs PairRM.
    "int8": the CPU path, dynamic int8 quantisation of every linear layer (weights int8, activations
    quantised per batch), where a CPU's int8 matmuls are faster than fp32 and bf16 may have no fast path."""
    if dtype == "int8" and device != "cpu":
        raise ValueError(f"PairRM dtype int8 is the CPU path (dynamic quantisation); on {device} use float16 or bfloat16")
    import torch
    from torch import nn

    if dtype == "int8":
        return torch.ao.quantization.quantize_dynamic(net.float(), {nn.Linear}, dtype=torch.qint8)
    dt = getattr(torch, dtype) if dtype else (torch.float16 if device.startswith("cuda") else torch.float32)
    return net.to(device=device, dtype=dt)


def _batches(order: list[int], lengths: list[int], max_rows: int, max_tokens: int | None) -> list[list[int]]:
    """Consecutive slices of `order` with at most `max_rows` rows and rows × longest ≤ `max_tokens`."""
    out, cur = [], []
    for i in order:
        if cur and (len(cur) == max_rows or (max_tokens and (len(cur) + 1) * lengths[i] > max_tokens)):
            out.append(cur)
            cur = []
        cur.append(i)
    return out + ([cur] if cur else [])


def _framing(tok) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a text ((1, 1) for [CLS] x [SEP])."""
    bare = tok("a", add_special_tokens=False).input_ids
    full = tok("a", add_special_tokens=True).input_ids
    for head in range(len(full) - len(bare) + 1):
        if full[head:head + len(bare)] == bare:
            return head, len(full) - head - len(bare)
    raise ValueError("cannot locate the text inside the tokenizer's framing")


def _truncate(ids: list[int], max_length: int, frame: tuple[int, int]) -> list[int]:
    """Cut text tokens from the right, keeping the framing tokens (what HF truncation=True does)."""
    if len(ids) <= max_length:
        return ids
    head, tail = frame
    keep = max(max_length - head - tail, 0)
    return ids[:head + keep] + (ids[len(ids) - tail:] if tail else [])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))  # overflow-free σ


def aggregate_scores(logits: np.ndarray) -> np.ndarray:
    """s_i = (1/K) Σ_j (L_ij − L_ji), the self term contributing 0 (llm-blender's "max_logits")."""
    return (logits - logits.T).mean(axis=1)


def to_probabilities(logits: np.ndarray, aggregation: str = "sppo") -> np.ndarray:
    """K×K P̂ from K×K logits: σ(s_i − s_j) ("sppo") or ½(σ(L_ij) + σ(−L_ji)) ("pairwise")."""
    if aggregation == "sppo":
        s = aggregate_scores(logits)
        return _sigmoid(s[:, None] - s[None, :])
    p = 0.5 * (_sigmoid(logits) + _sigmoid(-logits.T))
    np.fill_diagonal(p, 0.5)
    return p
