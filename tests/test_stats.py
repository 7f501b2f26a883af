"""Statistics checked on data with known answers."""
import warnings

import numpy as np
import pytest

from pipelines.stats import (bootstrap_mean_interval, bradley_terry, find_cycles, length_controlled_interval,
                             length_controlled_winrate, wilson_interval, winrate_summary)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_wilson_matches_hand_computation():
    """8/10, z = 1.96: centre = (0.8 + z²/20)/(1 + z²/10) = 0.99208/1.38416 = 0.71674;
    half = z·sqrt(0.8·0.2/10 + z²/400)/1.38416 = 1.96·0.16001/1.38416 = 0.22659."""
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    # 0/10: the interval is [0, z²/(n + z²)] = [0, 3.8416/13.8416]
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((1 - 0.27754, 1.0), abs=1e-5)
    # a tie is half a win: 7 wins + 1 tie out of 10 is the interval for 7.5/10
    assert wilson_interval(7.5, 10)[0] < wilson_interval(8, 10)[0]
    assert all(np.isnan(wilson_interval(0, 0)))


def test_bootstrap_covers_the_true_mean():
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(40):
        x = rng.uniform(0, 1, 200)  # true mean ½
        lo, hi = bootstrap_mean_interval(x, n_boot=500, seed=trial)
        hits += lo <= 0.5 <= hi
    assert hits >= 34  # ~95% coverage, with slack for 40 trials


def test_bootstrap_is_seeded_and_ignores_nan():
    x = np.random.default_rng(3).normal(0.6, 0.1, 64)
    assert bootstrap_mean_interval(x, seed=5) == bootstrap_mean_interval(np.append(x, np.nan), seed=5)
    lo, hi = bootstrap_mean_interval(x)
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * x.std() / 8, rel=0.15)
    assert all(np.isnan(bootstrap_mean_interval(np.array([np.nan]))))


def test_winrate_summary_counts_ties_and_abstentions():
    p = np.array([[1.0, 0.5], [0.0, np.nan], [1.0, 1.0]])
    s = winrate_summary(p)
    assert s.mean == pytest.approx((0.75 + 0.0 + 1.0) / 3)
    assert s.tie_rate == pytest.approx(1 / 5) and s.abstain_rate == pytest.approx(1 / 6) and s.n == 3
    assert s.ci_low <= s.mean <= s.ci_high
    w = winrate_summary(p, method="wilson")
    assert (w.ci_low, w.ci_high) == pytest.approx(wilson_interval(3.5, 5))
    assert w.mean == pytest.approx(3.5 / 5) and w.n == 5
    assert set(s.to_dict()) == {"mean", "ci_low", "ci_high", "n", "method", "tie_rate", "abstain_rate"}


def test_winrate_summary_edge_cases():
    one_d = winrate_summary(np.array([1.0, 0.0, 1.0, np.nan]))
    assert one_d.mean == pytest.approx(2 / 3) and one_d.n == 3 and one_d.abstain_rate == 0.25
    all_abstain = winrate_summary(np.array([[np.nan, np.nan], [1.0, 0.0]]))
    assert all_abstain.n == 1 and all_abstain.mean == 0.5           # the silent prompt is dropped
    assert np.isnan(winrate_summary(np.full((2, 2), np.nan)).mean)
    with pytest.raises(ValueError, match="bootstrap"):
        winrate_summary(np.array([0.5]), method="normal")


def test_length_controlled_winrate_removes_pure_length_effects():
    rng = np.random.default_rng(0)
    d = rng.normal(4, 5, 5000)                        # the new policy is longer...
    p = _sigmoid(2 * np.tanh(d / d.std()))            # ...and length alone explains its wins
    assert p.mean() > 0.6
    assert length_controlled_winrate(p, d, np.zeros_like(d)) == pytest.approx(0.5, abs=0.02)


def test_length_controlled_equals_raw_when_length_is_independent_of_quality():
    rng = np.random.default_rng(0)
    d = rng.normal(3, 5, 5000)                        # longer on average, but length is not rewarded
    p = _sigmoid(rng.normal(0.8, 1.0, 5000))          # quality varies per comparison, independently
    lc = length_controlled_winrate(p, 20 + d, np.full_like(d, 20))
    assert lc == pytest.approx(p.mean(), abs=0.01)


def test_length_controlled_recovers_the_quality_term_from_hard_labels():
    rng = np.random.default_rng(2)
    d = rng.normal(4, 5, 20000)
    theta, phi = 0.4, 1.5
    y = (rng.uniform(size=d.size) < _sigmoid(theta + phi * np.tanh(d / d.std()))).astype(float)
    assert y.mean() > _sigmoid(theta) + 0.08            # raw win rate is inflated by length
    assert length_controlled_winrate(y, d, np.zeros_like(d)) == pytest.approx(_sigmoid(theta), abs=0.02)


def test_length_controlled_degenerate_inputs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert length_controlled_winrate(np.ones(50), np.arange(50), np.zeros(50)) > 0.999   # a clean sweep
        same = length_controlled_winrate(np.array([0.2, 0.9, np.nan]), np.ones(3), np.ones(3))
    assert same == pytest.approx(0.55, abs=1e-6)                  # no length variation: the mean
    assert np.isnan(length_controlled_winrate(np.array([np.nan]), np.ones(1), np.ones(1)))


def _lc_data(prompts: int, seed: int = 0, per_prompt: int = 4):
    """Soft labels whose wins are partly quality (θ = 0.4), partly length (φ = 1), prompts of varying difficulty."""
    rng = np.random.default_rng(seed)
    d = rng.normal(5, 20, (prompts, per_prompt))
    difficulty = rng.normal(0, 0.5, (prompts, 1))
    p = _sigmoid(0.4 + difficulty + np.tanh(d / 20) + rng.normal(0, 0.5, d.shape))
    return p, 50 + d, np.full_like(d, 50)


def test_length_controlled_interval_contains_the_estimate_and_narrows_with_prompts():
    widths = []
    for prompts in (48, 768):
        p, ln, lo_ = _lc_data(prompts)
        lc = length_controlled_winrate(p, ln, lo_)
        lo, hi = length_controlled_interval(p, ln, lo_)
        assert lo < lc < hi and 0 < lo and hi < 1
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2.5                       # ~1/sqrt(16) = 1/4 in theory


def test_length_controlled_interval_is_seeded_and_handles_abstentions():
    p, ln, lo_ = _lc_data(64, seed=3)
    assert length_controlled_interval(p, ln, lo_) == length_controlled_interval(p, ln, lo_)
    assert length_controlled_interval(p, ln, lo_, seed=1) != length_controlled_interval(p, ln, lo_)
    silent = np.vstack([p, np.full((1, p.shape[1]), np.nan)])        # a prompt where the judge always abstained
    extra = np.vstack([ln, np.ones((1, ln.shape[1]))]), np.vstack([lo_, np.ones((1, lo_.shape[1]))])
    assert length_controlled_interval(silent, *extra) == length_controlled_interval(p, ln, lo_)
    lo, hi = length_controlled_interval(p[:, 0], ln[:, 0], lo_[:, 0], n_boot=50)   # 1-D: one comparison each
    assert lo < length_controlled_winrate(p[:, 0], ln[:, 0], lo_[:, 0]) < hi
    assert all(np.isnan(length_controlled_interval(np.full((3, 2), np.nan), np.ones((3, 2)), np.ones((3, 2)))))


def _elo_rates(r: np.ndarray) -> np.ndarray:
    return 1 / (1 + 10 ** (-(r[:, None] - r[None, :]) / 400))


def test_bradley_terry_recovers_known_ratings():
    r = np.array([0.0, 100.0, 250.0, -80.0])
    w = _elo_rates(r)
    out = bradley_terry(w, games=100)
    assert np.allclose(out["elo"], 1000 + r, atol=1e-2)
    assert out["ci_low"][0] == out["ci_high"][0] == pytest.approx(1000)     # the anchor is fixed
    assert all(lo < 1000 + x < hi for lo, x, hi in zip(out["ci_low"][1:], r[1:], out["ci_high"][1:]))
    # the same data as soft win counts
    counts = bradley_terry(w * 100)
    assert np.allclose(counts["elo"], out["elo"]) and np.allclose(counts["ci_high"], out["ci_high"])
    # anchored on another policy: same differences, that policy at 1000
    other = bradley_terry(w, games=100, anchor=2)
    assert np.allclose(other["elo"], 1000 + r - r[2], atol=1e-2)


def test_bradley_terry_intervals_cover_true_ratings():
    rng = np.random.default_rng(0)
    r = np.array([0.0, 60.0, 120.0])
    q = _elo_rates(r)
    hits, trials = 0, 100
    for _ in range(trials):
        upper = np.triu(rng.binomial(200, q), 1).astype(float)
        wins = upper + np.tril(200 - upper.T, -1)                  # 200 games per pair
        out = bradley_terry(wins)
        hits += out["ci_low"][2] <= 1120 <= out["ci_high"][2]
    assert hits >= 88                                              # nominal 95%


def test_bradley_terry_degenerate_inputs():
    sweep = bradley_terry(np.array([[0.5, 0.0], [1.0, 0.5]]), games=10)   # round_1 won every game
    assert np.isfinite(sweep["elo"]).all() and sweep["elo"][1] > 1500
    w = np.full((3, 3), np.nan)
    w[0, 1], w[1, 0] = 0.4, 0.6                                    # policy 2 was never compared
    apart = bradley_terry(w, games=50)
    assert apart["elo"][1] == pytest.approx(1000 + 400 * np.log10(1.5), abs=1e-2)
    assert apart["ci_high"][2] == np.inf and np.isfinite(apart["ci_high"][1])


def test_cycles_found_in_rock_paper_scissors_only():
    rps = np.array([[0.5, 0.2, 0.8], [0.8, 0.5, 0.3], [0.2, 0.7, 0.5]])
    assert find_cycles(rps) == [(0, 2, 1)]                          # 0 ≻ 2 ≻ 1 ≻ 0, smallest first
    assert find_cycles(rps, margin=0.25) == []                      # 1 ≻ 2 by only 0.2
    transitive = np.array([[0.5, 0.6, 0.7], [0.4, 0.5, 0.6], [0.3, 0.4, 0.5]])
    assert find_cycles(transitive) == []
    assert find_cycles(_elo_rates(np.array([0.0, 50.0, 10.0, 90.0]))) == []


def test_cycles_each_listed_once_in_a_larger_tournament():
    beats = {(0, 1), (1, 2), (2, 0), (2, 3), (3, 0), (1, 3)}        # cycles 0→1→2→0 and 0→1→3→0
    w = np.full((4, 4), 0.5)
    for i, j in beats:
        w[i, j], w[j, i] = 0.7, 0.3
    assert find_cycles(w) == [(0, 1, 2), (0, 1, 3)]


def test_compare_rounds_reports_the_lc_interval(monkeypatch):
    """evaluate.compare_rounds puts a bootstrap interval over prompts around its LC win rate."""
    from types import SimpleNamespace

    import pipelines.evaluate as ev

    rng = np.random.default_rng(4)
    gens = {}
    for who, extra in (("new", 6), ("old", 0)):
        gens[who] = [(f"p{k}", f"prompt {k}", [{"response": who + " " + "x" * int(n), "n_tokens": int(n)}
                                               for n in rng.integers(5, 15, 2) + extra]) for k in range(40)]
    monkeypatch.setattr(ev, "group_generations", lambda d: gens[str(d)])

    class Judge:   # prefers the new policy a little, and longer answers a lot
        name = "fake"
        order_symmetric = both_orders = False   # asked each order (judges.base.Judge's flags)

        def compare(self, prompts, a, b):
            q = [0.3 * ((x[:3] == "new") - (y[:3] == "new")) + 0.15 * (len(x) - len(y)) for x, y in zip(a, b)]
            return list(_sigmoid(np.asarray(q) + rng.normal(0, 0.3, len(q))))

    s = ev.compare_rounds("new", "old", Judge(), SimpleNamespace(eval=SimpleNamespace(ci_method="bootstrap")))
    assert s["lc_ci_low"] < s["lc"] < s["lc_ci_high"] and s["lc"] < s["mean"]     # length inflated the raw rate
    assert s["lc_ci_high"] - s["lc_ci_low"] < 0.5
