"""selfplay/games.py: equilibria, duality gaps, loss-driven steps against their closed forms (1e-10),
and the convergence behaviour and reference numbers of the spec (algorithms.md §10.3).
Run: .venv/bin/pytest tests/test_games.py -q
"""
import numpy as np
import pytest
import torch

from selfplay import games as G
from selfplay import losses

RPS, WRPS, BT = G.rock_paper_scissors(), G.weighted_cycle(), G.transitive()
REF = np.array([0.6, 0.3, 0.1])  # π_ref = π_0 of spec §10.3
UNIFORM = np.full(3, 1 / 3)
P10, REF10 = G.random_game(10, 0), G.random_reference(10, 0)


def centred(theta):
    return theta - theta.mean()


def first_below(values, threshold):
    return next((t for t, v in enumerate(values) if v < threshold), None)


def kl_to(target, trajectory):
    return np.array([G.kl(target, pi) for pi in trajectory])


# ---------------------------------------------------------------------------------------------
# Games, gaps, equilibria


def test_games_are_preference_games():
    for P in (RPS, WRPS, BT, P10):
        np.testing.assert_allclose(P + P.T, 1.0, atol=1e-15)
        assert (P >= 0).all() and (P <= 1).all()
    assert (WRPS[1, 0], WRPS[0, 2], WRPS[2, 1]) == pytest.approx((0.9, 0.7, 0.6))  # spec §10.2
    assert RPS[1, 0] == RPS[2, 1] == RPS[0, 2] == 1.0  # paper ≻ rock, scissors ≻ paper, rock ≻ scissors


def test_von_neumann_winners():
    np.testing.assert_allclose(G.nash_equilibrium(RPS, 0.0), UNIFORM, atol=1e-12)
    np.testing.assert_allclose(G.nash_equilibrium(WRPS, 0.0), np.array([1, 2, 4]) / 7, atol=1e-12)
    np.testing.assert_allclose(G.nash_equilibrium(BT, 0.0), [1, 0, 0], atol=1e-12)
    pi = G.nash_equilibrium(P10, 0.0)
    assert G.duality_gap(P10, pi) < 1e-12 < G.duality_gap(P10, np.full(10, 0.1))


@pytest.mark.parametrize("P, beta, ref, expected", [
    (RPS, 0.1, REF, (0.2958, 0.4442, 0.2600)),
    (RPS, 0.01, REF, (0.3263, 0.3453, 0.3283)),
    (WRPS, 0.1, REF, (0.1249, 0.6350, 0.2401)),
    (WRPS, 0.01, REF, (0.1201, 0.3330, 0.5470)),
    (WRPS, 0.001, UNIFORM, (0.1419, 0.2877, 0.5704)),
    (BT, 0.1, UNIFORM, (0.7179, 0.2130, 0.0691)),
])
def test_regularised_equilibria_match_spec(P, beta, ref, expected):
    pi = G.nash_equilibrium(P, beta, ref)
    np.testing.assert_allclose(pi, expected, atol=1e-4)
    np.testing.assert_allclose(G.softmax(np.log(ref) + P @ pi / beta), pi, atol=1e-12)  # θ* = θ_ref + Pπ*/β
    assert abs(G.duality_gap(P, pi, beta, ref)) < 1e-12


def test_weighted_cycle_regularised_equilibrium_tends_to_one_two_four_sevenths():
    errors = [np.abs(G.nash_equilibrium(WRPS, b, UNIFORM) - np.array([1, 2, 4]) / 7).max() for b in (1e-2, 1e-3, 1e-4)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3


def test_duality_gap_matches_its_closed_forms():
    """β = 0: 2·max(Pπ) − 1. β > 0: max_q qᵀr − βKL(q‖ref) = β·log Σ ref·exp(r/β), so the gap is
    2[β log Σ ref exp(Pπ/β) + β KL(π‖ref)] − 1 (using πᵀPq = 1 − qᵀPπ)."""
    rng = np.random.default_rng(1)
    for _ in range(5):
        pi, beta = G.softmax(rng.normal(size=10)), 0.05
        assert G.duality_gap(P10, pi) == pytest.approx(2 * (P10 @ pi).max() - 1, abs=1e-14)
        log_sum = np.log(np.sum(REF10 * np.exp((P10 @ pi) / beta)))
        closed = 2 * (beta * log_sum + beta * G.kl(pi, REF10)) - 1
        assert G.duality_gap(P10, pi, beta, REF10) == pytest.approx(closed, abs=1e-12)
        assert G.duality_gap(P10, pi, beta, REF10) > 0


# ---------------------------------------------------------------------------------------------
# Each loss-driven step against its closed form


@pytest.fixture
def state():
    rng = np.random.default_rng(3)
    return rng.normal(size=10), rng.normal(size=10), G.softmax(rng.normal(size=10))  # θ, θ_ref, opponent


def test_sppo_step_is_the_mwu_step_and_minimises_the_sppo_loss(state):
    theta, other, _ = state
    eta = 0.7
    new = G.mwu_step(P10, theta, None, 0.0, eta)
    np.testing.assert_allclose(centred(new), centred(theta + eta * P10 @ G.softmax(theta)), atol=1e-10)
    # the minimiser is reached from any start: the loss is quadratic with Hessian (2/n)·I
    from_elsewhere = G.sppo_step(P10, other, theta, G.softmax(theta), eta)
    np.testing.assert_allclose(from_elsewhere, new, atol=1e-12)
    th = torch.tensor(new, requires_grad=True)
    win, ref = torch.tensor(P10 @ G.softmax(theta)), torch.tensor(theta)
    (grad,) = torch.autograd.grad(losses.sppo_loss(th, th, ref, ref, win, win, eta).mean(), th)
    assert grad.abs().max() < 1e-12


def test_online_ipo_sgd_step_is_the_omd_step(state):
    theta, theta_ref, opp = state
    beta, eta = 0.05, 0.8
    new = G.online_ipo_step(P10, theta, np.log(REF10), opp, beta, eta)
    closed = (1 - eta * beta) * theta + eta * beta * np.log(REF10) + eta * P10 @ opp
    np.testing.assert_allclose(centred(new), centred(closed), atol=1e-10)


def test_inpo_loss_minimiser_is_the_omd_step(state):
    theta, _, _ = state
    beta, eta = 0.1, 0.4
    closed = (1 - eta * beta) * theta + eta * beta * np.log(REF10) + eta * P10 @ G.softmax(theta)
    np.testing.assert_allclose(centred(G.inpo_step(P10, theta, np.log(REF10), beta, eta)), centred(closed),
                               atol=1e-10)


def test_nash_md_and_egpo_steps_match_their_closed_forms(state):
    theta, _, _ = state
    beta, eta, log_ref = 0.01, 0.8, np.log(REF10)
    mix = (1 - eta * beta) * theta + eta * beta * log_ref
    np.testing.assert_allclose(centred(G.nash_md_step(P10, theta, log_ref, beta, eta)),
                               centred(mix + eta * P10 @ G.softmax(mix)), atol=1e-10)
    half = (1 - eta * beta) * theta + eta * beta * log_ref + eta * P10 @ G.softmax(theta)
    full = (1 - eta * beta) * theta + eta * beta * log_ref + eta * P10 @ G.softmax(half)
    np.testing.assert_allclose(centred(G.egpo_step(P10, theta, log_ref, beta, eta)), centred(full), atol=1e-10)


def test_dno_loss_minimiser_is_the_mwu_step():
    theta = np.log(REF)
    for eta in (0.1, 0.8):  # DNO's η is 1/η_toy
        new = G.dno_step(RPS, theta, eta)
        np.testing.assert_allclose(centred(new), centred(theta + eta * RPS @ REF), atol=1e-10)


def test_apo_without_momentum_is_exactly_mwu_and_with_momentum_extrapolates():
    mwu = G.simulate(RPS, "mwu", beta=0.0, eta=0.1, steps=200, pi0=REF)
    assert np.array_equal(G.simulate(RPS, "apo", beta=0.0, eta=0.1, steps=200, pi0=REF, alpha=0.0), mwu)
    apo = G.simulate(RPS, "apo", beta=0.0, eta=0.1, steps=2, pi0=REF, alpha=0.3)
    theta1 = np.log(REF) + 0.1 * RPS @ REF  # first step: reference = π_0
    hat = theta1 + 0.3 * (theta1 - np.log(REF))
    np.testing.assert_allclose(apo[1], G.softmax(theta1), atol=1e-12)
    np.testing.assert_allclose(apo[2], G.softmax(hat + 0.1 * RPS @ G.softmax(theta1)), atol=1e-12)


def test_inpo_and_omd_trajectories_coincide():
    inpo = G.simulate(RPS, "inpo", beta=0.01, eta=0.8, steps=30, pi_ref=REF)
    np.testing.assert_allclose(inpo, G.simulate(RPS, "omd", beta=0.01, eta=0.8, steps=30, pi_ref=REF), atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Convergence (spec §10.3)


@pytest.mark.parametrize("P, last, average, last_gap, average_gap", [
    (RPS, (0.0007, 0.784, 0.215), (0.3334, 0.3384, 0.3282), 0.78, 0.0052),
    (WRPS, None, (0.1337, 0.2897, 0.5766), 0.29, 0.0045),
])
def test_mwu_last_iterate_cycles_while_its_average_converges(P, last, average, last_gap, average_gap):
    trajectory = G.simulate(P, "mwu", beta=0.0, eta=0.1, steps=10_000, pi0=REF)
    if last is not None:
        np.testing.assert_allclose(trajectory[-1], last, atol=1e-3)
    np.testing.assert_allclose(trajectory.mean(0), average, atol=1e-4)
    assert G.duality_gap(P, trajectory[-1]) == pytest.approx(last_gap, abs=0.01)
    assert G.duality_gap(P, trajectory.mean(0)) == pytest.approx(average_gap, abs=1e-4)
    assert G.duality_gap(P, trajectory[:1001].mean(0)) > G.duality_gap(P, trajectory.mean(0))


def test_egpo_last_iterate_converges_where_omd_and_nash_md_do_not():
    """RPS, β = 0.01, η = 0.8 (ηβ = 0.008): EGPO reaches π* (KL < 1e-8 at t = 253); OMD/INPO and
    Nash-MD drift to the boundary (KL ≈ 0.94 / 0.91 in the spec after 5000 steps)."""
    target = G.nash_equilibrium(RPS, 0.01, REF)
    kls = {alg: kl_to(target, G.simulate(RPS, alg, beta=0.01, eta=0.8, steps=400, pi_ref=REF))
           for alg in ("egpo", "omd", "nash_md")}
    assert kls["egpo"][-1] < 1e-8 and kls["egpo"][-1] < kls["egpo"][100] < kls["egpo"][0]
    assert kls["omd"][-1] > 0.5 and kls["nash_md"][-1] > 0.5


def test_small_steps_omd_and_egpo_converge_and_nash_md_is_biased():
    """RPS, β = 0.1, η = 0.4: KL < 1e-8 at t = 248 (OMD) and 180 (EG); Nash-MD stalls (spec §10.3)."""
    target = G.nash_equilibrium(RPS, 0.1, REF)
    omd, egpo, nash_md = (G.simulate(RPS, alg, beta=0.1, eta=0.4, steps=300, pi_ref=REF)
                          for alg in ("omd", "egpo", "nash_md"))
    assert first_below(kl_to(target, omd), 1e-8) == 248
    assert first_below(kl_to(target, egpo), 1e-8) == 180
    np.testing.assert_allclose(nash_md[-1], (0.2846, 0.4512, 0.2642), atol=1e-4)
    assert G.kl(target, nash_md[-1]) == pytest.approx(3.1e-4, abs=0.1e-4)


@pytest.mark.parametrize("beta, eta, egpo_t", [(0.1, 0.4, 142), (0.01, 0.8, 601)])
def test_egpo_reaches_gap_below_1e_6_on_random_ten_action_games(beta, eta, egpo_t):
    """EGPO's simulation configs (lr = 0.1, 0.02, n = 10 ⇒ η = 4·lr/(nβ)); spec: t = 142 / 601."""
    gaps = [G.duality_gap(P10, pi, beta, REF10)
            for pi in G.simulate(P10, "egpo", beta=beta, eta=eta, steps=egpo_t + 5, pi_ref=REF10)]
    assert first_below(gaps, 1e-6) == egpo_t


def test_omd_fails_on_the_random_game_with_a_large_step():
    gaps = [G.duality_gap(P10, pi, 0.01, REF10) for pi in G.simulate(P10, "omd", beta=0.01, eta=0.8, steps=600,
                                                                      pi_ref=REF10)]
    assert min(gaps[300:]) > 0.1


def test_transitive_control_every_method_converges():
    mwu = G.simulate(BT, "mwu", beta=0.0, eta=0.5, steps=300, pi0=UNIFORM)
    assert mwu[-1, 0] > 1 - 1e-7 and G.duality_gap(BT, mwu[-1]) < 1e-8
    target = G.nash_equilibrium(BT, 0.1)
    for alg in ("omd", "egpo"):
        assert G.kl(target, G.simulate(BT, alg, beta=0.1, eta=0.4, steps=300)[-1]) < 1e-8
    assert G.kl(target, G.simulate(BT, "nash_md", beta=0.1, eta=0.4, steps=300)[-1]) < 1e-6


def test_simulate_rejects_unknown_algorithms_and_missing_regularisation():
    with pytest.raises(ValueError, match="mwu, dno, omd, inpo, nash_md, egpo, apo"):
        G.simulate(RPS, "ppo", beta=0.1, eta=0.1, steps=1)
    with pytest.raises(ValueError, match="beta > 0"):
        G.simulate(RPS, "egpo", beta=0.0, eta=0.1, steps=1)
