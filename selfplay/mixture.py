"""Sampling from the token-level geometric mixture of two causal LMs: Nash-MD's opponent (Munos et al.,
arXiv 2312.00886; research notes §6.1, and §6.2 for TRL's NashMDTrainer, which samples it the same way):

    log π_mix(y_k | x, y_<k) = (1 − m)·log π_θ(y_k | x, y_<k) + m·log π_ref(y_k | x, y_<k) − log Z_k

normalised over the vocabulary at every token (Z_k). The sequence-level mixture π_θ^{1−m} π_ref^m / Z
has one normaliser over all sequences and cannot be sampled exactly; the per-token one is what the
LLM version of Nash-MD uses. The two models decode the same prefix in lock-step, each with its own KV
cache. A token is drawn from the mixture as selfplay.hf_backend draws one from a single model
(temperature, top-k, top-p, then the row's seeded Gumbel noise and an argmax), so a request's sample
does not depend on its batch, m = 0 gives the policy's own sample and m = 1 the reference's, token for
token (tests/test_nash_md.py).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Callable, ContextManager, Sequence

import torch

from selfplay.sampling import Completion, Request, SamplingSpec


def mixture_logprobs(policy_logits: torch.Tensor, ref_logits: torch.Tensor, coef: float) -> torch.Tensor:
    """[B, V] log π_mix of the next token: (1 − m)·log_softmax(policy) + m·log_softmax(ref), renormalised;
    in fp32 at least (half-precision logits are upcast for the softmaxes)."""
    dt = torch.promote_types(policy_logits.dtype, torch.float32)
    mixed = (1 - coef) * torch.log_softmax(policy_logits.to(dt), -1) + coef * torch.log_softmax(ref_logits.to(dt), -1)
    return torch.log_softmax(mixed, -1)


@torch.no_grad()
def sample_mixture(policy, reference, tok, requests: Sequence[Request], spec: SamplingSpec, coef: float,
                   batch_size: int = 64,
                   reference_mode: Callable[[], ContextManager] = contextlib.nullcontext) -> list[list[Completion]]:
    """For each request, spec.n samples from π_policy^{1−coef} π_reference^{coef} (per token).

    `reference_mode()` is the context the reference runs in: with LoRA the reference is the policy
    model itself with its adapters disabled (reference = policy, reference_mode = policy.disable_adapter).
    Both models are put in eval mode while sampling and given back in their former mode."""
    if not 0.0 <= coef <= 1.0:
        raise ValueError(f"mixture coefficient must be in [0, 1], got {coef}")
    tok = copy.copy(tok)
    tok.padding_side = "left"
    rows = [(r, j) for r in requests for j in range(spec.n)]
    modes = [(m, m.training) for m in (policy, reference)]
    for m, _ in modes:
        m.eval()
    try:
        out: list[Completion] = []
        for i in range(0, len(rows), batch_size):
            out += _batch(policy, reference, reference_mode, tok, rows[i:i + batch_size], spec, coef)
    finally:
        for m, was_training in modes:
            m.train(was_training)
    return [out[k * spec.n:(k + 1) * spec.n] for k in range(len(requests))]


def _batch(policy, reference, reference_mode, tok, rows, spec: SamplingSpec, coef: float) -> list[Completion]:
    from selfplay.hf_backend import completion, prompt_text, sample_seed, sampler

    device = next(policy.parameters()).device
    enc = tok([prompt_text(tok, r.prompt) for r, _ in rows], return_tensors="pt", padding=True,
              add_special_tokens=False).to(device)
    ids, mask = enc.input_ids, enc.attention_mask
    prompt_len = ids.shape[1]
    procs = sampler(spec, [sample_seed(r.seed, j) for r, j in rows], prompt_len)
    # Left padding: positions count real tokens only, as transformers' generate computes them.
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    step_ids, caches = ids, [None, None]
    done = torch.zeros(len(rows), dtype=torch.bool, device=device)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    for _ in range(spec.max_new_tokens):
        logits = []
        for k, (model, mode) in enumerate(((policy, contextlib.nullcontext), (reference, reference_mode))):
            with mode():
                o = model(input_ids=step_ids, attention_mask=mask, position_ids=pos, past_key_values=caches[k],
                          use_cache=True, logits_to_keep=1)
            logits.append(o.logits[:, -1, :])
            caches[k] = o.past_key_values
        scores = procs(ids, mixture_logprobs(logits[0], logits[1], coef))
        nxt = scores.argmax(-1).masked_fill(done, pad)   # a finished row only pads, as generate does
        ids = torch.cat([ids, nxt[:, None]], 1)
        done |= nxt == eos
        if bool(done.all()):
            break
        step_ids, mask = nxt[:, None], torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        pos = pos[:, -1:] + 1
    return [completion(tok, r) for r in ids[:, prompt_len:].tolist()]
