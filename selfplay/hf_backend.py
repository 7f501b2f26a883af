"""HF `generate` backend with per-sample seeds that do not depend on batching.

Sampling is done as Gumbel-max: after temperature and top-p, each row adds Gumbel noise drawn
from a counter-based hash of (row seed, step, token id) and takes the argmax. That is an exact
sample from the filtered softmax, and a row's noise depends only on its own seed, so a
(round, prompt, sample) gets the same response whatever batch or shard it lands in.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList,
                          TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

from selfplay.sampling import Completion, Request, SamplingSpec
from selfplay.progress import bar

_M32 = 0xFFFFFFFF


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser; inputs and outputs stay in [0, 2^32) so int64 never overflows."""
    for _ in range(2):
        x = ((x ^ (x >> 16)) * 0x45D9F3B) & _M32
    return x ^ (x >> 16)


def sample_seed(seed: int, index: int) -> int:
    """The stream of sample `index` of a request seeded with `seed`."""
    return int(_mix(torch.tensor((seed * 1000003 + index * 7919) & _M32)).item())


class SeededGumbel(LogitsProcessor):
    def __init__(self, seeds: Sequence[int], prompt_len: int):
        self.seeds = torch.tensor([s & _M32 for s in seeds], dtype=torch.int64)[:, None]
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_len  # generated-token index, same for every row
        # on the scores' device (a GPU's, where the model runs): the same integer hash gives the same samples
        seeds = self.seeds.to(scores.device)
        vocab = torch.arange(scores.shape[1], dtype=torch.int64, device=scores.device)[None, :]
        h = _mix((_mix(seeds ^ (step * 0x9E3779B1 & _M32)) + vocab * 0x85EBCA6B) & _M32)
        u = (h.to(torch.float64) + 0.5) / 2.0**32
        gumbel = -torch.log(-torch.log(u)).to(scores.dtype)
        return scores + gumbel


def sampler(spec: SamplingSpec, seeds: Sequence[int], prompt_len: int) -> LogitsProcessorList:
    """The processors that turn next-token logits into a sample when followed by an argmax: temperature,
    top-k, top-p (transformers' order), then the row's seeded Gumbel noise. Shared with the Nash-MD
    mixture sampler (selfplay/mixture.py), so that both draw a token the same way."""
    procs = LogitsProcessorList()
    if spec.temperature != 1.0:
        procs.append(TemperatureLogitsWarper(spec.temperature))
    if spec.top_k > 0:
        procs.append(TopKLogitsWarper(spec.top_k))
    if spec.top_p < 1.0:
        procs.append(TopPLogitsWarper(spec.top_p))
    procs.append(SeededGumbel(seeds, prompt_len))
    return procs


class HFBackend:
    def __init__(self, path: str, *, batch_size: int = 64, device: str | None = None, dtype: str = "float32", **_):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tok = AutoTokenizer.from_pretrained(path)
        self.tok.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.batch_size = batch_size

    def _prompt_text(self, prompt: str) -> str:
        return prompt_text(self.tok, prompt)

    @torch.inference_mode()
    def generate(self, requests: Sequence[Request], spec: SamplingSpec) -> list[list[Completion]]:
        rows = [(r, j) for r in requests for j in range(spec.n)]
        texts: list[Completion] = []
        with bar(math.ceil(len(rows) / self.batch_size), "generate", unit="batch") as b:
            for i in range(0, len(rows), self.batch_size):
                texts += self._batch(rows[i:i + self.batch_size], spec)
                b.update(1)
        return [texts[k * spec.n:(k + 1) * spec.n] for k in range(len(requests))]

    def _batch(self, rows: list[tuple[Request, int]], spec: SamplingSpec) -> list[Completion]:
        enc = self.tok([self._prompt_text(r.prompt) for r, _ in rows], return_tensors="pt", padding=True,
                       add_special_tokens=False).to(self.device)
        procs = sampler(spec, [sample_seed(r.seed, j) for r, j in rows], enc.input_ids.shape[1])
        out = self.model.generate(**enc, do_sample=False, max_new_tokens=spec.max_new_tokens,
                                  logits_processor=procs, eos_token_id=self.tok.eos_token_id,
                                  pad_token_id=self.tok.pad_token_id)
        return [self._completion(ids) for ids in out[:, enc.input_ids.shape[1]:].tolist()]

    def _completion(self, ids: list[int]) -> Completion:
        return completion(self.tok, ids)

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def prompt_text(tok, prompt: str) -> str:
    """The user message in the chat template, ready for the assistant's turn."""
    return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def completion(tok, ids: list[int]) -> Completion:
    """A row of generated ids as text: cut at the first end-of-turn (finished), else padding dropped."""
    eos, pad = tok.eos_token_id, tok.pad_token_id
    finished = eos in ids
    ids = ids[:ids.index(eos)] if finished else [t for t in ids if t != pad]
    return Completion(tok.decode(ids, skip_special_tokens=True).strip(), len(ids), finished)


def sample_live(model, tok, requests: Sequence[Request], spec: SamplingSpec, batch_size: int = 64) -> list[list[Completion]]:
    """Sample from a model already in memory: the trainer's own weights (EGPO's per-step samples),
    with the same seeded Gumbel-max sampler as a checkpoint; no reload from disk."""
    import copy
    backend = HFBackend.__new__(HFBackend)   # the sampler without loading anything
    backend.model, backend.batch_size = model, batch_size
    backend.device = next(model.parameters()).device
    backend.tok = copy.copy(tok)
    backend.tok.padding_side = "left"
    was_training = model.training
    model.eval()
    try:
        return backend.generate(requests, spec)
    finally:
        model.train(was_training)
