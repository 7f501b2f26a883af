"""Statistics checked on data with known answers."""
import numpy as np
import pytest

from pipelines.stats import (bootstrap_mean_interval, bradley_terry, find_cycles, length_controlled_winrate,
                             wilson_interval, winrate_summary)


def test_wilson_matches_hand_computation():
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)


def test_bootstrap_covers_the_true_mean():
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(40):
        x = rng.uniform(0, 1, 200)  # true mean ½
        lo, hi = bootstrap_mean_interval(x, n_boot=500, seed=trial)
        hits += lo <= 0.5 <= hi
    assert hits >= 34  # ~95% coverage, with slack for 40 trials


def test_winrate_summary_counts_ties_and_abstentions():
    p = np.array([[1.0, 0.5], [0.0, np.nan], [1.0, 1.0]])
    s = winrate_summary(p)
    assert s.mean == pytest.approx((0.75 + 0.0 + 1.0) / 3)
    assert s.tie_rate == pytest.approx(1 / 5) and s.abstain_rate == pytest.approx(1 / 6) and s.n == 3
    assert s.ci_low <= s.mean <= s.ci_high
    w = winrate_summary(p, method="wilson")
    assert (w.ci_low, w.ci_high) == pytest.approx(wilson_interval(3.5, 5))


def test_length_controlled_winrate_removes_pure_length_effects():
    rng = np.random.default_rng(0)
    d = rng.normal(4, 5, 5000)                        # the new policy is longer...
    p = 1 / (1 + np.exp(-2 * np.tanh(d / d.std())))   # ...and length alone explains its wins
    assert p.mean() > 0.6
    assert length_controlled_winrate(p, d, np.zeros_like(d)) == pytest.approx(0.5, abs=0.02)


def test_length_controlled_equals_raw_when_length_is_irrelevant():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 5, 5000)
    p = np.full_like(d, 0.7)
    assert length_controlled_winrate(p, d, np.zeros_like(d)) == pytest.approx(0.7, abs=0.01)


def test_bradley_terry_recovers_known_ratings():
    r = np.array([0.0, 100.0, 250.0])
    w = 1 / (1 + 10 ** (-(r[:, None] - r[None, :]) / 400))
    out = bradley_terry(w, games=100)
    assert np.allclose(out["elo"], 1000 + r, atol=1e-6)
    assert out["ci_low"][2] < 1250 < out["ci_high"][2]


def test_cycles_found_in_rock_paper_scissors_only():
    rps = np.array([[0.5, 0.2, 0.8], [0.8, 0.5, 0.3], [0.2, 0.7, 0.5]])
    assert find_cycles(rps) == [(0, 2, 1)]
    transitive = np.array([[0.5, 0.6, 0.7], [0.4, 0.5, 0.6], [0.3, 0.4, 0.5]])
    assert find_cycles(transitive) == []
