"""Tabular preference games: exact, sampling-free checks of the Nash-learning updates.

A game is a matrix P[i, j] = P(i ≻ j) on n actions with P + Pᵀ = 1; a policy is π = softmax(θ).
Every update here is produced by the loss functions of `losses.py` — the ones the LLM trainer
minimises — evaluated with exact expectations over all actions or ordered pairs, so a wrong loss
shows up as a wrong trajectory. Where a step equals a closed form (spec §4.2, §10.1) the tests
check it to 1e-10.

Step convention (spec §10.1): η multiplies the payoff Pπ and β is the KL strength towards π_ref;
the mirror-descent family moves θ ← (1−ηβ)θ + ηβ·θ_ref + η·Pπ_opponent.
All arrays are float64; logits are only defined up to an additive constant.
"""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import torch

from selfplay import losses

Array = np.ndarray

# ---------------------------------------------------------------------------------------------
# Games


def rock_paper_scissors() -> Array:
    """Actions (rock, paper, scissors); a win is certain, a tie is ½. Nash equilibrium uniform."""
    P = np.full((3, 3), 0.5)
    for winner, loser in ((1, 0), (2, 1), (0, 2)):
        P[winner, loser], P[loser, winner] = 1.0, 0.0
    return P


def weighted_cycle(a: float = 0.8, b: float = 0.4, c: float = 0.2) -> Array:
    """P = ½ + A/2 with A = [[0,−a,b],[a,0,−c],[−b,c,0]]; Nash equilibrium ∝ (c, b, a) = (1/7, 2/7, 4/7)."""
    A = np.array([[0.0, -a, b], [a, 0.0, -c], [-b, c, 0.0]])
    return 0.5 + A / 2


def transitive(r: tuple[float, ...] = (1.0, 0.5, 0.0)) -> Array:
    """Bradley–Terry control P_ij = σ(r_i − r_j): no cycle, Nash equilibrium pure on argmax r."""
    r = np.asarray(r, dtype=np.float64)
    return 1 / (1 + np.exp(r[None, :] - r[:, None]))


def _random_draws(n: int, seed: int) -> tuple[Array, Array]:
    # One generator for both, in this order: reproduces the spec §10.3 numbers (EG gap < 1e-6 at t = 142).
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n, n)), rng.normal(size=n)


def random_game(n: int, seed: int) -> Array:
    """EGPO's simulation game: strict lower triangle i.i.d. U(0,1), P_ij = 1 − P_ji, diagonal ½."""
    lower = np.tril(_random_draws(n, seed)[0], -1)
    return lower + np.triu(1 - lower.T, 1) + 0.5 * np.eye(n)


def random_reference(n: int, seed: int) -> Array:
    """π_ref = softmax(N(0,1) logits), drawn after `random_game(n, seed)`'s matrix from the same stream."""
    return softmax(_random_draws(n, seed)[1])


# ---------------------------------------------------------------------------------------------
# Policies and the game's value


def softmax(theta: Array) -> Array:
    z = np.exp(theta - theta.max())
    return z / z.sum()


def kl(p: Array, q: Array) -> float:
    """KL(p‖q) with 0·log 0 = 0."""
    m = p > 0
    return float(np.sum(p[m] * (np.log(p[m]) - np.log(q[m]))))


def _uniform_if_none(pi_ref: Array | None, n: int) -> Array:
    return np.full(n, 1.0 / n) if pi_ref is None else np.asarray(pi_ref, dtype=np.float64)


def game_value(P: Array, pi1: Array, pi2: Array, beta: float, pi_ref: Array) -> float:
    """V(π1, π2) = π1ᵀPπ2 − β·KL(π1‖π_ref) + β·KL(π2‖π_ref) (EGPO code simulations/utils.py)."""
    reg = beta * (kl(pi2, pi_ref) - kl(pi1, pi_ref)) if beta > 0 else 0.0
    return float(pi1 @ P @ pi2) + reg


def best_response(P: Array, pi: Array, beta: float, pi_ref: Array | None = None) -> Array:
    """argmax_q V(q, π): logits θ_ref + Pπ/β, or a pure argmax of Pπ when β = 0."""
    win = P @ pi
    if beta == 0:
        return np.eye(len(pi))[np.argmax(win)]
    return softmax(np.log(_uniform_if_none(pi_ref, len(pi))) + win / beta)


def duality_gap(P: Array, pi: Array, beta: float = 0.0, pi_ref: Array | None = None) -> float:
    """V(BR(π), π) − V(π, BR(π)) ≥ 0, zero exactly at the (regularised) Nash equilibrium.

    The game is symmetric, so one best response serves both players. For β = 0 it is 2·max(Pπ) − 1.
    """
    ref = _uniform_if_none(pi_ref, len(pi))
    br = best_response(P, pi, beta, ref)
    return game_value(P, br, pi, beta, ref) - game_value(P, pi, br, beta, ref)


# ---------------------------------------------------------------------------------------------
# Equilibria (reference solvers, independent of the algorithms under test)


def nash_equilibrium(P: Array, beta: float, pi_ref: Array | None = None) -> Array:
    """Symmetric Nash equilibrium π* of the KL-regularised game (a von Neumann winner when β = 0).

    β > 0: the fixed point θ* = θ_ref + Pπ*/β, by Newton's method with continuation in β (from
    β = 1 down, each solution seeding the next), solved to a residual of 1e-12 relative to θ*.
    Reliable down to β ≈ 1e-5; use β = 0 for the unregularised game.
    """
    if beta == 0:
        return _von_neumann_winner(P)
    log_ref = np.log(_uniform_if_none(pi_ref, len(P)))
    b, ratio = max(beta, 1.0), 4.0
    theta = _fixed_point(P, b, log_ref, log_ref)  # β ≥ 1: the map is a contraction, θ_ref is close
    if theta is None:
        raise RuntimeError(f"Newton failed at beta={b:.3g}")
    while b > beta:
        nb = max(beta, b / ratio)
        guess = log_ref + (theta - log_ref) * b / nb  # keeps π, rescales the payoff term to the new β
        candidate = _fixed_point(P, nb, log_ref, guess)
        if candidate is None:  # too large a jump in β: take smaller ones
            ratio = np.sqrt(ratio)
            if ratio < 1.001:
                raise RuntimeError(f"Newton continuation stalled at beta={b:.3g}")
            continue
        theta, b = candidate, nb
    return softmax(theta)


def _fixed_point(P: Array, beta: float, log_ref: Array, theta: Array, iters: int = 50) -> Array | None:
    """Newton on F(θ) = θ − θ_ref − P softmax(θ)/β with a halving line search; None if it fails."""
    def residual(th: Array) -> Array:
        return th - log_ref - P @ softmax(th) / beta

    f = residual(theta)
    for _ in range(iters):
        if np.abs(f).max() < 1e-12 * max(1.0, np.abs(theta).max()):
            return theta
        pi = softmax(theta)
        # J = I − P(diag π − ππᵀ)/β is never singular: as 1ᵀ(diag π − ππᵀ) = 0 the product equals
        # ½(P − Pᵀ)(diag π − ππᵀ), antisymmetric times PSD, whose eigenvalues are imaginary.
        step = np.linalg.solve(np.eye(len(pi)) - P @ (np.diag(pi) - np.outer(pi, pi)) / beta, -f)
        s = 1.0
        while np.linalg.norm(residual(theta + s * step)) >= np.linalg.norm(f) and s > 1e-3:
            s /= 2
        theta = theta + s * step
        f = residual(theta)
    return None


def _von_neumann_winner(P: Array, tol: float = 1e-12) -> Array:
    """π with max_y (Pπ)_y = ½, by support enumeration (exponential in n; fine for n ≤ ~14).

    On the support S every action earns exactly ½ against π* (the value of a symmetric game with
    P + Pᵀ = 1), so π_S solves P_SS π_S = ½, Σ π_S = 1; the first non-negative solution that no
    action outside S beats is an equilibrium.
    """
    n = len(P)
    for size in range(1, n + 1):
        for S in map(list, itertools.combinations(range(n), size)):
            A = np.vstack([P[np.ix_(S, S)], np.ones(size)])
            sol, *_ = np.linalg.lstsq(A, np.r_[np.full(size, 0.5), 1.0], rcond=None)
            if np.abs(A @ sol - np.r_[np.full(size, 0.5), 1.0]).max() > tol or sol.min() < -tol:
                continue
            pi = np.zeros(n)
            pi[S] = np.clip(sol, 0, None) / np.clip(sol, 0, None).sum()
            if (P @ pi).max() <= 0.5 + 1e-10:
                return pi
    raise RuntimeError("no von Neumann winner found; is P + Pᵀ = 1?")


# ---------------------------------------------------------------------------------------------
# Loss-driven steps. θ is a numpy vector; each step builds the exact population loss in torch.


def _t(x: Array) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _pairs(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All n² ordered pairs (y, y'): y indexes rows, y' columns. The losses are elementwise, so
    these [n, 1] and [1, n] views broadcast to the [n, n] table of per-pair losses."""
    return v[:, None], v[None, :]


def _sgd_step(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: Array, lr: float) -> Array:
    th = _t(theta).requires_grad_()
    (grad,) = torch.autograd.grad(loss_fn(th), th)
    return theta - lr * grad.numpy()


def _newton_step(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: Array) -> Array:
    """θ − H⁺g, gradient and Hessian by autograd. Shifting θ by a constant leaves every loss here
    unchanged, so H is singular along 1; the pseudo-inverse steps in the orthogonal complement."""
    th = _t(theta).requires_grad_()
    (grad,) = torch.autograd.grad(loss_fn(th), th, create_graph=True)
    # all rows of the Hessian at once: a batched vector-Jacobian product of the gradient with I
    (hess,) = torch.autograd.grad(grad, th, torch.eye(len(theta), dtype=torch.float64), is_grads_batched=True)
    return theta - np.linalg.lstsq(hess.detach().numpy(), grad.detach().numpy(), rcond=None)[0]


def sppo_step(P: Array, theta: Array, ref_logits: Array, opponent: Array, eta: float) -> Array:
    """Exact minimiser of the SPPO loss: θ' = ref_logits + η(Pπ_opp − ½).

    Parametrisation: the tabular policy's log-probs are its free scores θ (π = softmax(θ)), i.e.
    the normaliser log Z is a free parameter — the role η/2 plays in SPPO (paper §4.1). The loss
    (1/n)Σ_y (θ_y − ref_y − η(p_y − ½))², each action entering as both "chosen" and "rejected" of
    `sppo_loss` (which regresses responses separately), has Hessian (2/n)·I, so one SGD step with
    lr = n/2 lands on its minimiser from any start. That minimiser is the same for any positive
    sampling weights, so SPPO's y ~ π_t gives the same step. With ref = θ this is MWU: θ + ηPπ.
    """
    win, ref = _t(P @ opponent), _t(ref_logits)
    n = len(theta)
    return _sgd_step(lambda th: losses.sppo_loss(th, th, ref, ref, win, win, eta).mean(), theta, lr=n / 2)


def online_ipo_step(P: Array, theta: Array, log_ref: Array, opponent: Array, beta: float, eta: float) -> Array:
    """One SGD step on EGPO's exact Online IPO 1 loss (spec §4.2), the opponent π_s held fixed:

    L_1 = (1/n²) Σ_{y,y'} egpo_loss(y, y'; pref = (Pπ_s)_y, (Pπ_s)_y'). Its gradient is
    (4/n)(d − mean d) with d = θ − θ_ref − Pπ_s/β, so lr = ηβn/4 gives exactly the OMD step
    (1−ηβ)θ + ηβθ_ref + ηPπ_s.
    """
    n = len(theta)
    win_a, win_b = _pairs(_t(P @ opponent))
    ref_a, ref_b = _pairs(_t(log_ref))

    def loss(th: torch.Tensor) -> torch.Tensor:
        pol_a, pol_b = _pairs(torch.log_softmax(th, 0))
        return losses.egpo_loss(pol_a, pol_b, ref_a, ref_b, win_a, win_b, beta).mean()

    return _sgd_step(loss, theta, lr=eta * beta * n / 4)


def inpo_step(P: Array, theta: Array, log_ref: Array, beta: float, eta: float) -> Array:
    """INPO's iterate π_{t+1} = argmin of its population loss (paper Eq. 8), in toy units.

    Pairs y, y' ~ π_t i.i.d., y preferred with probability P(y ≻ y'), so the exact loss is
    Σ π_t(y)π_t(y')P(y≻y') · inpo_loss(y, y'), with INPO's η = 1/η_toy and τ = β (τ/η = ηβ).
    It is quadratic in θ, so one Newton step reaches the minimiser, which is the OMD step
    (1−ηβ)θ + ηβθ_ref + ηPπ_t (paper Prop. 6).
    """
    pi = softmax(theta)
    weight = _t(np.outer(pi, pi) * P)
    ref_c, ref_r = _pairs(_t(log_ref))
    prev_c, prev_r = _pairs(torch.log_softmax(_t(theta), 0))

    def loss(th: torch.Tensor) -> torch.Tensor:
        pol_c, pol_r = _pairs(torch.log_softmax(th, 0))
        return (weight * losses.inpo_loss(pol_c, pol_r, ref_c, ref_r, prev_c, prev_r, 1 / eta, beta)).sum()

    return _newton_step(loss, theta)


def dno_step(P: Array, theta: Array, eta: float, iters: int = 30) -> Array:
    """DNO Algorithm 1's iterate: argmin over all ordered pairs of `dno_loss` with soft target
    z = σ(r(y) − r(y')), r = Pπ_t, DNO's η = 1/η_toy. Convex but not quadratic: Newton to
    convergence. The minimiser is the MWU step θ + ηPπ_t (spec §3.4)."""
    z = torch.sigmoid(torch.sub(*_pairs(_t(P @ softmax(theta)))))
    prev_a, prev_b = _pairs(torch.log_softmax(_t(theta), 0))

    def loss(th: torch.Tensor) -> torch.Tensor:
        pol_a, pol_b = _pairs(torch.log_softmax(th, 0))
        return losses.dno_loss(pol_a, pol_b, prev_a, prev_b, 1 / eta, z).mean()

    for _ in range(iters):
        new = _newton_step(loss, theta)
        done = np.abs(new - theta).max() < 1e-14 * max(1.0, np.abs(theta).max())
        theta = new
        if done:
            break
    return theta


def mwu_step(P: Array, theta: Array, log_ref: Array, beta: float, eta: float) -> Array:
    """SPPO's ideal update (multiplicative weights): the SPPO loss against π_t itself.
    (All `*_step(P, theta, log_ref, beta, eta)` share one signature; MWU needs no π_ref or β.)"""
    return sppo_step(P, theta, theta, softmax(theta), eta)


def omd_step(P: Array, theta: Array, log_ref: Array, beta: float, eta: float) -> Array:
    """Online mirror descent = EGPO's "Online IPO 1": opponent = the current policy."""
    return online_ipo_step(P, theta, log_ref, softmax(theta), beta, eta)


def nash_md_step(P: Array, theta: Array, log_ref: Array, beta: float, eta: float) -> Array:
    """Nash-MD: an Online IPO step whose opponent is the geometric mixture π_t^{1−ηβ} π_ref^{ηβ},
    which gives θ_m + ηP softmax(θ_m) with θ_m = (1−ηβ)θ + ηβθ_ref (spec §6.1)."""
    mixture = softmax((1 - eta * beta) * theta + eta * beta * log_ref)
    return online_ipo_step(P, theta, log_ref, mixture, beta, eta)


def egpo_step(P: Array, theta: Array, log_ref: Array, beta: float, eta: float) -> Array:
    """EGPO (spec §4.3): a half step against π_t, then the full step from θ_t against π_{t+½}."""
    half = online_ipo_step(P, theta, log_ref, softmax(theta), beta, eta)
    return online_ipo_step(P, theta, log_ref, softmax(half), beta, eta)


def apo_step(P: Array, theta: Array, hat: Array, eta: float, alpha: float) -> tuple[Array, Array]:
    """APO, UNVERIFIED reconstruction (spec §5): SPPO against the extrapolated reference θ̂, then
    θ̂ ← (1+α)θ_new − αθ (`apo_reference`). α = 0 leaves θ̂ = θ, i.e. exactly MWU."""
    new = sppo_step(P, theta, hat, softmax(theta), eta)
    return new, losses.apo_reference(_t(new), _t(theta), alpha).numpy()


_STEPS: dict[str, Callable[[Array, Array, Array, float, float], Array]] = {
    "mwu": mwu_step, "dno": lambda P, th, lr, b, e: dno_step(P, th, e), "omd": omd_step,
    "inpo": inpo_step, "nash_md": nash_md_step, "egpo": egpo_step,
}
ALGORITHMS = (*_STEPS, "apo")
_REGULARISED = ("omd", "inpo", "nash_md", "egpo")


def simulate(P: Array, algorithm: str, *, beta: float, eta: float, steps: int, pi_ref: Array | None = None,
             pi0: Array | None = None, alpha: float = 0.3) -> Array:
    """Run `steps` updates from π0 (default π_ref, default uniform); returns the last iterates, [steps+1, n].

    `beta` is ignored by the unregularised mwu / dno / apo; `alpha` is APO's momentum.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if algorithm in _REGULARISED and beta <= 0:
        raise ValueError(f"{algorithm} needs beta > 0")
    ref = _uniform_if_none(pi_ref, len(P))
    theta = np.log(ref if pi0 is None else np.asarray(pi0, dtype=np.float64))
    log_ref, hat = np.log(ref), theta
    out = [softmax(theta)]
    for _ in range(steps):
        if algorithm == "apo":
            theta, hat = apo_step(P, theta, hat, eta, alpha)
            hat = hat - hat.mean()
        else:
            theta = _STEPS[algorithm](P, theta, log_ref, beta, eta)
        theta = theta - theta.mean()  # softmax-invariant; keeps the logits O(1) over long runs
        out.append(softmax(theta))
    return np.array(out)
