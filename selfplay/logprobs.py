"""Per-sequence log-probs log π(y|x): the only quantity every loss in `losses.py` consumes.

Memory. A causal LM's largest activation is its head's output: [tokens, vocab] logits, kept in fp32 for
a stable softmax (16k tokens × a 32k vocabulary is 2 GiB, × Qwen2's 152k 10 GiB, and autograd keeps
them for backward). Here the backbone's last hidden state is taken from inside the model's own forward
(a forward hook: autocast applies, and FSDP2 has the root's parameters gathered), only the positions
that predict a response token are kept, and `selfplay.head` projects them through the LM head a chunk
of rows at a time, keeping one logsumexp per row; its backward recomputes each chunk. Peak head memory
is one [rows, vocab] fp32 chunk. The model itself computes the logits of one position per row, which
doubles as a check that the head reproduces the model's logits (scaling, soft-capping) on every call.

Batching. Rows are right-padded and attention is causal, so a real token never attends to the padding
after it: no attention mask is needed (SDPA's causal kernel runs instead of a masked one). Sequences
are sorted by length and cut into groups that minimise padded tokens plus a fixed cost per forward; the
log-probs keep their graph and come back in input order.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Levers:
    """How `sequence_logprobs` computes. The defaults are the fast path; every switch gives the same
    values (tested) and exists so that scripts/bench_trainer.py can measure what each one is worth."""
    chunked_head: bool = True     # False: the model's own [B, T, V] logits and an fp32 log-softmax
    # None: on the CPU only. Measured by scripts/bench_trainer.py --levers at the 32k-vocabulary shape: +12% on a
    # 2-core CPU, but 0.28x on an H200 (8.4k vs 29.6k tokens/s, bf16), where one padded forward per step wins.
    length_groups: bool | None = None   # False: one forward padded to the longest sequence
    attention_mask: bool = False  # True: pass the padding mask anyway (right padding never needs it)
    forward_cost: int = 256       # a forward's fixed cost, in padded tokens, when cutting length groups
    max_group_tokens: int = 16384  # padded tokens per forward at most (bounds no-grad scoring memory)


DEFAULT = Levers()   # scripts/bench_trainer.py replaces it in its own process to measure each lever


def encode(tok, prompts: Sequence[str], responses: Sequence[str], max_length: int = 1024,
           max_prompt_length: int = 0, paired: bool = False) -> list[tuple[list[int], int]]:
    """Per row: ids of the chat-templated prompt + response + end-of-turn, and how many of them are
    the prompt's. Each distinct prompt is templated once. Truncation: max_prompt_length 0 keeps the
    first max_length ids; N > 0 is SPPO's (sppo/trainer.py tokenize_row): when prompt + the pair's longer
    response exceed max_length, the prompt keeps its last N ids, and if still too long both responses
    their first max_length − N. `paired`: rows i and i + n/2 are one pair (chosen, then rejected, as the
    trainer lays them out), so the longer response decides for both; else each row is its own pair."""
    heads: dict[str, list[int]] = {}
    for p in dict.fromkeys(prompts):
        text = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        heads[p] = tok(text, add_special_tokens=False).input_ids
    tails = [tok(r, add_special_tokens=False).input_ids + [tok.eos_token_id] for r in responses]  # end of turn scored
    half = len(tails) // 2
    if paired and 2 * half != len(tails):
        raise ValueError(f"paired rows come as chosen then rejected: an even count, got {len(tails)}")
    rows = []
    for i, (p, t) in enumerate(zip(prompts, tails)):
        h = heads[p]
        if max_prompt_length:
            longer = max(len(t), len(tails[(i + half) % len(tails)])) if paired else len(t)
            if len(h) + longer > max_length:
                h = h[-max_prompt_length:]
            if len(h) + longer > max_length:
                t = t[:max_length - max_prompt_length]
        rows.append(((h + t)[:max_length], min(len(h), max_length)))
    return rows


def _pad(rows: Sequence[tuple[list[int], int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    response = torch.tensor([[0] * n + [1] * (len(ids) - n) + [0] * (width - len(ids)) for ids, n in rows])
    return input_ids, attention, response


def encode_pairs(tok, prompts: Sequence[str], responses: Sequence[str], max_length: int = 1024):
    """Right-padded ids of chat-templated prompt + response + end-of-turn, and a response-token mask."""
    return _pad(encode(tok, prompts, responses, max_length), tok.pad_token_id)


def sequence_logprobs(model, tok, prompts: Sequence[str], responses: Sequence[str], *, average: bool = False,
                      max_length: int = 1024, max_prompt_length: int = 0, paired: bool = False,
                      levers: Levers | None = None) -> torch.Tensor:
    """[B] summed (or per-token averaged) log-probs of each response given its prompt, fp32; keeps grad.
    Truncation as `encode` (max_length, max_prompt_length, paired)."""
    lv = levers or DEFAULT
    device = next(model.parameters()).device
    rows = encode(tok, prompts, responses, max_length, max_prompt_length, paired)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0   # never attended to, never scored
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    groups = length_groups([len(rows[i][0]) for i in order], lv) if grouped(lv, device) else [len(rows)]
    sums, counts, start = [], [], 0
    for size in groups:
        ids, attention, response = (t.to(device) for t in _pad([rows[i] for i in order[start:start + size]], pad))
        s, c = _group_logprobs(model, ids, attention if lv.attention_mask else None, response, lv.chunked_head)
        sums.append(s)
        counts.append(c)
        start += size
    inverse = torch.empty(len(rows), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(rows))
    inverse = inverse.to(device)
    total, count = torch.cat(sums)[inverse], torch.cat(counts)[inverse]
    return total / count.clamp(min=1) if average else total


def grouped(lv: Levers, device: torch.device) -> bool:
    """Whether sequence_logprobs cuts length groups on `device` (Levers.length_groups; None: a CPU only)."""
    return lv.length_groups if lv.length_groups is not None else device.type == "cpu"


def length_groups(lengths: Sequence[int], lv: Levers) -> list[int]:
    """Sizes of consecutive groups of the ascending `lengths` that minimise Σ(rows × longest) plus
    lv.forward_cost per group, each at most lv.max_group_tokens padded tokens (one row at least)."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n   # best[j]: cost of the first j sequences
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        width = lengths[j - 1]
        for i in range(j - 1, -1, -1):   # group = sequences i..j-1, padded to lengths[j-1]
            rows = j - i
            if rows > 1 and rows * width > lv.max_group_tokens:
                break
            cost = best[i] + rows * width + lv.forward_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i
    sizes, j = [], n
    while j > 0:
        sizes.append(j - cut[j])
        j = cut[j]
    return sizes[::-1]


def _group_logprobs(model, ids, attention, response, chunked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response-token log-probs [b] (fp32) and response-token counts [b] of one padded group."""
    scored = response[:, 1:].bool()   # position t predicts token t+1
    targets = ids[:, 1:][scored]
    token_lp = (_hooked_head(model, ids, attention, scored, targets) if chunked
                else _full_logits(model, ids, attention, scored, targets))
    counts = scored.sum(1)
    rows = torch.arange(len(ids), device=ids.device).repeat_interleave(counts)
    sums = torch.zeros(len(ids), device=ids.device, dtype=torch.float32).index_add(0, rows, token_lp)
    return sums, counts.float()


def _full_logits(model, ids, attention, scored, targets) -> torch.Tensor:
    """The unchunked reference: every position's logits in fp32 and a full log-softmax."""
    logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
    return logits.log_softmax(-1)[scored].gather(1, targets.unsqueeze(1)).squeeze(1)


def _hooked_head(model, ids, attention, scored, targets) -> torch.Tensor:
    from selfplay.head import head_logprobs, head_logits

    hf = causal_lm(model)
    backbone = hf.base_model
    if backbone is hf:
        raise ValueError(f"{type(hf).__name__} has no separate backbone (base_model_prefix "
                         f"{hf.base_model_prefix!r}); the chunked log-prob head cannot take its hidden states")
    grabbed: dict[str, torch.Tensor] = {}

    def hook(module, args, output):   # runs inside the model's forward: autocast on, FSDP params gathered
        hidden = output[0]
        grabbed["lp"] = head_logprobs(hf, hidden[:, :-1][scored], targets)
        with torch.no_grad():
            grabbed["check"] = head_logits(hf, hidden[:1, -1])[0]

    handle = backbone.register_forward_hook(hook)
    try:
        out = model(input_ids=ids, attention_mask=attention, use_cache=False, **_one_logit(hf))
    finally:
        handle.remove()
    _check_head(hf, grabbed["check"], out.logits[0, -1].detach().float())
    return grabbed["lp"]


def _one_logit(hf) -> dict:
    """Ask the model for the last position's logits only, where its forward supports that."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(hf.forward).parameters else {}


def _check_head(hf, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    if not (torch.isfinite(ours).all() and torch.isfinite(theirs).all()):
        return   # diverged weights: the loss is non-finite too, and the trainer reports that
    err = float((ours - theirs).abs().max())
    if not err <= 0.02 * float(theirs.abs().max()) + 1e-3:
        raise ValueError(f"{type(hf).__name__}: its logits are not the LM head's output as selfplay.head computes "
                         f"it (max difference {err:.3g}); a logit scaling or soft-capping this code does not know. "
                         "Add it to selfplay.head.logit_transform")


def causal_lm(model):
    """The transformers model inside DDP (`module`), the worker's offload anchor (`inner`) and peft."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "inner", None), torch.nn.Module):
            model = model.inner
        elif callable(getattr(model, "get_base_model", None)):
            model = model.get_base_model()
        else:
            return model


@torch.inference_mode()
def batched_logprobs(model, tok, prompts: Sequence[str], responses: Sequence[str], *,
                     batch_size: int = 64, average: bool = False, max_length: int = 1024) -> torch.Tensor:
    """Frozen-model log-probs for reference terms, computed once per round."""
    out = [sequence_logprobs(model, tok, prompts[i:i + batch_size], responses[i:i + batch_size],
                             average=average, max_length=max_length)
           for i in range(0, len(prompts), batch_size)]
    return torch.cat(out).cpu() if out else torch.zeros(0)
