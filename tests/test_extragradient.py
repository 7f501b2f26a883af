"""The per-step extragradient routine on a 3-action tabular policy: a softmax over 3 logits as the
"model", exact sampling (the data of a step is the policy's distribution itself), EGPO's online IPO
loss in expectation. Its last iterate must reach the KL-regularised Nash equilibrium."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from selfplay import games
from selfplay.extragradient import extragradient_iteration


def egpo_population_loss(theta: torch.Tensor, mu: torch.Tensor, P: torch.Tensor, log_ref: torch.Tensor,
                         beta: float) -> torch.Tensor:
    """E_{y,y′~μ} (Δ(y) − Δ(y′) − [P(y ≻ μ) − P(y′ ≻ μ)]/β)², Δ = log π_θ − log π_ref (y″ ~ μ: the sampler)."""
    delta = torch.log_softmax(theta, 0) - log_ref
    target = (P @ mu) / beta
    diff = (delta[:, None] - delta[None, :]) - (target[:, None] - target[None, :])
    return (mu[:, None] * mu[None, :] * diff ** 2).sum()


def run_extragradient(P: np.ndarray, pi_ref: np.ndarray, beta: float, lr: float, iterations: int,
                      restore: bool = True) -> np.ndarray:
    P_t, log_ref = torch.tensor(P), torch.tensor(np.log(pi_ref))
    theta = torch.nn.Parameter(log_ref.clone())          # π_0 = π_ref
    opt = torch.optim.SGD([theta], lr=lr)

    def step(mu: torch.Tensor) -> float:
        loss = egpo_population_loss(theta, mu, P_t, log_ref, beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    sample = lambda: torch.softmax(theta.detach(), 0)                             # noqa: E731  exact sampling
    snapshot = lambda: (theta.detach().clone(), opt.state_dict())                  # noqa: E731
    undo = (lambda s: (theta.data.copy_(s[0]), opt.load_state_dict(s[1]))) if restore else (lambda s: None)  # noqa: E731
    for _ in range(iterations):
        extragradient_iteration(sample, step, snapshot, undo)
    return torch.softmax(theta.detach(), 0).numpy()


@pytest.mark.parametrize("game, beta", [(games.rock_paper_scissors(), 0.1), (games.weighted_cycle(), 0.1),
                                        (games.rock_paper_scissors(), 0.01)])
def test_per_step_extragradient_reaches_the_regularised_equilibrium(game, beta):
    pi_ref = np.array([0.6, 0.3, 0.1])
    pi = run_extragradient(game, pi_ref, beta, lr=0.5 * beta, iterations=600)
    star = games.nash_equilibrium(game, beta, pi_ref)
    assert games.duality_gap(game, pi, beta, pi_ref) < 1e-3
    assert np.abs(pi - star).max() < 1e-3


def test_without_the_restore_it_is_two_plain_steps():
    """Dropping the restore makes each iteration two online-IPO steps from the moving iterate: a different
    sequence of policies (on RPS at β = 0.01 plain steps are known not to settle, algorithms.md §10.3)."""
    P, pi_ref, beta = games.rock_paper_scissors(), np.array([0.6, 0.3, 0.1]), 0.01
    eg = run_extragradient(P, pi_ref, beta, lr=0.5 * beta, iterations=600)
    plain = run_extragradient(P, pi_ref, beta, lr=0.5 * beta, iterations=600, restore=False)
    assert games.duality_gap(P, eg, beta, pi_ref) < 1e-3 < games.duality_gap(P, plain, beta, pi_ref)
