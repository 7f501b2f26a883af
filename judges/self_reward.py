"""Self-Rewarding judge (Yuan et al., arXiv 2401.10020): the round's own policy scores its responses.

Prompt: the paper's additive 5-point rubric (its Figure 2, also in the CREAM and lucidrains code;
research notes algorithms.md §7.2): ``User: {question}`` + ``<response>{response}</response>``, a
justification of at most 100 words, then ``Score: <total points>``. The judge model is
``ctx.policy``, the policy that wrote the responses (π_t), so the model judges itself.

Two scoring modes (``judge.score_mode``):

* ``sample`` (default, the paper's procedure): each response is judged ``judge.samples`` times
  (default 3) by sampling the judge text with the project's generation backend
  (``judge.backend``; temperature ``judge.temperature`` 0.7, top-p ``judge.top_p`` 0.9, up to
  ``judge.max_new_tokens`` tokens, default 256), one seed per (ctx.seed, prompt, response), and the
  parsed scores are averaged. A sample whose ``Score: N`` is missing, not a number or outside 0–5
  is a parse failure: counted, left out of the mean, never scored 0. A response whose samples all
  fail has score NaN (its comparisons abstain).
* ``logprobs``: the assistant turn is prefilled with ``Score:`` right away (no justification) and
  the score is the expected value of the digit 0..5 under the next-token distribution restricted
  to those digits. Deterministic (one pass per response, ``samples`` is not used), always
  parseable: this is what lets a tiny model that cannot write the rubric's format run a round.

Matrix: P_ij = 1 if s_i > s_j, ½ if equal, 0 if lower, NaN if either score is NaN. The pair rule
(sppo.best_worst_pairs: best and worst by row-mean win rate) then picks the highest and the
lowest score, and drops prompts whose scores are all equal, as the paper does.
"""
from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np

from judges.spec import JudgeContext, JudgeSpec, actor_device
from judges.sizing import policy_label, the_policy
from selfplay.records import score_matrix  # noqa: F401  (scores → P matrix; judges and DNO share it)

RUBRIC = """Review the user's question and the corresponding response using the additive 5-point scoring system \
described below. Points are accumulated based on the satisfaction of each criterion:

- Add 1 point if the response is relevant and provides some information related to the user's inquiry, even if it \
is incomplete or contains some irrelevant content.
- Add another point if the response addresses a substantial portion of the user's question, but does not \
completely resolve the query or provide a direct answer.
- Award a third point if the response answers the basic elements of the user's question in a useful way, \
regardless of whether it seems to have been written by an AI Assistant or if it has elements typically found in \
blogs or search results.
- Grant a fourth point if the response is clearly written from an AI Assistant's perspective, addressing the \
user's question directly and comprehensively, and is well-organized and helpful, even if there is slight room for \
improvement in clarity, conciseness or focus.
- Bestow a fifth point for a response that is impeccably tailored to the user's question by an AI Assistant, \
without extraneous information, reflecting expert knowledge, and demonstrating a high-quality, engaging, and \
insightful answer.

User: {question}

<response>{response}</response>

After examining the user's instruction and the response:

- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Score: <total points>"

Remember to assess from the AI Assistant perspective, utilizing web search knowledge as necessary. To evaluate the \
response in alignment with this additive scoring model, we'll systematically attribute points based on the outlined \
criteria."""

DIGITS = tuple(str(d) for d in range(6))
DEFAULT_SAMPLE_TOKENS = 256
_MARK = re.compile(r"score\s*:", re.IGNORECASE)
_NUMBER = re.compile(r"\s*(?:\*\*)?\s*(\d+(?:\.\d+)?)")
_OUT_OF_5 = re.compile(r"\s*/\s*5(?![\d.])")
_BAD_TAIL = re.compile(r"\s*/|[%\w-]")


def rubric_prompt(question: str, response: str) -> str:
    return RUBRIC.format(question=question, response=response)


def parse_score(text: str) -> float | None:
    """The number after the LAST ``Score:``, integer or decimal, in [0, 5] (``4/5`` accepted);
    anything else (missing, words, negative, ``4/10``, ``4-5``, ``7``) is None."""
    if not text:
        return None
    marks = list(_MARK.finditer(text))
    if not marks:
        return None
    rest = text[marks[-1].end():]
    m = _NUMBER.match(rest)
    if m is None:
        return None
    tail = rest[m.end():]
    if not _OUT_OF_5.match(tail) and _BAD_TAIL.match(tail):
        return None
    value = float(m.group(1))
    return value if 0.0 <= value <= 5.0 else None


def response_seed(seed: int, prompt: str, response: str) -> int:
    """A 31-bit seed per (ctx.seed, prompt, response): the same response always gets the same samples."""
    h = hashlib.sha256("\x1f".join(("self_reward", str(seed), prompt, response)).encode()).hexdigest()
    return int(h[:8], 16) & 0x7FFFFFFF


class SelfRewardJudge:
    name = "self_reward"
    order_symmetric = False      # compare scores each response alone, but is asked both orders as it always was
    both_orders = False
    independent_pairs = False    # the matrix comes from one score per response: asked whole

    def __init__(self, policy: str, *, mode: str = "sample", samples: int = 3, backend: str = "hf",
                 device: str = "cpu", batch_size: int = 32, seed: int = 0, temperature: float = 0.7,
                 top_p: float = 0.9, max_new_tokens: int = DEFAULT_SAMPLE_TOKENS):
        if mode not in ("sample", "logprobs"):
            raise ValueError(f"judge.score_mode: sample or logprobs, got {mode!r}")
        self.policy, self.mode, self.samples, self.backend_name = policy, mode, samples, backend
        self.device, self.batch_size, self.seed = device, batch_size, seed
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self._model = None                     # the generation backend or option scorer, built on first use
        self.responses_scored = 0
        self.samples_drawn = 0
        self.parse_failures = 0
        self.unscored = 0                      # responses whose every sample failed (score NaN)
        self._score_sum, self._score_n = 0.0, 0

    # -- scoring --------------------------------------------------------------------------------

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """One averaged rubric score per (prompt, response); identical pairs are scored once."""
        keys = list(dict.fromkeys(zip(prompts, responses)))
        if not keys:
            return np.zeros(0)
        values = self._score_sampled(keys) if self.mode == "sample" else self._score_logprobs(keys)
        by_key = dict(zip(keys, values))
        self.responses_scored += len(keys)
        self.unscored += int(np.isnan(values).sum())
        ok = values[~np.isnan(values)]
        self._score_sum, self._score_n = self._score_sum + float(ok.sum()), self._score_n + len(ok)
        return np.array([by_key[k] for k in zip(prompts, responses)], dtype=np.float64)

    def _score_sampled(self, keys: list[tuple[str, str]]) -> np.ndarray:
        from selfplay.generation import Request, SamplingSpec, build_backend

        if self._model is None:
            self._model = build_backend(self.backend_name, self.policy, batch_size=self.batch_size,
                                        device=self.device)
        spec = SamplingSpec(n=self.samples, temperature=self.temperature, top_p=self.top_p,
                            max_new_tokens=self.max_new_tokens)
        reqs = [Request(rubric_prompt(p, r), response_seed(self.seed, p, r)) for p, r in keys]
        outs = self._model.generate(reqs, spec)
        values = np.full(len(keys), np.nan)
        for i, completions in enumerate(outs):
            parsed = [parse_score(c.text) for c in completions]
            good = [v for v in parsed if v is not None]
            self.samples_drawn += len(parsed)
            self.parse_failures += len(parsed) - len(good)
            if good:
                values[i] = float(np.mean(good))
        return values

    def _score_logprobs(self, keys: list[tuple[str, str]]) -> np.ndarray:
        from judges.scoring import _clean_next_tokens, build_scorer, chat_text

        if self._model is None:
            self._model = build_scorer(self.backend_name, self.policy, device=self.device,
                                       batch_size=self.batch_size)
        tok = self._model.tok
        texts = [rubric_prompt(p, r) for p, r in keys]
        # "Score: " + "4" is one clean next token for most BPE tokenizers (digits split off);
        # "Score:" + " 4" for others; failing both, each digit is scored in full after the prefix.
        prefix, options = "Score: ", DIGITS
        probe = chat_text(tok, texts[0], "")
        if _clean_next_tokens(tok, probe + prefix, DIGITS) is None and \
                _clean_next_tokens(tok, probe + "Score:", tuple(" " + d for d in DIGITS)) is not None:
            prefix, options = "Score:", tuple(" " + d for d in DIGITS)
        lp = self._model.option_logprobs([chat_text(tok, t, prefix) for t in texts], options)
        values = np.full(len(keys), np.nan)
        for i, row in enumerate(lp):
            self.samples_drawn += 1
            finite = np.isfinite(row)
            if not finite.any():
                self.parse_failures += 1
                continue
            w = np.exp(row[finite] - row[finite].max())
            values[i] = float(np.dot(w / w.sum(), np.arange(6, dtype=np.float64)[finite]))
        return values

    # -- the judge interface --------------------------------------------------------------------

    def matrices(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray]:
        flat_p = [p for p, rs in zip(prompts, responses) for _ in rs]
        flat_r = [r for rs in responses for r in rs]
        s = self.score(flat_p, flat_r)
        out, i = [], 0
        for rs in responses:
            out.append(score_matrix(s[i:i + len(rs)]))
            i += len(rs)
        return out

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        from judges.base import compare_by_scores
        return compare_by_scores(self.score, prompts, a, b)

    def score_groups(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> None:
        return None   # its scores rank within the round; DNO's pair rule is not fed from them

    def consistency(self, prompt_ids: Sequence[str], prompts: Sequence[str],
                    responses: Sequence[Sequence[str]]) -> None:
        return None

    def diagnostics(self) -> dict[str, float]:
        return {
            "score_mode": self.mode,
            "responses_scored": self.responses_scored,
            "samples": self.samples_drawn,
            "parse_failures": self.parse_failures,
            "parse_failure_rate": self.parse_failures / self.samples_drawn if self.samples_drawn else float("nan"),
            "unscored_responses": self.unscored,
            "mean_score": self._score_sum / self._score_n if self._score_n else float("nan"),
        }

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None


def build_self_reward_judge(cfg, ctx: JudgeContext) -> SelfRewardJudge:
    """The policy judging itself on ctx.device; the config's values were checked by
    judges.registry.check_judge_config."""
    if not ctx.policy:
        raise ValueError("the self_reward judge scores with the round's policy, but the judge context names none")
    return SelfRewardJudge(ctx.policy, mode=cfg.score_mode, samples=cfg.samples, backend=cfg.backend,
                           device=actor_device(ctx), batch_size=cfg.batch_size,
                           seed=ctx.seed, temperature=cfg.temperature, top_p=cfg.top_p,
                           max_new_tokens=cfg.max_new_tokens or DEFAULT_SAMPLE_TOKENS)


JUDGE = JudgeSpec(build_self_reward_judge,
                  budget=lambda cfg, policy, device, dtype: the_policy(policy, device, dtype),
                  dtype_label=lambda cfg, device, dtype: policy_label(device, dtype))
