"""A pairwise sequence classifier as a judge (``judge.name: pair_classifier``), queried the way EGPO's
authors query theirs (``vectorzhou/gemma-2-2b-it-preference_dataset_mixture2_and_safe_pku-Preference``,
a Gemma-2-2B-it with a 2-class head).

Source: zhourunlong/EGPO @f295bf3 (the "Camera-ready release" tree), read line by line:

* ``lms/judges/pair_judge.py:25-35``: ``AutoModelForSequenceClassification`` (bf16, eager attention),
  its tokenizer, pad token = EOS when unset, right padding.
* ``pair_judge.py:65-72``: each query independently order-flipped at random (``shuffle_order=True``,
  ``torch.randint``): a flipped pair is asked as (second, first).
* ``pair_judge.py:76-80`` → ``lms/utils.py:23-39`` (``pref_model_query(prompt, r0, r1,
  "classification")``): the text is TRL's ``DEFAULT_PAIRWISE_SYSTEM_PROMPT`` cut before ``## Task``
  (TRL v0.13.0, ``trl/trainer/judges.py:35-57``, the version environment.yml pins; unchanged
  v0.12-v0.14), formatted with ``prompt``, ``response0`` (first) and ``response1`` (second):
  :data:`QUERY_TEMPLATE` here.
* ``pair_judge.py:83-85``: ``tokenizer(texts, truncation=True, padding="longest")`` (special tokens
  added: Gemma's BOS; truncated on the right to the tokenizer's ``model_max_length``).
* ``pair_judge.py:93-95``: softmax over the two classes; the score kept is class ``flip`` of each row,
  so **class 0 = the first response (response0) is better**. Training agrees: ``lms/utils.py:110-120``
  labels (chosen, rejected) as 0 and (rejected, chosen) as 1.
* What the judge is handed: ``lms/trainers/extragradient_trainer.py:385-456`` (``_compute_prefs``)
  decodes each response and ``.strip()``s it (:408-431), and — the prompts being chat messages
  (``"raw"`` :627; ``lms/utils.py:435-451``) — renders the prompt and each response (:435-449) through TRL's
  ``SIMPLE_CHAT_TEMPLATE`` (``trl/trainer/utils.py:994`` at v0.13.0) with a plain Jinja environment:
  prompt → ``"User: {prompt}\\n\\n"``, response → ``"Assistant: {response}\\n\\n"``
  (:func:`egpo_query` reproduces this). Note the classifier was *trained* on the raw strings
  (``utils.py:110-120``), and the authors' win-rate evaluation (``lms/test.py:235-241``) also
  passes raw strings (the user message's content and the responses as generated). This judge
  reproduces the training-time EGPO query; ``PairClassifierJudge(roles=False)`` gives the raw one
  (no config key selects it yet, so an eval judge copied from ``judge:`` uses the trainer's format).

Here: P(a ≻ b) for each query is the softmax weight of class 0 of (a, b), or, when the query is
flipped, of class 1 of (b, a). The flip of each query is a seeded pseudo-random bit of
(``ctx.seed``, prompt, a, b) (:func:`flip_of`): reproducible, and independent of batch size, of how a
caller splits its calls and of judge sharding. ``compare`` asks each pair ONCE (one random order, as
the authors do), so a non-symmetric classifier's position bias shows up as noise, not as a bias
between a and b; ``judges.base.preference_matrices`` asks both ordered pairs and averages them.

Batching: the distinct texts of a call, sorted by length, right-padded (as the authors) with the
model config's pad id so HF's last-non-pad-token pooling finds each row's last real token; rows are
independent, so results do not depend on ``batch_size`` beyond float rounding. Weights in the
checkpoint's dtype on a GPU (bf16 for the authors'), fp32 on the CPU; softmax in float64 from fp32
logits. The judge never abstains.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from judges.pair_pm import check_local_model, load_model, local_model_budget, release
from judges.spec import JudgeContext, JudgeSpec, actor_device
from judges.sizing import checkpoint_label

# TRL v0.13.0 trl/trainer/judges.py:35-57 (DEFAULT_PAIRWISE_SYSTEM_PROMPT up to "## Task"), after str.format.
QUERY_TEMPLATE = '''I require a leaderboard for various large language models. I'll provide you with prompts given to \
these models and their corresponding outputs. Your task is to assess these responses, and select the model that \
produces the best output from a human perspective.

## Instruction

{{
    "instruction": """{prompt}""",
}}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a \
unique model identifier.

{{
    {{
        "model_identifier": "0",
        "output": """{response0}"""
    }},
    {{
        "model_identifier": "1",
        "output": """{response1}"""
    }}
}}

'''
FIRST_BETTER = 0   # class index meaning "response0 (the first) is better" (pair_judge.py:95, utils.py:114)


def egpo_query(prompt: str, first: str, second: str, roles: bool = True) -> str:
    """The classifier's input text with `first` as model "0": as EGPO's trainer builds it (`roles`,
    SIMPLE_CHAT_TEMPLATE-rendered, responses stripped), or with the raw strings (``roles=False``: the
    classifier's training format, utils.py:110-120, and the authors' evaluation, lms/test.py:235-241)."""
    if not roles:
        return QUERY_TEMPLATE.format(prompt=prompt, response0=first, response1=second)
    return QUERY_TEMPLATE.format(prompt=f"User: {prompt}\n\n", response0=f"Assistant: {first.strip()}\n\n",
                                 response1=f"Assistant: {second.strip()}\n\n")


def flip_of(seed: int, prompt: str, a: str, b: str) -> bool:
    """Whether the query (prompt, a, b) is asked as (b, a): a seeded fair coin keyed on the content."""
    h = hashlib.sha256("\x1f".join(("pair_classifier", str(seed), prompt, a, b)).encode()).digest()
    return bool(h[0] & 1)


def _softmax2(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class PairClassifierJudge:
    """A 2-class pairwise sequence classifier, each query randomly order-flipped (see the module doc)."""

    name = "pair_classifier"
    order_symmetric = False   # one random order per query: position bias becomes noise (module doc)
    both_orders = False
    independent_pairs = True

    def __init__(self, path: str, *, device: str = "cpu", batch_size: int = 8, seed: int = 0,
                 shuffle_order: bool = True, roles: bool = True):
        self.device, self.batch_size = device, max(1, int(batch_size))
        self.seed, self.shuffle_order, self.roles = int(seed), shuffle_order, roles
        self.model, self.tok = load_model(path, device, "AutoModelForSequenceClassification")
        if self.model.config.num_labels != 2:
            raise ValueError(f"pair_classifier judge: {path} has {self.model.config.num_labels} labels, not 2")
        if self.tok.pad_token is None:                         # pair_judge.py:33-34
            self.tok.pad_token = self.tok.eos_token
        cfg = self.model.config.get_text_config()
        if cfg.pad_token_id is None:                           # HF pools at the last non-pad token
            cfg.pad_token_id = self.tok.pad_token_id
        self.pad_id = cfg.pad_token_id
        limit = self.tok.model_max_length                      # truncation=True: the tokenizer's own limit
        self.max_length = int(limit) if limit and limit < 10 ** 7 else None
        self.queries = 0
        self.flipped = 0

    def class_probs(self, texts: Sequence[str]) -> np.ndarray:
        """[N, 2] softmax over the classifier's two classes for each formatted text."""
        import torch

        uniq = list(dict.fromkeys(texts))
        enc = self.tok(uniq, truncation=self.max_length is not None, max_length=self.max_length)["input_ids"]
        probs = np.zeros((len(uniq), 2))
        order = sorted(range(len(enc)), key=lambda n: -len(enc[n]))
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                rows = order[s:s + self.batch_size]
                width = max(len(enc[n]) for n in rows)
                ids = torch.tensor([enc[n] + [self.pad_id] * (width - len(enc[n])) for n in rows], device=self.device)
                mask = torch.tensor([[1] * len(enc[n]) + [0] * (width - len(enc[n])) for n in rows],
                                    device=self.device)
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy()
                probs[rows] = _softmax2(logits)
        self.queries += len(uniq)
        got = {t: probs[i] for i, t in enumerate(uniq)}
        return np.stack([got[t] for t in texts]) if len(texts) else np.zeros((0, 2))

    def flips(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        if not self.shuffle_order:
            return np.zeros(len(prompts), dtype=bool)
        return np.array([flip_of(self.seed, p, x, y) for p, x, y in zip(prompts, a, b)], dtype=bool)

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """P(a ≻ b): class 0 of (a, b), or class 1 of (b, a) where the query is flipped."""
        if len(prompts) == 0:
            return np.zeros(0)
        flip = self.flips(prompts, a, b)
        texts = [egpo_query(p, *((y, x) if f else (x, y)), roles=self.roles) for p, x, y, f in zip(prompts, a, b, flip)]
        probs = self.class_probs(texts)
        self.flipped += int(flip.sum())
        # unflipped: P(first = a better) = class 0; flipped: first = b, so P(a better) = P(second better) = class 1
        return probs[np.arange(len(texts)), np.where(flip, 1 - FIRST_BETTER, FIRST_BETTER)]

    def matrices(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> None:
        return None   # asked by pairs

    def score_groups(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> None:
        return None

    def consistency(self, prompt_ids: Sequence[str], prompts: Sequence[str],
                    responses: Sequence[Sequence[str]]) -> None:
        return None

    def diagnostics(self) -> dict[str, float]:
        return {"model_queries": self.queries, "flipped_queries": self.flipped}

    def close(self) -> None:
        self.model = None
        release()


def build_pair_classifier_judge(cfg, ctx: JudgeContext) -> PairClassifierJudge:
    """judge.model on the judge actor's device; flips seeded by ctx.seed; judge.batch_size rows a pass."""
    return PairClassifierJudge(cfg.model, device=actor_device(ctx), batch_size=cfg.batch_size, seed=ctx.seed)


JUDGE = JudgeSpec(build_pair_classifier_judge, budget=local_model_budget, check=check_local_model,
                  dtype_label=lambda cfg, device, dtype: checkpoint_label(device))
