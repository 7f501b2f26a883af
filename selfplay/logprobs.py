"""Per-sequence log-probs log π(y|x): the only quantity every loss in `losses.py` consumes."""
from __future__ import annotations

from typing import Sequence

import torch


def encode_pairs(tok, prompts: Sequence[str], responses: Sequence[str], max_length: int = 1024):
    """Right-padded ids of chat-templated prompt + response + end-of-turn, and a response-token mask."""
    rows, masks = [], []
    for p, r in zip(prompts, responses):
        head = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        h = tok(head, add_special_tokens=False).input_ids
        t = tok(r, add_special_tokens=False).input_ids + [tok.eos_token_id]  # the turn's end is scored too
        ids = (h + t)[:max_length]
        rows.append(ids)
        masks.append(([0] * len(h) + [1] * len(t))[:max_length])
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    response_mask = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    return input_ids, attention, response_mask


def sequence_logprobs(model, tok, prompts: Sequence[str], responses: Sequence[str], *,
                      average: bool = False, max_length: int = 1024) -> torch.Tensor:
    """[B] summed (or per-token averaged) log-probs of each response given its prompt; keeps grad."""
    device = next(model.parameters()).device
    input_ids, attention, mask = (t.to(device) for t in encode_pairs(tok, prompts, responses, max_length))
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()  # [B, T-1, V]
    targets = input_ids[:, 1:]
    token_lp = torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    m = mask[:, 1:].to(token_lp.dtype)
    total = (token_lp * m).sum(-1)
    return total / m.sum(-1).clamp(min=1) if average else total


@torch.inference_mode()
def batched_logprobs(model, tok, prompts: Sequence[str], responses: Sequence[str], *,
                     batch_size: int = 64, average: bool = False, max_length: int = 1024) -> torch.Tensor:
    """Frozen-model log-probs for reference terms, computed once per round."""
    out = [sequence_logprobs(model, tok, prompts[i:i + batch_size], responses[i:i + batch_size],
                             average=average, max_length=max_length)
           for i in range(0, len(prompts), batch_size)]
    return torch.cat(out).cpu() if out else torch.zeros(0)
