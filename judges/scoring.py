"""Local judge models: next-token log-probs of a few options (verdict letters, score digits) after a
prompt, on the project's HF path or on vLLM. Shared by the LLM judge and the self-rewarding judge.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def chat_text(tok, user: str, assistant_prefix: str) -> str:
    """The chat-templated user turn followed by the start of the assistant's reply (prefill)."""
    if getattr(tok, "chat_template", None):
        head = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                       add_generation_prompt=True)
    else:
        head = f"{user}\n\n"
    return head + assistant_prefix


def _encode(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False).input_ids)


def _clean_next_tokens(tok, text: str, options: Sequence[str]) -> tuple[list[int], list[int]] | None:
    """(ids of text, one token id per option) if text+option tokenises as ids(text) + [id] for
    every option (true for byte-level BPE tokenizers after "[[" or ": "), else None."""
    base = _encode(tok, text)
    ids = []
    for opt in options:
        full = _encode(tok, text + opt)
        if len(full) != len(base) + 1 or full[:-1] != base:
            return None
        ids.append(full[-1])
    return base, ids


class HFScorer:
    """A local transformers causal LM that scores a few options as the continuation of a prompt.

    ``option_logprobs(texts, options)`` → [N, len(options)] log P(option | text). When every option
    is one clean next token (the usual case) that is one forward pass per text, reading only the
    last position (``logits_to_keep=1``); otherwise each option's tokens are scored in full after
    the options' common token prefix (still exact, one pass per option).
    """

    def __init__(self, path: str, *, device: str = "cpu", batch_size: int = 16, dtype: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device, self.batch_size = device, max(1, batch_size)
        self.tok = AutoTokenizer.from_pretrained(path)
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        dtype = dtype or ("bfloat16" if str(device).startswith("cuda") else "float32")  # log-probs read in fp32
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()

    def option_logprobs(self, texts: Sequence[str], options: Sequence[str]) -> np.ndarray:
        out = np.full((len(texts), len(options)), np.nan)
        seqs: list[list[int]] = []
        wants: list[list[tuple[int, int]]] = []
        slots: list[tuple[int, int | None]] = []   # (row, option index or None = all options at once)
        for i, text in enumerate(texts):
            clean = _clean_next_tokens(self.tok, text, options)
            if clean is not None:
                base, ids = clean
                seqs.append(base)
                wants.append([(len(base), t) for t in ids])
                slots.append((i, None))
                continue
            encs = [_encode(self.tok, text + o) for o in options]
            common = _common_prefix(encs)
            for k, e in enumerate(encs):
                seqs.append(e)
                wants.append([(p, e[p]) for p in range(max(common, 1), len(e))])
                slots.append((i, k))
        for (i, k), lps in zip(slots, self._gather(seqs, wants)):
            if k is None:
                out[i, :] = lps
            else:
                out[i, k] = float(np.sum(lps))
        return out

    def _gather(self, seqs: list[list[int]], wants: list[list[tuple[int, int]]]) -> list[list[float]]:
        """For each sequence, log P(token at position pos | ids[:pos]) for each wanted (pos, token);
        pos may equal len(ids) (the next token). Batched, longest first, left-padded."""
        import torch

        res: list[list[float]] = [[] for _ in seqs]
        order = sorted(range(len(seqs)), key=lambda n: -len(seqs[n]))
        pad = self.tok.pad_token_id
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                rows = order[s:s + self.batch_size]
                width = max(len(seqs[n]) for n in rows)
                ids = torch.tensor([[pad] * (width - len(seqs[n])) + seqs[n] for n in rows], device=self.device)
                mask = torch.tensor([[0] * (width - len(seqs[n])) + [1] * len(seqs[n]) for n in rows],
                                    device=self.device)
                pos_ids = (mask.cumsum(-1) - 1).clamp(min=0)
                keep = max(len(seqs[n]) - min((p for p, _ in wants[n]), default=len(seqs[n])) + 1 for n in rows)
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos_ids,
                                    logits_to_keep=keep).logits.float()
                logp = logits.log_softmax(-1)               # [B, keep, V]: positions width-keep .. width-1
                for b, n in enumerate(rows):
                    off = width - len(seqs[n])              # left padding of this row
                    res[n] = [float(logp[b, off + p - 1 - (width - keep), t]) for p, t in wants[n]]
        return res

    def close(self) -> None:
        import gc

        import torch
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        if len({s[i] for s in seqs}) > 1:
            return i
    return n


class VLLMScorer:
    """The same ``option_logprobs`` with vLLM, exact for options that are one clean next token.

    One generated token with the top-20 log-probs answers most rows in one cheap pass (a trained
    judge puts its verdict letters or score digits there). An option outside the top 20 is then
    scored exactly as a prompt log-prob of text + option. Options that are not one clean next
    token get −inf (callers treat a row with no finite option as unanswered).
    """

    TOP = 20

    def __init__(self, path: str, **engine_kw):
        from selfplay.vllm_backend import VLLMBackend
        self.backend = VLLMBackend(path, **engine_kw)
        self.tok = self.backend.tok

    def option_logprobs(self, texts: Sequence[str], options: Sequence[str]) -> np.ndarray:
        from vllm import SamplingParams

        out = np.full((len(texts), len(options)), -np.inf)
        todo = [(i, _clean_next_tokens(self.tok, t, options)) for i, t in enumerate(texts)]
        todo = [(i, c) for i, c in todo if c is not None]
        if not todo:
            return out
        llm = self.backend.llm
        params = SamplingParams(n=1, max_tokens=1, temperature=0.0, logprobs=self.TOP)
        results = llm.generate([{"prompt_token_ids": c[0]} for _, c in todo], params, use_tqdm=False)
        missing = []
        for (i, (base, ids)), r in zip(todo, results):
            top = r.outputs[0].logprobs[0] if r.outputs and r.outputs[0].logprobs else {}
            for k, t in enumerate(ids):
                if t in top:
                    out[i, k] = float(getattr(top[t], "logprob", top[t]))
                else:
                    missing.append((i, k, base + [t]))
        if missing:   # the log-prob vLLM reports for each prompt token includes the token itself
            exact = SamplingParams(n=1, max_tokens=1, temperature=0.0, prompt_logprobs=0)
            rows = llm.generate([{"prompt_token_ids": ids} for _, _, ids in missing], exact, use_tqdm=False)
            for (i, k, ids), r in zip(missing, rows):
                last = r.prompt_logprobs[-1]
                out[i, k] = float(getattr(last[ids[-1]], "logprob", last[ids[-1]]))
        return out

    def close(self) -> None:
        self.backend.close()


def build_scorer(backend: str, path: str, *, device: str, batch_size: int):
    """A local option scorer: hf, vllm, or auto (vLLM when usable here, else HF)."""
    if backend == "auto":
        from selfplay.backends import resolve
        backend = resolve(backend)
    if backend == "vllm":
        try:
            return VLLMScorer(path)
        except ImportError as e:
            raise RuntimeError(f"judge.backend=vllm is not available here ({e}); use judge.backend=hf") from None
    if backend != "hf":
        raise ValueError(f"unknown judge backend {backend!r} (hf | vllm | auto)")
    return HFScorer(path, device=device, batch_size=batch_size)
