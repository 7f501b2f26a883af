"""RLHFlow's pair-preference model as a judge (``judge.name: pair_pm``), the judge INPO uses.

Model: a causal LM (``RLHFlow/pair-preference-model-LLaMA3-8B``, Llama-3-8B-Instruct fine-tuned by
RLHFlow) that reads one user turn holding the prompt and both responses and answers ``A`` or ``B``.

Input format, as RLHFlow serves it. Verified in three places that agree line for line:
RLHFlow/RLHF-Reward-Modeling ``pair-pm/README.md`` ("Service the RM", the model card's code);
the third-party INPO code XuHuang441/Multi-player-Nash-Policy-Optimization
``INPO_server/annotate_data/get_pref_single.py`` @3adca2b, lines 48-94 (the file research notes
algorithms.md §2.1 cite); and a ``PairPMPipeline`` class in a public RewardBench-evaluation script
(the same code, one prompt at a time):

1. context: the prompt as one user message through a fixed "plain" chat template
   (:data:`CONTEXT_TEMPLATE`, get_pref_single.py:63, rendered by the tokenizer's
   ``apply_chat_template`` so HF's Jinja settings apply; :135 renders it).
2. user turn: ``"[CONTEXT] {context} [RESPONSE A] {response_A} [RESPONSE B] {response_B} \\n"``
   (:65, :81).
3. text: the model tokenizer's OWN chat template over ``[{"role": "user", "content": turn}]``,
   ``tokenize=False`` and **without** ``add_generation_prompt`` (the source never passes it),
   every BOS-token string removed (``.replace(tokenizer.bos_token, "")``), then encoded with
   ``add_special_tokens=False`` (:84).
4. ``P_A`` = softmax over the next-token logits (last position) of the token ids of ``"A"`` and
   ``"B"`` (each ``tokenizer.encode(letter, add_special_tokens=False)``, asserted to be one token,
   :66-70), temperature 1 (:74, :88-93).
5. Both orders (:78-80): ``P(a ≻ b) = ½ (P_A(a, b) + 1 − P_A(b, a))`` (:96 averages the two
   "chosen" probabilities). INPO's script then thresholds that to 0 / ½ / 1 (:97) for its
   tournament; this judge returns the soft average (the project's matrices and pair rules decide).

A tokenizer without a chat template is refused (the model's format depends on it; the model card's
code relies on the checkpoint's own, and the third-party INPO script's stand-in for a missing one,
:51-61, is not used). No truncation (the source truncates nothing). Text inside prompts/responses is
not escaped, as in the source.

Batching (the source runs one sequence at a time): the distinct single-order texts of a call are
tokenised once, sorted by length, left-padded with explicit position ids and run ``batch_size`` at a
time under ``inference_mode`` with ``logits_to_keep=1``, so each row equals its unpadded run up to
float rounding. Weights in the checkpoint's dtype on a GPU (``dtype="auto"``; bf16 for RLHFlow's),
fp32 on the CPU; logits are read in fp32 and the two-way softmax is taken in float64.
``compare`` asks each pair in both orders (``both_orders = True``); ``matrices`` asks each unordered
pair once (M_ji = 1 − M_ij). The judge never abstains.
"""
from __future__ import annotations

import os
import re
from typing import Iterator, Sequence

import numpy as np

from judges.spec import JudgeContext, JudgeSpec, actor_device
from judges.sizing import checkpoint_label, own_checkpoint

# RLHF-Reward-Modeling pair-pm/README.md; get_pref_single.py:63 (``tokenizer_plain.chat_template``).
CONTEXT_TEMPLATE = ("\n{% for message in messages %}{% if loop.index0 % 2 == 0 %}\n\n<turn> user\n "
                    "{{ message['content'] }}{% else %}\n\n<turn> assistant\n {{ message['content'] }}{% endif %}"
                    "{% endfor %}\n\n\n")
# get_pref_single.py:65.
PROMPT_TEMPLATE = "[CONTEXT] {context} [RESPONSE A] {response_A} [RESPONSE B] {response_B} \n"
LETTERS = ("A", "B")


def load_model(path: str, device: str, auto_class: str):
    """(model on `device` in eval mode, tokenizer): the checkpoint's dtype on a GPU, fp32 on the CPU."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    kw = {"dtype": "auto" if str(device).startswith("cuda") else torch.float32}
    if getattr(config, "attn_logit_softcapping", None):   # Gemma-2: eager attention, as EGPO's authors load it
        kw["attn_implementation"] = "eager"
    model = getattr(transformers, auto_class).from_pretrained(path, **kw).to(device).eval()
    return model, tok


def release() -> None:
    """Free what a dropped model held (call after the last reference is gone)."""
    import gc

    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _two_way(logit_a: np.ndarray, logit_b: np.ndarray) -> np.ndarray:
    """exp(l_A) / (exp(l_A) + exp(l_B)) in float64 (= σ(l_A − l_B), stable)."""
    d = np.asarray(logit_a, dtype=np.float64) - np.asarray(logit_b, dtype=np.float64)
    return np.where(d >= 0, 1.0 / (1.0 + np.exp(-np.abs(d))), np.exp(-np.abs(d)) / (1.0 + np.exp(-np.abs(d))))


class PairPMJudge:
    """RLHFlow pair-preference LM, both orders averaged (see the module docstring)."""

    name = "pair_pm"
    order_symmetric = False
    both_orders = True   # compare() already covers both orders (judges.base.cross_preferences asks once)
    independent_pairs = True   # one pair per query: the judge stage may ask only the pairs it needs

    def __init__(self, path: str, *, device: str = "cpu", batch_size: int = 8):
        self.device, self.batch_size = device, max(1, int(batch_size))
        self.model, self.tok = load_model(path, device, "AutoModelForCausalLM")
        if not getattr(self.tok, "chat_template", None):
            raise ValueError(f"pair_pm judge: the tokenizer of {path} has no chat template; the pair-preference "
                             "model reads its user turn through the model's own chat template")
        ids = []
        for letter in LETTERS:
            enc = self.tok.encode(letter, add_special_tokens=False)
            if len(enc) != 1:
                raise ValueError(f"pair_pm judge: {letter!r} is {len(enc)} tokens in the tokenizer of {path}; "
                                 "the pair-preference model needs single-token 'A' and 'B'")
            ids.append(enc[0])
        self.token_a, self.token_b = ids
        self.pad_id = next(i for i in (self.tok.pad_token_id, self.tok.eos_token_id, 0) if i is not None)
        self.queries = 0               # single-order model queries run (distinct texts)
        self.pairs = 0                 # pairs compared (each in both orders)
        self.order_disagreements = 0   # ... whose two orders favoured different responses

    # -- the source's format ------------------------------------------------------------------------

    def context(self, prompt: str) -> str:
        return self.tok.apply_chat_template([{"role": "user", "content": prompt}], chat_template=CONTEXT_TEMPLATE,
                                            tokenize=False)

    def text(self, prompt: str, first: str, second: str) -> str:
        """The model input for one order: `first` is [RESPONSE A]."""
        turn = PROMPT_TEMPLATE.format(context=self.context(prompt), response_A=first, response_B=second)
        text = self.tok.apply_chat_template([{"role": "user", "content": turn}], tokenize=False)
        bos = self.tok.bos_token
        return text.replace(bos, "") if bos else text

    # -- scoring ------------------------------------------------------------------------------------

    def first_wins(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        """Single-order P(first ≻ second): the softmax weight of "A" with `first` as [RESPONSE A].
        Position bias is NOT removed here; :meth:`compare` averages both orders."""
        texts = [self.text(p, x, y) for p, x, y in zip(prompts, first, second)]
        uniq = list(dict.fromkeys(texts))   # each distinct query runs once
        got = dict(zip(uniq, self._p_a(uniq)))
        return np.array([got[t] for t in texts], dtype=np.float64)

    def _p_a(self, texts: list[str]) -> np.ndarray:
        import torch

        seqs = [self.tok.encode(t, add_special_tokens=False) for t in texts]
        out = np.full(len(seqs), np.nan)
        order = sorted(range(len(seqs)), key=lambda n: -len(seqs[n]))
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                rows = order[s:s + self.batch_size]
                width = max(len(seqs[n]) for n in rows)
                ids = torch.tensor([[self.pad_id] * (width - len(seqs[n])) + seqs[n] for n in rows],
                                   device=self.device)
                mask = torch.tensor([[0] * (width - len(seqs[n])) + [1] * len(seqs[n]) for n in rows],
                                    device=self.device)
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                    logits_to_keep=1).logits[:, -1, :].float()
                two = logits[:, [self.token_a, self.token_b]].cpu().numpy()
                out[rows] = _two_way(two[:, 0], two[:, 1])
        self.queries += len(seqs)
        return out

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """P(a ≻ b) = ½ (P_A(a, b) + 1 − P_A(b, a)), both orders in one batch."""
        n = len(prompts)
        if n == 0:
            return np.zeros(0)
        p = self.first_wins(list(prompts) * 2, list(a) + list(b), list(b) + list(a))
        fwd, bwd = p[:n], 1.0 - p[n:]
        self.pairs += n
        self.order_disagreements += int(np.sum((fwd - 0.5) * (bwd - 0.5) < 0))
        return 0.5 * (fwd + bwd)

    def matrices(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Each unordered pair once through compare (both orders inside); M_ji = 1 − M_ij, M_ii = ½."""
        from judges.base import symmetric_matrices
        return symmetric_matrices(self.compare, prompts, responses)

    def score_groups(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> None:
        return None

    def consistency(self, prompt_ids: Sequence[str], prompts: Sequence[str],
                    responses: Sequence[Sequence[str]]) -> None:
        return None

    def diagnostics(self) -> dict[str, float]:
        return {
            "model_queries": self.queries,
            "both_orders_asked": self.pairs,
            "order_disagreements": self.order_disagreements,
            "position_disagreement_rate": self.order_disagreements / self.pairs if self.pairs else float("nan"),
        }

    def close(self) -> None:
        self.model = None
        release()


def build_pair_pm_judge(cfg, ctx: JudgeContext) -> PairPMJudge:
    """judge.model (a checkpoint path or hub id) on the judge actor's device; judge.batch_size rows a pass."""
    return PairPMJudge(cfg.model, device=actor_device(ctx), batch_size=cfg.batch_size)


def check_local_model(cfg) -> Iterator[str]:
    """pair_pm / pair_classifier: a local model (a checkpoint path or hub id) run with transformers."""
    if not cfg.model:
        yield f"model: the {cfg.name} judge needs a checkpoint path or hub id"
    elif not os.path.isdir(cfg.model) and (cfg.model.startswith((".", "/", "~"))
                                           or not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", cfg.model)):
        yield f"model: {cfg.model!r} is neither a checkpoint directory nor a hub id (org/name)"
    if cfg.endpoint:
        yield f"endpoint: the {cfg.name} judge runs its model locally; endpoint is for the llm judge"
    if cfg.backend == "vllm":   # auto resolves to hf for these judges
        yield f"backend: the {cfg.name} judge runs on transformers (hf or auto), got {cfg.backend!r}"


def local_model_budget(cfg, policy, device: str, dtype: str):
    """pair_pm / pair_classifier: their own checkpoint (the checkpoint's dtype on a GPU, bf16 for the
    published ones), sized when it is on disk."""
    return own_checkpoint(cfg.model, device)


JUDGE = JudgeSpec(build_pair_pm_judge, budget=local_model_budget, check=check_local_model,
                  dtype_label=lambda cfg, device, dtype: checkpoint_label(device))
