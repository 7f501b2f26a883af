"""The LM head's log-probs of given target tokens, a chunk of rows at a time (see selfplay/logprobs.py).

Numerics match the model's own head followed by `.float().log_softmax(-1)`: the projection runs in the
compute dtype (autocast's, as `nn.Linear` would under it), every later step in fp32. The backward
recomputes each chunk's logits from the saved hidden states, so nothing of size [rows, vocab] outlives
its chunk; the weight gradient is accumulated over chunks in fp32.

Logit transforms the head knows (`logit_transform`): soft-capping (`final_logit_softcapping`, Gemma 2/3),
a multiplier (`logit_scale`, Cohere) and a divisor (`logits_scaling`, Granite). Any other one is caught by
the check in selfplay/logprobs.py and refused.
"""
from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 23   # logits per chunk: 8M fp32 = 32 MiB (256 rows of a 32k vocabulary)


def logit_transform(config) -> tuple[float, float | None]:
    """(scale, soft-cap) applied to the head's output: logits = cap·tanh(scale·z / cap)."""
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = float(getattr(c, "logit_scale", None) or 1.0)
    if getattr(c, "logits_scaling", None):
        scale /= float(c.logits_scaling)
    cap = getattr(c, "final_logit_softcapping", None)
    return scale, (float(cap) if cap else None)


def _head(hf) -> torch.nn.Linear:
    head = hf.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(f"{type(hf).__name__}'s output layer is a {type(head).__name__}, not a plain linear "
                         "layer; the chunked log-prob head cannot apply it")
    if type(head.weight).__name__ == "DTensor":
        raise ValueError("the LM head's weight is still sharded (a DTensor) inside the forward; the chunked "
                         "head needs FSDP to gather the root module's parameters for its forward")
    return head


def head_logprobs(hf, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[N] fp32 log-probs of `targets` [N] under the head applied to `hidden` [N, H]; differentiable."""
    head = _head(hf)
    scale, cap = logit_transform(hf.config)
    rows = max(1, CHUNK_ELEMENTS // head.weight.shape[0])
    return _HeadLogProbs.apply(hidden, head.weight, head.bias, targets, scale, cap, rows)


def head_logits(hf, hidden: torch.Tensor) -> torch.Tensor:
    """[N, V] fp32 logits of a few rows, as head_logprobs computes them (for the model-agreement check)."""
    head = _head(hf)
    scale, cap = logit_transform(hf.config)
    dtype = _compute_dtype(hidden, head.weight)
    with torch.autocast(hidden.device.type, enabled=False):
        b = None if head.bias is None else head.bias.to(dtype)
        return _logits(hidden.to(dtype), head.weight.to(dtype), b, scale, cap)[0]


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    dev = hidden.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _logits(h, w, b, scale: float, cap: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fp32 logits of one chunk, and tanh's value when soft-capped (its derivative needs it)."""
    z = torch.nn.functional.linear(h, w, b).float()
    if scale != 1.0:
        z.mul_(scale)
    if cap is None:
        return z, None
    t = torch.tanh(z / cap)
    return t * cap, t


class _HeadLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, scale, cap, rows):
        dtype = _compute_dtype(hidden, weight)
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            out = torch.empty(len(hidden), device=hidden.device, dtype=torch.float32)
            lse = torch.empty_like(out)
            for s in range(0, len(hidden), rows):
                z, _ = _logits(hidden[s:s + rows].to(dtype), w, b, scale, cap)
                lse[s:s + rows] = z.logsumexp(-1)
                out[s:s + rows] = z.gather(1, targets[s:s + rows, None]).squeeze(1) - lse[s:s + rows]
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.dtype, ctx.scale, ctx.cap, ctx.rows = dtype, scale, cap, rows
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        dtype, rows = ctx.dtype, ctx.rows
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        gh = torch.empty_like(hidden) if need_h else None
        gw = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32) if need_w else None
        gb = torch.zeros(weight.shape[0], device=weight.device, dtype=torch.float32) if need_b else None
        grad = grad.float()
        with torch.autocast(hidden.device.type, enabled=False):
            _backward_chunks(ctx, hidden, w, b, targets, lse, grad, gh, gw, gb)
        return (gh, None if gw is None else gw.to(weight.dtype), None if gb is None else gb.to(bias.dtype),
                None, None, None, None)


def _backward_chunks(ctx, hidden, w, b, targets, lse, grad, gh, gw, gb) -> None:
    """Fill the gradients gh [N, H], gw [V, H] and gb [V] (those not None), one chunk of rows at a time."""
    dtype, rows = ctx.dtype, ctx.rows
    for s in range(0, len(hidden), rows):
        h = hidden[s:s + rows].to(dtype)
        g = grad[s:s + rows, None]
        z, t = _logits(h, w, b, ctx.scale, ctx.cap)
        # d log p(y) / d z = onehot(y) − softmax(z), times the incoming gradient
        dz = z.sub_(lse[s:s + rows, None]).exp_().mul_(-g)
        dz.scatter_add_(1, targets[s:s + rows, None], g)
        if t is not None:
            dz.mul_(1 - t * t)
        if ctx.scale != 1.0:
            dz.mul_(ctx.scale)
        if gb is not None:
            gb += dz.sum(0)
        dz = dz.to(dtype)
        if gh is not None:
            gh[s:s + rows] = dz @ w
        if gw is not None:
            gw += (dz.t() @ h).float()
