"""The round losses on hand-computed cases and extreme inputs (finite values and gradients)."""
import math

import pytest
import torch

from selfplay import losses as L

t = lambda *v: torch.tensor(v, dtype=torch.float64, requires_grad=True)  # noqa: E731


def test_sppo_hand_case():
    """Δc = -1-(-2) = 1, target η(pc-½) = 2·0.25 = 0.5 → (0.5)²; Δr = -3-(-2) = -1, target 2·(-0.25) → (-0.5)²; ½·0.5."""
    out = L.sppo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), torch.tensor([0.75]), torch.tensor([0.25]), 2.0)
    assert out.item() == pytest.approx(0.25)


def test_dpo_ipo_inpo_dno_egpo_hand_cases():
    u = (-1.0 + 2.0) - (-3.0 + 2.0)  # = 2
    assert L.dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), 0.5).item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))
    assert L.ipo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), 0.5).item() == pytest.approx((u - 1.0) ** 2)
    # INPO with τ = 0 is IPO against prev with 1/(2η)
    assert L.inpo_loss(t(-1.0), t(-3.0), t(0.0), t(5.0), t(-2.0), t(-2.0), 0.5, 0.0).item() == pytest.approx((u - 1.0) ** 2)
    assert L.dno_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), 0.5, 1.0).item() == pytest.approx(
        L.dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), 0.5).item())
    assert L.egpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), t(0.7), t(0.2), 0.5).item() == pytest.approx((u - 1.0) ** 2)


def test_cream_edges_and_apo_identity():
    a, b, c, d = t(-1.0), t(-3.0), t(-2.0), t(-2.0)
    full = L.dpo_loss(a, b, c, d, 0.5, L.cream_label_smoothing(1.0))
    assert full.item() == pytest.approx(L.dpo_loss(a, b, c, d, 0.5).item())   # C = 1: plain DPO
    rev = L.dpo_loss(a, b, c, d, 0.5, L.cream_label_smoothing(0.0))
    assert rev.item() == pytest.approx(L.dpo_loss(b, a, d, c, 0.5).item())    # C = 0: labels flipped
    x = torch.tensor([1.0, -2.0])
    assert torch.equal(L.apo_reference(x, torch.tensor([5.0, 7.0]), 0.0), x)


def test_extreme_inputs_stay_finite_with_finite_gradients():
    big = [t(1e4, -1e4), t(-1e4, 1e4), t(0.0, 0.0), t(0.0, 0.0)]
    cases = [
        L.dpo_loss(*big, 1e-3, 0.1), L.ipo_loss(*big, 1e-3), L.dno_loss(*big, 1e-3, 1.0),
        L.sppo_loss(*big, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 1e3),
        L.inpo_loss(*big, t(0.0, 0.0), t(0.0, 0.0), 0.005, 0.005 / 3),
        L.egpo_loss(*big, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 1e-3),
    ]
    for out in cases:
        assert torch.isfinite(out).all()
        g = torch.autograd.grad(out.sum(), big[0], retain_graph=True)[0]
        assert torch.isfinite(g).all()


def test_gradient_signs_favour_the_chosen_response():
    pc = t(-1.0)
    for loss in (L.dpo_loss(pc, t(-1.0), t(-1.0), t(-1.0), 0.1), L.ipo_loss(pc, t(-1.0), t(-1.0), t(-1.0), 0.1)):
        (g,) = torch.autograd.grad(loss.sum(), pc)
        assert g.item() < 0  # raising log π(chosen) lowers the loss


def test_registry_names_valid_losses():
    assert set(L.LOSSES) == {"dpo", "ipo", "sppo", "inpo", "dno", "egpo"}
    with pytest.raises(ValueError, match="choose one of dno, dpo"):
        L.get_loss("ppo")
