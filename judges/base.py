"""The one judge interface: P(a ≻ b | prompt) as a probability, NaN meaning "abstained".

Every judge is a plain object that declares the whole :class:`Judge` protocol: its name, three flags
saying how it may be asked, a batched ``compare``, and the optional capabilities, each either
implemented or answered with its documented "none" value, so generic code asks and never probes.
The judge stage asks it the comparisons the round's algorithm declares (:func:`judge_comparisons`:
the full matrix, INPO's bracket, EGPO's pairs against y″), each in one batched call, in the orders
the judge needs (:func:`ask_pairs`), or, for a judge whose answers are not independent pairs, its
whole ``matrices``.

Judges never see Ray: ``pipelines/actors.py`` wraps them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np


class Judge(Protocol):
    """Everything generic code may ask a judge. A judge without a capability still declares it and
    answers the "none" value named here (no base class: each judge spells out its own)."""

    name: str
    # compare(a, b) = 1 − compare(b, a) exactly in meaning (the oracle): one order per pair is asked.
    order_symmetric: bool
    # compare already asks both orders and averages them (LLM, pair-PM judges): it is called once per
    # pair and counted as two queries.
    both_orders: bool
    # Each pair's answer depends on the prompt and the two responses only, so the judge stage may ask
    # just the pairs an algorithm reads; False: it asks ``matrices`` for every prompt's whole set.
    independent_pairs: bool

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """P(a[i] ≻ b[i] | prompts[i]) for each i, shape [N]; NaN where the judge abstained."""
        ...

    def matrices(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray] | None:
        """Per prompt the K×K matrix P(r_i ≻ r_j) from the whole set of responses (PairRM's aggregate,
        the score-based judges). None: the judge is asked by pairs only (independent_pairs)."""
        ...

    def score_groups(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray] | None:
        """Per prompt an absolute score per response (stored as JudgedPrompt.scores; DNO's pair rule
        reads them). None: the judge gives no absolute scores."""
        ...

    def consistency(self, prompt_ids: Sequence[str], prompts: Sequence[str],
                    responses: Sequence[Sequence[str]]) -> dict[str, float] | None:
        """A consistency rate C per prompt id for the prompts just judged (CREAM). None: no rate (C = 1)."""
        ...

    def diagnostics(self) -> dict:
        """The judge's own counters (parse failures, order disagreements, ...). {}: none."""
        ...

    def close(self) -> None:
        """Free what the judge holds (models, engines). Nothing to free: does nothing."""
        ...


@dataclass
class JudgeStats:
    """Diagnostics one judging stage reports (manifest and metrics.json)."""

    pairs: int = 0                 # ordered pairs asked (one pair in both orders: two)
    calls: int = 0                 # batched judge calls
    seconds: float = 0.0
    abstained: int = 0             # NaN answers
    both_orders: int = 0           # unordered pairs asked in both orders
    order_disagreements: int = 0   # ... whose two answers picked different winners
    winner_lengths: list[int] = field(default_factory=list)
    loser_lengths: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        n = max(self.pairs, 1)
        return {
            "pairs": self.pairs,
            "judge_calls": self.calls,
            "pairs_per_s": self.pairs / self.seconds if self.seconds > 0 else float("nan"),
            "abstain_rate": self.abstained / n,
            "position_disagreement_rate": (
                self.order_disagreements / self.both_orders if self.both_orders else float("nan")
            ),
            "mean_winner_chars": float(np.mean(self.winner_lengths)) if self.winner_lengths else float("nan"),
            "mean_loser_chars": float(np.mean(self.loser_lengths)) if self.loser_lengths else float("nan"),
        }


def preference_matrices(
    judge: Judge, prompts: Sequence[str], responses: Sequence[Sequence[str]], stats: JudgeStats | None = None
) -> list[np.ndarray]:
    """Full K×K matrices M[i, j] = P(r_i ≻ r_j), every unordered pair in one batched call; the diagonal is ½."""
    from selfplay.algorithms import all_pairs
    return judge_comparisons(judge, prompts, responses, all_pairs, stats)


def judge_comparisons(judge: Judge, prompts: Sequence[str], responses: Sequence[Sequence[str]], next_pairs,
                      stats: JudgeStats | None = None) -> list[np.ndarray]:
    """Per prompt the K×K matrix of the comparisons `next_pairs(m, asked)` asks for (an algorithm's
    Comparisons.next_pairs), NaN where never asked or abstained, M_ji = 1 − M_ij, diagonal ½.

    Each round collects every prompt's next pairs and asks them in ONE batched call, then asks the plan
    again with the answers filled in, until no prompt wants more: an adaptive plan keeps its batching.
    A judge whose answers are not independent pairs gives its whole matrix instead."""
    stats = stats if stats is not None else JudgeStats()
    if not judge.independent_pairs:
        return _native_matrices(judge, prompts, responses, stats)
    mats = [_unasked(len(rs)) for rs in responses]
    asked = [np.eye(len(rs), dtype=bool) for rs in responses]
    while todo := _next_round(next_pairs, mats, asked):
        probs = ask_pairs(judge, [prompts[n] for n, _, _ in todo], [responses[n][i] for n, i, _ in todo],
                          [responses[n][j] for n, _, j in todo], stats)
        for (n, i, j), p in zip(todo, probs):
            mats[n][i, j], mats[n][j, i] = p, 1.0 - p      # NaN stays NaN
            asked[n][i, j] = asked[n][j, i] = True
    _record_lengths(stats, mats, responses)
    return mats


def _unasked(k: int) -> np.ndarray:
    m = np.full((k, k), np.nan)
    np.fill_diagonal(m, 0.5)
    return m


def _next_round(next_pairs, mats: list[np.ndarray], asked: list[np.ndarray]) -> list[tuple[int, int, int]]:
    """(prompt, i, j), i < j, for every pair the plan wants now. Always asked as (lower, higher) index, so
    M_ij (i < j) is the same float whichever plan asked it; a plan asking a pair twice would never end."""
    todo = []
    for n, (m, a) in enumerate(zip(mats, asked)):
        for i, j in next_pairs(m, a):
            if a[i, j]:
                raise ValueError(f"comparison plan asked pair ({i}, {j}) again (or a response against itself)")
            todo.append((n, min(i, j), max(i, j)))
    return todo


def _native_matrices(judge: Judge, prompts, responses, stats: JudgeStats) -> list[np.ndarray]:
    t0 = time.perf_counter()
    out = judge.matrices(prompts, responses)
    stats.seconds += time.perf_counter() - t0
    stats.calls += 1
    stats.pairs += sum(len(r) * (len(r) - 1) for r in responses)
    stats.abstained += int(sum(np.isnan(m).sum() for m in out))
    _record_lengths(stats, out, responses)
    return out


def ask_pairs(judge: Judge, prompts: Sequence[str], a: Sequence[str], b: Sequence[str],
              stats: JudgeStats | None = None) -> np.ndarray:
    """P(a_i ≻ b_i) for each pair in ONE batched judge call, in the orders the judge needs: once for an
    order-symmetric judge or one whose compare asks both orders itself; otherwise (a, b) and (b, a) in
    the same call, averaged over the non-NaN answers, so position bias cancels."""
    stats = stats if stats is not None else JudgeStats()
    n = len(prompts)
    single = judge.order_symmetric
    t0 = time.perf_counter()
    if single or judge.both_orders:
        probs = np.asarray(judge.compare(list(prompts), list(a), list(b)), dtype=np.float64) if n else np.zeros(0)
        per_pair = 1 if single else 2
        stats.pairs += per_pair * n
        stats.abstained += per_pair * int(np.isnan(probs).sum())
    else:
        raw = (np.asarray(judge.compare(list(prompts) * 2, list(a) + list(b), list(b) + list(a)), dtype=np.float64)
               if n else np.zeros(0))
        probs = _average_orders(raw[:n], raw[n:], stats)
        stats.pairs += 2 * n
        stats.abstained += int(np.isnan(raw).sum())
    stats.seconds += time.perf_counter() - t0
    stats.calls += 1
    return probs


def _average_orders(fwd: np.ndarray, bwd: np.ndarray, stats: JudgeStats) -> np.ndarray:
    out = np.full(len(fwd), np.nan)
    for n, (f, b) in enumerate(zip(fwd, bwd)):
        votes = [v for v in (f, 1.0 - b) if not np.isnan(v)]
        if len(votes) == 2:
            stats.both_orders += 1
            stats.order_disagreements += int((f - 0.5) * ((1.0 - b) - 0.5) < 0)
        out[n] = float(np.mean(votes)) if votes else np.nan
    return out


def _record_lengths(stats: JudgeStats, mats: list[np.ndarray], responses: Sequence[Sequence[str]]) -> None:
    for m, rs in zip(mats, responses):
        for i in range(len(rs)):
            for j in range(i + 1, len(rs)):
                if np.isnan(m[i, j]) or m[i, j] == 0.5:
                    continue
                w, l = (i, j) if m[i, j] > 0.5 else (j, i)
                stats.winner_lengths.append(len(rs[w]))
                stats.loser_lengths.append(len(rs[l]))


def cross_preferences(judge: Judge, prompts: Sequence[str], a: Sequence[Sequence[str]], b: Sequence[Sequence[str]],
                      stats: JudgeStats | None = None) -> list[np.ndarray]:
    """Per prompt, the [len(a_k), len(b_k)] matrix of P(a_i ≻ b_j), all in one batched call; each pair
    in both orders unless the judge is order-symmetric or asks both itself (:func:`ask_pairs`), so a
    judge's position bias cannot favour either policy."""
    index = [(k, i, j) for k, (xs, ys) in enumerate(zip(a, b)) for i in range(len(xs)) for j in range(len(ys))]
    probs = ask_pairs(judge, [prompts[k] for k, _, _ in index], [a[k][i] for k, i, _ in index],
                      [b[k][j] for k, _, j in index], stats)
    out = [np.full((len(xs), len(ys)), np.nan) for xs, ys in zip(a, b)]
    for (k, i, j), p in zip(index, probs):
        out[k][i, j] = p
    return out


def compare_by_scores(score, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """P(a ≻ b) from absolute scores (`score(prompts, responses) -> array`, NaN = unscored): 1 / ½ / 0
    by comparison, NaN (abstain) when either side is unscored. For the rubric and self-reward judges."""
    n = len(prompts)
    s = score(list(prompts) * 2, list(a) + list(b))
    sa, sb = s[:n], s[n:]
    out = np.where(sa > sb, 1.0, np.where(sa < sb, 0.0, 0.5))
    out[np.isnan(sa) | np.isnan(sb)] = np.nan
    return out


def symmetric_matrices(compare, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Each prompt's K×K matrix from one `compare(prompts, a, b)` call over its unordered pairs (a judge
    whose compare is already order-symmetric): M_ij = compare, M_ji = 1 − M_ij, M_ii = ½."""
    fp, fa, fb, index = [], [], [], []
    for k, (p, rs) in enumerate(zip(prompts, responses)):
        for i in range(len(rs)):
            for j in range(i + 1, len(rs)):
                fp.append(p), fa.append(rs[i]), fb.append(rs[j]), index.append((k, i, j))
    probs = compare(fp, fa, fb) if fp else np.zeros(0)
    out = [np.full((len(rs), len(rs)), 0.5) for rs in responses]
    for (k, i, j), v in zip(index, probs):
        out[k][i, j], out[k][j, i] = v, 1.0 - v
    return out
