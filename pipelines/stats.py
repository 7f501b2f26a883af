"""Win-rate statistics: intervals, length control, Bradley–Terry ratings and cycle detection.

Pure numpy. A comparison is a probability p = P(new ≻ old) from the judge (NaN = abstained);
a tie is exactly ½ and counts half a win.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class WinRate:
    mean: float
    ci_low: float
    ci_high: float
    n: int                 # prompts (bootstrap) or comparisons (wilson) behind the interval
    method: str
    tie_rate: float
    abstain_rate: float

    def to_dict(self) -> dict:
        return asdict(self)


def wilson_interval(wins: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion wins/n."""
    if n == 0:
        return float("nan"), float("nan")
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(centre - half), float(centre + half)


def bootstrap_mean_interval(values: np.ndarray, n_boot: int = 2000, seed: int = 0,
                            alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap of the mean over prompts (the unit that is sampled)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    means = v[idx].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def winrate_summary(p: np.ndarray, method: str = "bootstrap") -> WinRate:
    """Mean of P(new ≻ old) over prompts with a 95% interval; p is [prompts, comparisons] or [n]."""
    p = np.asarray(p, dtype=np.float64)
    p2 = p if p.ndim == 2 else p[:, None]
    valid = ~np.isnan(p2)
    per_prompt = np.array([row[m].mean() if m.any() else np.nan for row, m in zip(p2, valid)])
    mean = float(np.nanmean(per_prompt)) if valid.any() else float("nan")
    if method == "wilson":
        flat = p2[valid]
        lo, hi = wilson_interval(float(flat.sum()), int(flat.size))
        n = int(flat.size)
    else:
        lo, hi = bootstrap_mean_interval(per_prompt)
        n = int((~np.isnan(per_prompt)).sum())
    return WinRate(mean, lo, hi, n, method, float((p2[valid] == 0.5).mean()) if valid.any() else 0.0,
                   float(1 - valid.mean()))


def length_controlled_winrate(p: np.ndarray, len_new: np.ndarray, len_old: np.ndarray,
                              l2: float = 1e-3) -> float:
    """AlpacaEval-2.0-style length control: fit logit P = θ + φ·tanh(Δlen / sd(Δlen)) to the soft
    labels by Newton's method and report σ(θ), the win rate at zero length difference."""
    p = np.asarray(p, dtype=np.float64)
    d = np.asarray(len_new, dtype=np.float64) - np.asarray(len_old, dtype=np.float64)
    ok = ~np.isnan(p)
    p, d = p[ok], d[ok]
    if len(p) == 0:
        return float("nan")
    sd = d.std()
    x = np.stack([np.ones_like(d), np.tanh(d / sd) if sd > 0 else np.zeros_like(d)], axis=1)
    w = np.zeros(2)
    reg = np.diag([0.0, l2 * len(p)])
    for _ in range(50):
        q = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (q - p) + reg @ w
        hess = (x * (q * (1 - q))[:, None]).T @ x + reg + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(1 / (1 + np.exp(-w[0])))


def bradley_terry(w: np.ndarray, games: int = 1, anchor: int = 0, iters: int = 2000) -> dict:
    """Elo-scale ratings (400·log10 odds, anchor policy = 1000) fitted to a win-rate matrix by
    maximum likelihood (MM updates, Hunter 2004); ±1.96·se from the Fisher information of `games`
    comparisons per pair (the number of eval prompts behind each win rate)."""
    w = np.asarray(w, dtype=np.float64)
    m = len(w)
    wins = np.where(np.eye(m, dtype=bool), 0.0, np.clip(w, 1e-6, 1 - 1e-6))
    gamma = np.ones(m)
    for _ in range(iters):
        denom = np.array([sum(1 / (gamma[i] + gamma[j]) for j in range(m) if j != i) for i in range(m)])
        new = wins.sum(axis=1) / np.maximum(denom, 1e-12)
        new /= np.exp(np.log(new).mean())
        done = np.abs(new - gamma).max() < 1e-12
        gamma = new
        if done:
            break
    s = np.log(gamma)
    s -= s[anchor]
    scale = 400 / np.log(10)
    q = 1 / (1 + np.exp(-(s[:, None] - s[None, :])))
    v = q * (1 - q) * (1 - np.eye(m))
    info = games * (np.diag(v.sum(axis=1)) - v)
    keep = [i for i in range(m) if i != anchor]
    se = np.zeros(m)
    if keep:
        cov = np.linalg.pinv(info[np.ix_(keep, keep)])
        se[keep] = np.sqrt(np.clip(np.diag(cov), 0, None))
    elo = 1000 + scale * s
    return {"elo": elo.tolist(), "ci_low": (elo - 1.96 * scale * se).tolist(),
            "ci_high": (elo + 1.96 * scale * se).tolist()}


def find_cycles(w: np.ndarray, margin: float = 0.0) -> list[tuple[int, int, int]]:
    """Intransitive triangles i ≻ j ≻ k ≻ i (each win rate above ½ + margin), each listed once
    with its smallest index first."""
    w = np.asarray(w)
    m = len(w)
    beats = w > 0.5 + margin
    return [(i, j, k) for i in range(m) for j in range(i + 1, m) for k in range(i + 1, m)
            if beats[i, j] and beats[j, k] and beats[k, i]]
