"""CREAM judge (Wang et al., arXiv 2410.12735; official code Raibows/CREAM): a self-reward with a
consistency rate that softens the DPO label.

``judge.name: cream`` with ``algorithm: dpo`` is CREAM: this judge ranks the K responses by the
policy's own implicit reward and gives each prompt a consistency rate C; the DPO pair rule takes
argmax / argmin of that reward; ``selfplay/algorithms/dpo.py`` trains with label smoothing
1 − C·(1 − loss.label_smoothing), i.e. exactly CREAM's loss C·(−log σ(u)) + (1 − C)·(−log σ(−u))
when loss.label_smoothing = 0 (research notes algorithms.md §8).

Reward (the official rewarding.py; no β, summed over the response tokens, end-of-turn included):

    r_t(y) = log π_t(y|x) − log π_ref(y|x)            π_t = ctx.policy, π_ref = ctx.reference_policy

and, when there is no distinct reference (ctx.reference_policy empty or the same checkpoint as
the model being scored), the length-normalised log-likelihood (1/|y|)·log π(y|x). Models are
loaded one at a time and freed (selfplay.logprobs computes the sequence log-probs).

Matrix: M_ij = σ(r_i − r_j), diagonal ½, so best / worst by row-mean win rate are argmax / argmin
of r_t, as CREAM picks them.

Consistency: the K responses are ranked by r_t and again by the previous model's reward
(π_{t−1} = ctx.previous_policy, same reference rule: log π_{t−1} − log π_ref, or length-normalised
log-likelihood if π_{t−1} is the reference or there is none); ranks are ordinal (ties broken by
position, like scipy's rankdata(method="ordinal")); C = (τ + 1)/2 with τ Kendall's tau between
the two rank vectors. Round 1 compares the SFT model M1 (ctx.policy) with the base M0: the round
driver passes M0 as both ctx.previous_policy and ctx.reference_policy (CREAM's README, step 2), so
M1's reward is log π_M1 − log π_M0 and M0's is its length-normalised log-likelihood. The config
refuses CREAM without an SFT stage, where M1 would be M0. Only a context naming no distinct
previous model (ctx.previous_policy empty or the same checkpoint as ctx.policy) gives C = 1 for
every prompt, i.e. plain DPO. ``judge.consistency``:

* ``per_prompt`` (CREAM's consistency_dyn): each prompt its own C, keyed by prompt id. A prompt
  whose C cannot be computed (fewer than 2 responses, a non-finite reward) gets the dataset mean,
  as CREAM's data loader fills missing rates. (The official cal_consistency.py zips the set of
  prompt keys with a list of rates that skips such prompts, so later prompts get their
  neighbours' rates; here every rate is computed and stored under its own id.)
* ``mean`` (consistency_avg): the dataset mean C̄ for every prompt.

:meth:`CreamJudge.consistency` reuses the scores cached by the last :meth:`CreamJudge.matrices`
call; it never runs a model.
"""
from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from judges.spec import JudgeContext, JudgeSpec, actor_device
from judges.sizing import policy_label, the_policy


def ordinal_ranks(scores: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties broken by position (the earlier one ranks lower), like rankdata('ordinal')."""
    s = np.asarray(scores, dtype=np.float64)
    ranks = np.empty(len(s), dtype=np.int64)
    ranks[np.argsort(s, kind="stable")] = np.arange(1, len(s) + 1)
    return ranks


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: Σ sign(x_i − x_j)·sign(y_i − y_j) / √(untied pairs in x · untied pairs in y).
    Without ties (ordinal ranks) that is tau-a, (concordant − discordant)/(n(n−1)/2). NaN if n < 2."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 2 or len(y) != n:
        return float("nan")
    i, j = np.triu_indices(n, 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    nx, ny = int((dx != 0).sum()), int((dy != 0).sum())
    if nx == 0 or ny == 0:
        return float("nan")
    return float((dx * dy).sum() / math.sqrt(nx * ny))


def consistency_rate(current: Sequence[float], previous: Sequence[float]) -> float | None:
    """C = (τ + 1)/2 between the ordinal rankings of two reward vectors; None if undefined."""
    a, b = np.asarray(current, dtype=np.float64), np.asarray(previous, dtype=np.float64)
    if len(a) < 2 or len(a) != len(b) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    tau = kendall_tau(ordinal_ranks(a), ordinal_ranks(b))
    return None if math.isnan(tau) else (tau + 1.0) / 2.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -500.0, 500.0)))


def _same(a: str, b: str) -> bool:
    return bool(a) and bool(b) and (a == b or Path(a).resolve() == Path(b).resolve())


class CreamJudge:
    name = "cream"
    order_symmetric = False      # compare is σ(r_a − r_b); asked both orders as it always was
    both_orders = False
    independent_pairs = False    # the matrix (and C) come from the rewards of the whole set: asked whole

    def __init__(self, policy: str, previous: str = "", reference: str = "", *, mode: str = "per_prompt",
                 device: str = "cpu", batch_size: int = 32, max_length: int = 1024):
        if mode not in ("per_prompt", "mean"):
            raise ValueError(f"judge.consistency: per_prompt or mean, got {mode!r}")
        if not policy:
            raise ValueError("the cream judge scores with the round's policy, but the judge context names none")
        self.policy, self.reference, self.mode = policy, reference, mode
        self.previous = previous if previous and not _same(previous, policy) else ""   # "" = none: C = 1
        self.device, self.batch_size, self.max_length = device, batch_size, max_length
        self._scores: dict[tuple[str, tuple[str, ...]], tuple[np.ndarray, np.ndarray | None]] = {}
        self.models_loaded = 0
        self.prompts_scored = 0
        self.consistency_computed = 0
        self.consistency_filled = 0      # prompts given the dataset mean (no computable C)

    # -- rewards ----------------------------------------------------------------------------------

    def reward_kind(self, model: str) -> str:
        return "logratio" if self.reference and not _same(self.reference, model) else "length_normalised_ll"

    def _logprobs(self, path: str, prompts: list[str], responses: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Summed log π(y|x) and the number of scored response tokens, one model in memory."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from selfplay.logprobs import batched_logprobs, encode_pairs

        tok = AutoTokenizer.from_pretrained(path)
        dtype = torch.float32 if str(self.device) == "cpu" else "auto"   # GPU: the checkpoint's own dtype
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.models_loaded += 1
        try:
            total = batched_logprobs(model, tok, prompts, responses, batch_size=self.batch_size,
                                     max_length=self.max_length).double().numpy()
        finally:
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        counts = np.concatenate([
            encode_pairs(tok, prompts[i:i + self.batch_size], responses[i:i + self.batch_size],
                         self.max_length)[2][:, 1:].sum(-1).double().numpy()
            for i in range(0, len(prompts), self.batch_size)]) if prompts else np.zeros(0)
        return total, counts

    def rewards(self, model: str, prompts: list[str], responses: list[str],
                cache: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
        """r(y) under `model`: log-ratio to the reference, or length-normalised log-likelihood."""
        cache = {} if cache is None else cache
        for path in (model, self.reference) if self.reward_kind(model) == "logratio" else (model,):
            if path not in cache:
                cache[path] = self._logprobs(path, prompts, responses)
        total, counts = cache[model]
        if self.reward_kind(model) == "logratio":
            return total - cache[self.reference][0]
        return total / np.maximum(counts, 1.0)

    # -- the judge interface ----------------------------------------------------------------------

    def matrices(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray]:
        flat_p = [p for p, rs in zip(prompts, responses) for _ in rs]
        flat_r = [r for rs in responses for r in rs]
        cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        now = self.rewards(self.policy, flat_p, flat_r, cache)
        prev = self.rewards(self.previous, flat_p, flat_r, cache) if self.previous else None
        out, i = [], 0
        for p, rs in zip(prompts, responses):
            r = now[i:i + len(rs)]
            self._scores[(p, tuple(rs))] = (r.copy(), None if prev is None else prev[i:i + len(rs)].copy())
            out.append(_sigmoid(r[:, None] - r[None, :]))
            i += len(rs)
        self.prompts_scored += len(responses)
        return out

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        n = len(prompts)
        if n == 0:
            return np.zeros(0)
        r = self.rewards(self.policy, list(prompts) * 2, list(a) + list(b))
        return _sigmoid(r[:n] - r[n:])

    def consistency(self, prompt_ids: Sequence[str], prompts: Sequence[str],
                    responses: Sequence[Sequence[str]]) -> dict[str, float]:
        """C per prompt id from the rewards cached by the last matrices() on these prompts."""
        if not self.previous:
            return {pid: 1.0 for pid in prompt_ids}
        rates: dict[str, float | None] = {}
        for pid, p, rs in zip(prompt_ids, prompts, responses):
            hit = self._scores.get((p, tuple(rs)))
            if hit is None:
                raise ValueError(f"consistency: prompt {pid!r} was not scored by matrices() first")
            rates[pid] = consistency_rate(hit[0], hit[1])
        known = [c for c in rates.values() if c is not None]
        mean = float(np.mean(known)) if known else 1.0
        self.consistency_computed += len(known)
        self.consistency_filled += len(rates) - len(known)
        if self.mode == "mean":
            return {pid: mean for pid in rates}
        return {pid: (mean if c is None else float(c)) for pid, c in rates.items()}

    def score_groups(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> None:
        return None   # implicit rewards rank within the round; DNO's pair rule is not fed from them

    def diagnostics(self) -> dict:
        return {
            "reward": self.reward_kind(self.policy),
            "previous_reward": self.reward_kind(self.previous) if self.previous else "none (no previous model: C = 1)",
            "consistency_mode": self.mode,
            "models_loaded": self.models_loaded,
            "consistency_computed": self.consistency_computed,
            "consistency_filled_with_mean": self.consistency_filled,
        }


    def close(self) -> None:
        pass   # each model is freed as soon as its rewards are computed (_logprobs)


def build_cream_judge(cfg, ctx: JudgeContext) -> CreamJudge:
    """The policies' implicit rewards on ctx.device; judge.consistency was checked by the config."""
    return CreamJudge(ctx.policy, ctx.previous_policy, ctx.reference_policy, mode=cfg.consistency,
                      device=actor_device(ctx), batch_size=cfg.batch_size)


def _check(cfg) -> Iterator[str]:
    if cfg.consistency == "mean" and cfg.num_actors > 1:
        yield "num_actors: the cream judge's consistency=mean spans all prompts; use one judge actor or per_prompt"


def _needs_sft(cfg, where: str) -> Iterator[str]:
    """Training with CREAM needs an SFT model beside the base (the evaluation compares, it has no C)."""
    if where == "judge" and not cfg.init.sft_data:
        yield ("name=cream: CREAM's consistency compares the policy's ranking with the previous model's, and in "
               "round 1 that needs an SFT model M1 beside the base M0 (CREAM starts from SFT; without it the two "
               "models are the same, C = 1 everywhere and round 1 is plain unregularised self-rewarding). Set "
               "init.sft_data to a prompt/response dataset (the arena has builtin:arena/sft)")


JUDGE = JudgeSpec(build_cream_judge, check=_check, cross_check=_needs_sft,
                  budget=lambda cfg, policy, device, dtype: the_policy(policy, device, dtype),
                  dtype_label=lambda cfg, device, dtype: policy_label(device, dtype))
