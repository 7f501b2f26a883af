"""Win-rate statistics: intervals, length control, Bradley–Terry ratings and cycle detection.

Pure numpy. A comparison is a probability p = P(new ≻ old) from the judge (NaN = abstained);
a tie is exactly ½ and counts half a win, so a soft p counts as p wins everywhere below.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ELO_PER_NAT = 400 / np.log(10)   # Elo = 400·log10(odds) = ELO_PER_NAT · ln(odds)


@dataclass(frozen=True)
class WinRate:
    mean: float
    ci_low: float
    ci_high: float
    n: int                 # prompts (bootstrap) or comparisons (wilson) behind the interval
    method: str
    tie_rate: float        # among answered comparisons
    abstain_rate: float    # among all comparisons

    def to_dict(self) -> dict:
        return asdict(self)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))   # no overflow warning for |x| ≫ 1, unlike 1/(1+exp(-x))


def wilson_interval(wins: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion wins/n (NaN, NaN when n = 0).

    `wins` may be fractional: a tie adds ½ and a soft judgement p adds p. The Wilson interval stays
    inside [0, 1] and is sane at 0/n and n/n, where the normal (Wald) interval collapses.
    Example: wilson_interval(8, 10) ≈ (0.4902, 0.9433).
    """
    if n <= 0:
        return float("nan"), float("nan")
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def bootstrap_mean_interval(values: np.ndarray, n_boot: int = 2000, seed: int = 0,
                            alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` [n_prompts] (NaNs dropped).

    Resample prompts, not comparisons: comparisons on one prompt share the prompt's difficulty,
    so treating them as independent would make the interval too narrow.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // len(v))   # bound the [boots, n] index array to ~16 MB
    means = np.concatenate([v[rng.integers(0, len(v), size=(min(chunk, n_boot - s), len(v)))].mean(axis=1)
                            for s in range(0, n_boot, chunk)])
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def winrate_summary(p: np.ndarray, method: str = "bootstrap") -> WinRate:
    """Win rate of new over old with a 95% interval from p = P(new ≻ old), [prompts, comparisons] or [n].

    bootstrap: mean over prompts of each prompt's mean p; percentile interval over prompts; n = prompts.
    wilson: pooled mean of all answered p (soft wins / comparisons); Wilson interval; n = comparisons.
    It ignores the clustering by prompt, so it is narrower than the bootstrap when prompts differ.
    A 1-D p is one comparison per prompt. Ties are p == 0.5 exactly; NaN is an abstention.
    """
    if method not in ("bootstrap", "wilson"):
        raise ValueError(f"method must be 'bootstrap' or 'wilson', got {method!r}")
    p = np.asarray(p, dtype=np.float64)
    p2 = p.reshape(len(p), -1) if p.ndim else p.reshape(1, 1)
    valid = ~np.isnan(p2)
    answered = p2[valid]
    abstain = float(1 - valid.mean()) if p2.size else 0.0
    ties = float((answered == 0.5).mean()) if answered.size else 0.0
    if method == "wilson":
        lo, hi = wilson_interval(float(answered.sum()), int(answered.size))
        mean = float(answered.mean()) if answered.size else float("nan")
        return WinRate(mean, lo, hi, int(answered.size), method, ties, abstain)
    counts = valid.sum(axis=1)
    per_prompt = np.where(valid, p2, 0.0).sum(axis=1) / np.maximum(counts, 1)
    per_prompt = per_prompt[counts > 0]
    lo, hi = bootstrap_mean_interval(per_prompt)
    mean = float(per_prompt.mean()) if len(per_prompt) else float("nan")
    return WinRate(mean, lo, hi, int(len(per_prompt)), method, ties, abstain)


def length_controlled_winrate(p: np.ndarray, len_new: np.ndarray, len_old: np.ndarray,
                              l2: float = 1e-3) -> float:
    """Win rate at zero length difference, AlpacaEval 2.0 style (Dubois et al. 2024, arXiv:2404.04475).

    Fits logit P(new ≻ old) = θ + φ·tanh(Δ / sd(Δ)), Δ = len_new − len_old, to the soft labels p by
    Newton's method on the cross-entropy with soft targets, and returns σ(θ). tanh of the
    standardised difference is AlpacaEval's own feature: it bounds the length term, so a few very
    long answers cannot buy an unbounded bonus. A small L2 (l2 · n) on φ only keeps the fit finite when
    length separates the labels perfectly. If all Δ are equal, φ is unidentifiable and σ(θ) is just the
    fitted mean. NaN p (abstentions) are dropped; inputs may be any matching shape.
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    d = (np.asarray(len_new, dtype=np.float64) - np.asarray(len_old, dtype=np.float64)).ravel()
    ok = ~np.isnan(p) & ~np.isnan(d)
    p, d = p[ok], d[ok]
    if len(p) == 0:
        return float("nan")
    sd = d.std()
    x = np.stack([np.ones_like(d), np.tanh(d / sd) if sd > 0 else np.zeros_like(d)], axis=1)   # [n, 2]
    reg = np.diag([0.0, l2 * len(p)])
    w = _newton(lambda w: _soft_logistic(w, x, p, reg), np.zeros(2))
    return float(_sigmoid(w[0]))


def _soft_logistic(w: np.ndarray, x: np.ndarray, p: np.ndarray, reg: np.ndarray):
    """Cross-entropy with soft targets p, plus ½ wᵀ·reg·w: (loss, gradient, Hessian)."""
    z = x @ w
    loss = np.sum(np.logaddexp(0, z) - p * z) + 0.5 * w @ reg @ w
    q = _sigmoid(z)
    return loss, x.T @ (q - p) + reg @ w, (x * (q * (1 - q))[:, None]).T @ x + reg


def _newton(f, w: np.ndarray, iters: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Minimise a convex f (returning loss, grad, Hessian) by Newton steps with step halving.

    The tiny ridge keeps the solve defined where the optimum is at infinity (all p = 1); there the
    iterate walks outwards about one unit per step and σ(θ) approaches 1, the right limit.
    """
    loss, g, h = f(w)
    for _ in range(iters):
        step = np.linalg.solve(h + 1e-9 * np.eye(len(w)), g)
        t, new = 1.0, f(w - step)
        while new[0] > loss + 1e-12 * abs(loss) and t > 1e-6:
            t /= 2
            new = f(w - t * step)
        w = w - t * step
        loss, g, h = new
        if np.abs(t * step).max() < tol:
            break
    return w


def bradley_terry(wins: np.ndarray, games: float | np.ndarray | None = None, anchor: int = 0,
                  prior: float = 1e-6) -> dict[str, list[float]]:
    """Bradley–Terry ratings on the Elo scale with Hessian-based 95% intervals.

    wins [m, m]: with games=None, soft win counts (wins[i, j] = how often i beat j, ties as ½);
    otherwise a win-rate matrix whose entry (i, j) rests on games (a scalar or an [m, m] matrix)
    comparisons. Diagonal and NaN entries are ignored. A win-rate matrix with W + Wᵀ = 1 and
    games=None therefore means one comparison per pair.
    Returns {"elo", "ci_low", "ci_high"}: 1000 + 400·log10 of each policy's odds against the anchor
    (the initial policy), maximum likelihood by Newton's method. Intervals are ±1.96 standard errors
    from the inverse Fisher information with the anchor fixed (so the anchor's interval is a point);
    they treat the comparisons as independent, which they are not when pairs share prompts.
    `prior` adds that fraction of each pair's games as ties so that a clean sweep keeps a finite rating.
    Policies not connected to the anchor by any comparison get infinite intervals.
    """
    c = _win_counts(np.asarray(wins, dtype=np.float64), games)
    n = c + c.T
    c = c + 0.5 * prior * n
    n = n * (1 + prior)
    m = len(c)
    keep = np.arange(m) != anchor

    def f(s_free: np.ndarray):
        s = np.zeros(m)
        s[keep] = s_free
        z = s[:, None] - s[None, :]
        loss = -np.sum(c * -np.logaddexp(0, -z))          # −Σ C_ij log σ(s_i − s_j)
        q = _sigmoid(z)
        grad = -(c - n * q).sum(axis=1)
        v = n * q * (1 - q)
        info = np.diag(v.sum(axis=1)) - v
        return loss, grad[keep], info[np.ix_(keep, keep)]

    s = np.zeros(m)
    s[keep] = _newton(f, np.zeros(m - 1))
    se = np.zeros(m)
    if m > 1:
        cov = np.linalg.pinv(f(s[keep])[2])
        se[keep] = np.sqrt(np.clip(np.diag(cov), 0, None))
    se[~_reachable(n > 0, anchor)] = np.inf
    elo = 1000 + ELO_PER_NAT * s
    half = 1.96 * ELO_PER_NAT * se
    return {"elo": elo.tolist(), "ci_low": (elo - half).tolist(), "ci_high": (elo + half).tolist()}


def _win_counts(w: np.ndarray, games: float | np.ndarray | None) -> np.ndarray:
    """Soft win counts C[i, j] from counts or from rates × games; zero on the diagonal and for NaN."""
    c = w if games is None else w * np.broadcast_to(np.asarray(games, dtype=np.float64), w.shape)
    c = np.where(np.isnan(c), 0.0, c)
    np.fill_diagonal(c, 0.0)
    return c


def _reachable(adj: np.ndarray, start: int) -> np.ndarray:
    """Boolean mask of nodes connected to `start` in the undirected graph `adj`."""
    seen = np.zeros(len(adj), dtype=bool)
    seen[start] = True
    frontier = seen.copy()
    while frontier.any():
        frontier = adj[frontier].any(axis=0) & ~seen
        seen |= frontier
    return seen


def find_cycles(w: np.ndarray, margin: float = 0.0) -> list[tuple[int, int, int]]:
    """Intransitive triangles i ≻ j ≻ k ≻ i in a win-rate matrix (each rate above ½ + margin).

    Each cycle is listed once, rotated so that its smallest index comes first; sorted.
    """
    b = np.asarray(w, dtype=np.float64) > 0.5 + margin    # NaN compares False: unknown is no edge
    np.fill_diagonal(b, False)
    t = b[:, :, None] & b[None, :, :] & b.T[:, None, :]     # t[i, j, k] = b[i,j] & b[j,k] & b[k,i]
    return [(int(i), int(j), int(k)) for i, j, k in zip(*np.nonzero(t)) if i < j and i < k]


def length_controlled_interval(p: np.ndarray, len_new: np.ndarray, len_old: np.ndarray, n_boot: int = 200,
                               seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of length_controlled_winrate, resampling prompts (rows).

    p, len_new, len_old: [prompts, comparisons] (a 1-D input is one comparison per prompt). Each
    resample draws prompts with replacement, keeps all of a drawn prompt's comparisons, and refits the
    length model from scratch (sd(Δ) included), so the interval carries the fit's own uncertainty as
    well as the prompts'. Seeded, hence deterministic. Cost: n_boot Newton fits of a 2-parameter
    logistic model, about 1.5 ms each at 400 comparisons (0.3 s for 96 prompts × 4 pairs, B = 200).
    NaN when no prompt has an answered comparison.
    """
    p, len_new, len_old = (np.asarray(a, dtype=np.float64) for a in (p, len_new, len_old))
    rows = len(p) if p.ndim else 1
    p, len_new, len_old = (a.reshape(rows, -1) for a in (p, len_new, len_old))
    answered = (~np.isnan(p) & ~np.isnan(len_new) & ~np.isnan(len_old)).any(axis=1)
    p, len_new, len_old = p[answered], len_new[answered], len_old[answered]
    if len(p) == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    fits = np.array([length_controlled_winrate(p[i], len_new[i], len_old[i])
                     for i in (rng.integers(0, len(p), len(p)) for _ in range(n_boot))])
    return float(np.nanquantile(fits, alpha / 2)), float(np.nanquantile(fits, 1 - alpha / 2))
