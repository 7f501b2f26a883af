"""The one judge interface: P(a ≻ b | prompt) as a probability, NaN meaning "abstained".

Every judge is a plain object with a ``name`` and a batched ``compare``; the K×K matrix for one
prompt's K responses is built from ``compare`` by :func:`preference_matrices` (all ordered pairs in
one batch, both orders averaged), unless a judge has a faster native ``matrices``.
Judges never see Ray: ``pipelines/actors.py`` wraps them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np


class Judge(Protocol):
    name: str

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """P(a[i] ≻ b[i] | prompts[i]) for each i, shape [N]; NaN where the judge abstained."""
        ...


@dataclass
class JudgeStats:
    """Diagnostics one judging stage reports (manifest and metrics.json)."""

    pairs: int = 0                 # ordered pairs asked
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
    """K×K matrices M[i, j] = P(r_i ≻ r_j), asking every ordered pair once in a single batch.

    Both orders are averaged (M_ij = mean(p(i,j), 1 − p(j,i)) over the non-NaN answers) so position
    bias cancels and M + Mᵀ = 1 wherever both answers exist; the diagonal is ½.
    """
    stats = stats if stats is not None else JudgeStats()
    if hasattr(judge, "matrices"):  # a judge with a native batched matrix (e.g. PairRM) uses it
        t0 = time.perf_counter()
        out = judge.matrices(prompts, responses)
        stats.seconds += time.perf_counter() - t0
        stats.pairs += sum(len(r) * (len(r) - 1) for r in responses)
        stats.abstained += int(sum(np.isnan(m).sum() for m in out))
        _record_lengths(stats, out, responses)
        return out
    flat_p, flat_a, flat_b, index = [], [], [], []
    for k, (p, rs) in enumerate(zip(prompts, responses)):
        for i in range(len(rs)):
            for j in range(len(rs)):
                if i != j:
                    flat_p.append(p), flat_a.append(rs[i]), flat_b.append(rs[j]), index.append((k, i, j))
    t0 = time.perf_counter()
    probs = np.asarray(judge.compare(flat_p, flat_a, flat_b), dtype=np.float64) if flat_p else np.zeros(0)
    stats.seconds += time.perf_counter() - t0
    stats.pairs += len(flat_p)
    stats.abstained += int(np.isnan(probs).sum())
    raw = [np.full((len(rs), len(rs)), np.nan) for rs in responses]
    for (k, i, j), p in zip(index, probs):
        raw[k][i, j] = p
    out = []
    for m in raw:
        out.append(_symmetrise(m, stats))
    _record_lengths(stats, out, responses)
    return out


def _symmetrise(raw: np.ndarray, stats: JudgeStats) -> np.ndarray:
    k = raw.shape[0]
    m = np.full((k, k), 0.5)
    for i in range(k):
        for j in range(i + 1, k):
            fwd, bwd = raw[i, j], raw[j, i]
            votes = [v for v in (fwd, 1.0 - bwd) if not np.isnan(v)]
            if not np.isnan(fwd) and not np.isnan(bwd):
                stats.both_orders += 1
                stats.order_disagreements += int((fwd - 0.5) * ((1.0 - bwd) - 0.5) < 0)
            p = float(np.mean(votes)) if votes else np.nan
            m[i, j], m[j, i] = p, (1.0 - p if not np.isnan(p) else np.nan)
    return m


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
    """Per prompt, the [len(a_k), len(b_k)] matrix of P(a_i ≻ b_j), each pair asked in both orders
    (a first, then b first) and averaged, so a judge's position bias cannot favour either policy."""
    stats = stats if stats is not None else JudgeStats()
    if getattr(judge, "both_orders", False):  # the judge asks both orders itself (LLM judge): once is enough
        return _cross_once(judge, prompts, a, b, stats)
    fp, fa, fb, index = [], [], [], []
    for k, (p, xs, ys) in enumerate(zip(prompts, a, b)):
        for i, x in enumerate(xs):
            for j, y in enumerate(ys):
                fp += [p, p]
                fa += [x, y]
                fb += [y, x]
                index.append((k, i, j))
    t0 = time.perf_counter()
    probs = np.asarray(judge.compare(fp, fa, fb), dtype=np.float64) if fp else np.zeros(0)
    stats.seconds += time.perf_counter() - t0
    stats.pairs += len(fp)
    stats.abstained += int(np.isnan(probs).sum())
    out = [np.full((len(xs), len(ys)), np.nan) for xs, ys in zip(a, b)]
    for n, (k, i, j) in enumerate(index):
        fwd, bwd = probs[2 * n], probs[2 * n + 1]
        if not np.isnan(fwd) and not np.isnan(bwd):
            stats.both_orders += 1
            stats.order_disagreements += int((fwd - 0.5) * ((1.0 - bwd) - 0.5) < 0)
        votes = [v for v in (fwd, 1.0 - bwd) if not np.isnan(v)]
        out[k][i, j] = float(np.mean(votes)) if votes else np.nan
    return out


def _cross_once(judge: Judge, prompts, a, b, stats: JudgeStats) -> list[np.ndarray]:
    index = [(k, i, j) for k, (xs, ys) in enumerate(zip(a, b)) for i in range(len(xs)) for j in range(len(ys))]
    t0 = time.perf_counter()
    probs = (np.asarray(judge.compare([prompts[k] for k, _, _ in index], [a[k][i] for k, i, _ in index],
                                      [b[k][j] for k, _, j in index]), dtype=np.float64) if index else np.zeros(0))
    stats.seconds += time.perf_counter() - t0
    stats.pairs += 2 * len(index)
    stats.abstained += int(np.isnan(probs).sum())
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
