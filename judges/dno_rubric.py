"""The llm judge's rubric mode (``judge.mode: rubric``): DNO-Prct's absolute 6-point rubric scores
(arXiv 2404.03715v1 §5.1 "Preference Annotation" and Appendix C / Figure 3), asked of an
OpenAI-compatible endpoint (judges/chat_endpoint.py). Built by the llm judge's registry entry
(judges/llm.py); :class:`RubricJudge` documents the procedure.
"""
from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np

RUBRIC_MAX = 6                     # the 6-point additive scale: 0 (no point earned) .. 6
DEFAULT_RUBRIC_TOKENS = 256        # answer budget per candidate (a justification of up to 100 words + its score)

# Figure 3 of the paper (Appendix C, "Batched Prompting"), the annotation prompt sent to GPT-4-Turbo: the
# rubric, the user turn, every candidate side by side, the instructions, and the opening of the expected
# python dictionary. Typographic quotes are straightened and "<totalpoints>" is read as "<total points>"
# (the extracted text lost the space). How the candidates are laid out under "### Candidate Responses:" is
# not printed in the paper: here each is a tagged block, <idX> ... </idX>, X = 1..N in the order shown.
RUBRIC_TEMPLATE = """Review the user's question and the corresponding response using the additive 6-point scoring \
system described below. Points are accumulated based on the satisfaction of each criterion:

1. Give 1 point if the response is formatted as an answer, e.g. does not repeat itself over and over, is not a \
continuation of the question or other random question/answer pairs or examples, etc.
2. Add 1 more point if the response is relevant and provides some information related to the user's inquiry, even \
if it is incomplete or contains some irrelevant content.
3. Add a third point if the response addresses a substantial portion of the user's question without rambling, but \
does not completely resolve the query or provide a direct answer.
4. Award a fourth point if the response answers nearly all the elements of the user's question correctly, in a \
useful and direct way, and is largely devoid of errors, extraneous content, or excess wordiness.
5. Grant a fifth point if the response is entirely correct (without any errors or made-up facts), and directly \
answers all aspects of the user's question in a helpful, well-organized, focused, and succinct style.
6. Bestow a sixth point for a response that is entirely correct *AND* concise, impeccably tailored to the user's \
question, without any unnecessary information or wordiness, reflecting expert knowledge, amounting to a superbly \
high-quality, focused, and insightful answer.

### User: {question}

### Candidate Responses:
{candidates}

### Instructions: After examining the user's instruction and the response:

1. Briefly justify your total score for EACH answer, up to 100 words.
2. score EACH answer using the format: "Score: <total points>"

Remember to assess from the AI Assistant perspective, utilizing web search knowledge as necessary. To evaluate the \
response in alignment with this additive scoring model, we'll systematically attribute points based on the \
outlined criteria. Remember to score EACH candidate answer separately. Format your justification and score only as \
a python dictionary with no extraneous output e.g. {{"id1_justification": "...", "id1_score": 3, \
"id2_justification" : ...}} with "idX" corresponding to the id of the X'th answer. {{"id1_justification" :"""

_RUBRIC_TAG = re.compile(r"<(/?)(id\d+)>", re.IGNORECASE)
_RUBRIC_KEY_IN_TEXT = re.compile(r"\b(id\d+)_(score|justification)\b", re.IGNORECASE)
_QUOTE_CHARS = "\"'\u201c\u201d\u2018\u2019"
# "idN_score": V with optional (straight or typographic) quotes around the key and the value. The value is
# captured with a sign and decimals so that "-1", "4.5" or "10" are seen whole (and refused), never read as 1 / 4 / 1.
_SCORE_ENTRY = re.compile(rf"[{_QUOTE_CHARS}]?\bid(\d+)_score[{_QUOTE_CHARS}]?\s*:\s*[{_QUOTE_CHARS}]?"
                          r"(-?\d+(?:\.\d+)?)(?![\d.])", re.IGNORECASE)
_SCORE_LINE = re.compile(r"score\s*:\s*(-?\d+(?:\.\d+)?)(?![\d.])", re.IGNORECASE)


def _quote_rubric(text: str) -> str:
    """Embedded text cannot open or close a candidate block, start a prompt section or spell a score key."""
    text = _RUBRIC_TAG.sub(lambda m: f"({m.group(1)}{m.group(2)})", text)
    text = _RUBRIC_KEY_IN_TEXT.sub(lambda m: f"{m.group(1)} {m.group(2)}", text)
    return text.replace("###", "##")


def rubric_prompt(question: str, candidates: Sequence[str]) -> str:
    """The Figure 3 prompt for one question and its candidates, shown as id1..idN in the given order."""
    blocks = "\n\n".join(f"<id{i + 1}>\n{_quote_rubric(c)}\n</id{i + 1}>" for i, c in enumerate(candidates))
    return RUBRIC_TEMPLATE.format(question=_quote_rubric(question), candidates=blocks)


def _rubric_value(raw: str) -> float:
    """A whole number of points in [0, RUBRIC_MAX] ("4" or "4.0"), else NaN: points are added one by one."""
    v = float(raw)
    return v if v == int(v) and 0 <= v <= RUBRIC_MAX else float("nan")


def parse_rubric_scores(text: str | None, n: int) -> np.ndarray:
    """Scores of candidates id1..idN from the judge's answer; NaN where there is none. Never 0 for garbage.

    Each ``"idX_score": V`` entry counts (quotes optional, the dictionary may start mid-way, as the
    prompt itself opens it); V must be a whole number of points from 0 to 6. A candidate with no
    entry, an out-of-range or fractional value, or two entries that disagree gets NaN; entries for ids
    outside 1..N are ignored. With one candidate a bare ``Score: V`` (the last one) is accepted too,
    the format the rubric's own instruction 2 names.
    """
    out = np.full(n, np.nan)
    if not text or n <= 0:
        return out
    found: dict[int, set[float]] = {}
    for m in _SCORE_ENTRY.finditer(text):
        k = int(m.group(1))
        if 1 <= k <= n:
            found.setdefault(k, set()).add(_rubric_value(m.group(2)))
    if n == 1 and not found:
        lines = list(_SCORE_LINE.finditer(text))
        if lines:
            found[1] = {_rubric_value(lines[-1].group(1))}
    for k, values in found.items():
        if len(values) == 1:
            out[k - 1] = next(iter(values))       # NaN stays NaN (a refused value)
    return out


def display_order(seed: int, prompt: str, n: int) -> list[int]:
    """The order candidates are shown in: a fixed pseudo-random permutation per (seed, prompt), so no
    response (the teacher's is appended last by the judge stage) always sits in the same slot."""
    import random
    rng = random.Random(int(hashlib.sha256(f"rubric/{seed}/{prompt}".encode()).hexdigest()[:16], 16))
    order = list(range(n))
    rng.shuffle(order)
    return order


class RubricJudge:
    """The llm judge in rubric mode (``judge.mode: rubric``): DNO-Prct's absolute scores.

    Paper (arXiv 2404.03715v1): §5.1 "Preference Annotation" (GPT-4-Turbo labels the 5 policy samples
    and 1 gold sample with an additive scoring framework on a 6-point scale, a minor modification of the
    Self-Rewarding prompt) and Appendix C "Batched Prompting" with Figure 3 (the prompt; all candidates
    are shown side by side in one request and each is scored). So:

    * :meth:`score_groups` (training judgments, via :meth:`matrices`): ONE request per prompt with all
      of its candidates (the K samples and, with data.teacher_column, the teacher's answer), in the order
      :func:`display_order` gives; :func:`parse_rubric_scores` reads ``"idX_score"``. A candidate
      without a usable score is NaN (it abstains; never scored 0).
    * :meth:`score`: each (prompt, response) alone, the same prompt with one candidate. :meth:`compare`
      (evaluation) uses it, so the two policies' answers never share a request and order cannot matter.
    * P(a ≻ b) for the matrix and for compare is derived from the scores: 1 if s_a > s_b, ½ if equal,
      0 if lower, NaN if either is NaN (selfplay.records.score_matrix). The pair rule that needs the
      scores themselves (DNO's) reads them from JudgedPrompt.scores, which the judge stage fills from
      :meth:`score_groups` (answers are memoised, so this costs no second request).

    Endpoint only (``judge.endpoint``): greedy, no log-probs, ``max_tokens`` = judge.max_new_tokens or
    256 per candidate shown.
    """

    name = "llm"
    mode = "rubric"
    order_symmetric = False
    both_orders = True       # compare() scores each response alone: there is no order to average over
    independent_pairs = False   # the training matrix comes from all candidates scored side by side

    def __init__(self, endpoint, *, seed: int = 0, max_tokens: int = 0):
        self.endpoint = endpoint          # .texts(prompts, max_tokens) -> list[str | None]
        self.seed, self.max_tokens = seed, max_tokens
        self._groups: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
        self._single: dict[tuple[str, str], float] = {}
        self.requests = 0                 # annotation requests sent
        self.unparseable = 0              # ... whose answer gave no score at all
        self.responses_scored = 0         # candidates shown
        self.unscored = 0                 # ... left without a score (NaN)
        self._score_sum, self._score_n = 0.0, 0

    def _budget(self, n: int) -> int:
        return self.max_tokens or DEFAULT_RUBRIC_TOKENS * n

    def _ask(self, questions: Sequence[str], shown: Sequence[Sequence[str]]) -> list[np.ndarray]:
        texts = self.endpoint.texts([rubric_prompt(q, c) for q, c in zip(questions, shown)],
                                    [self._budget(len(c)) for c in shown]) if questions else []
        out = [parse_rubric_scores(t, len(c)) for t, c in zip(texts, shown)]
        for s in out:
            self.requests += 1
            self.unparseable += int(bool(len(s)) and bool(np.isnan(s).all()))
            self.responses_scored += len(s)
            self.unscored += int(np.isnan(s).sum())
            ok = s[~np.isnan(s)]
            self._score_sum, self._score_n = self._score_sum + float(ok.sum()), self._score_n + len(ok)
        return out

    def score_groups(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Per prompt, the scores of its candidates, all judged side by side in one request."""
        keys = [(p, tuple(rs)) for p, rs in zip(prompts, responses)]
        todo = [k for k in dict.fromkeys(keys) if k not in self._groups and k[1]]
        orders = [display_order(self.seed, p, len(rs)) for p, rs in todo]
        answers = self._ask([p for p, _ in todo], [[rs[i] for i in o] for (_, rs), o in zip(todo, orders)])
        for k, o, shown_scores in zip(todo, orders, answers):
            s = np.full(len(o), np.nan)
            s[o] = shown_scores                      # shown slot j holds response o[j]
            self._groups[k] = s
        return [self._groups[k].copy() if k[1] else np.zeros(0) for k in keys]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Each (prompt, response) scored alone; identical pairs are asked once."""
        keys = list(zip(prompts, responses))
        todo = [k for k in dict.fromkeys(keys) if k not in self._single]
        for k, s in zip(todo, self._ask([p for p, _ in todo], [[r] for _, r in todo])):
            self._single[k] = float(s[0])
        return np.array([self._single[k] for k in keys], dtype=np.float64)

    def matrices(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray]:
        from selfplay.records import score_matrix
        return [score_matrix(s) for s in self.score_groups(prompts, responses)]

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        from judges.base import compare_by_scores
        return compare_by_scores(self.score, prompts, a, b)

    def consistency(self, prompt_ids: Sequence[str], prompts: Sequence[str],
                    responses: Sequence[Sequence[str]]) -> None:
        return None

    def diagnostics(self) -> dict[str, float]:
        return {
            "mode": "rubric",
            "requests": self.requests,
            "unparseable": self.unparseable,
            "unparseable_rate": self.unparseable / self.requests if self.requests else float("nan"),
            "responses_scored": self.responses_scored,
            "unscored_responses": self.unscored,
            "mean_score": self._score_sum / self._score_n if self._score_n else float("nan"),
        }

    def close(self) -> None:
        self.endpoint.close()
