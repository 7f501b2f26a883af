"""selfplay/losses.py: hand-computed 3-example cases, gradient signs, special cases, extremes.

Shared inputs (summed log-probs, B = 3):
    policy_chosen = [-1, -2, -3], ref_chosen = [-2, -2, -2]  ->  Δc = [1, 0, -1]
    policy_rejected = [-2, -1, -1], ref_rejected = [-2, -1, -2]  ->  Δr = [0, 0, 1]
    u = Δc − Δr = [1, 0, -2]
Run: .venv/bin/pytest tests/test_losses.py -q
"""
import math

import pytest
import torch

from selfplay import losses as L


def vec(*v, grad=False):
    return torch.tensor(v, dtype=torch.float64, requires_grad=grad)


def inputs(grad=False):
    """(policy_chosen, policy_rejected, ref_chosen, ref_rejected) of the module docstring."""
    policy = vec(-1.0, -2.0, -3.0, grad=grad), vec(-2.0, -1.0, -1.0, grad=grad)
    return *policy, vec(-2.0, -2.0, -2.0), vec(-2.0, -1.0, -2.0)


def softplus(x):
    return math.log1p(math.exp(x))


def close(out, expected):
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Hand-computed cases


def test_dpo_hand_case():
    """β = 0.5: βu = [0.5, 0, -1]; −logσ(x) = softplus(−x) -> [softplus(−0.5), log 2, softplus(1)].
    With ls = 0.2: 0.8·softplus(−βu) + 0.2·softplus(βu)."""
    close(L.dpo_loss(*inputs(), 0.5), [softplus(-0.5), math.log(2), softplus(1.0)])
    close(L.dpo_loss(*inputs(), 0.5, 0.2),
          [0.8 * softplus(-0.5) + 0.2 * softplus(0.5), math.log(2), 0.8 * softplus(1.0) + 0.2 * softplus(-1.0)])


def test_ipo_hand_case():
    """β = 0.25: 1/(2β) = 2, (u − 2)² = [(−1)², (−2)², (−4)²] = [1, 4, 16]."""
    close(L.ipo_loss(*inputs(), 0.25), [1.0, 4.0, 16.0])


def test_sppo_hand_case():
    """η = 2, p_c = [1, ½, ¾] -> targets η(p − ½) = [1, 0, ½]; p_r = [0, ½, ¼] -> [−1, 0, −½].
    (Δc − t_c)² = [0, 0, 2.25]; (Δr − t_r)² = [1, 0, 2.25]; half the sum = [0.5, 0, 2.25]."""
    out = L.sppo_loss(*inputs(), vec(1.0, 0.5, 0.75), vec(0.0, 0.5, 0.25), 2.0)
    close(out, [0.5, 0.0, 2.25])


def test_inpo_hand_case():
    """η = 0.5, τ = 0.25: τ/η = ½, 1/(2η) = 1. Policy difference (chosen − rejected) = [1, −1, −2];
    ref difference = [0, −1, 0]; prev = [−1, −1, −1] vs [−1, −2, −3] -> difference [0, 1, 2].
    h = [1, −1, −2] − ½[0, −1, 0] − ½[0, 1, 2] = [1, −1, −3]; (h − 1)² = [0, 4, 16]."""
    pc, pr, rc, rr = inputs()
    close(L.inpo_loss(pc, pr, rc, rr, vec(-1.0, -1.0, -1.0), vec(-1.0, -2.0, -3.0), 0.5, 0.25), [0.0, 4.0, 16.0])


def test_dno_hand_case():
    """β = 0.5 against prev = the shared ref: βu = [0.5, 0, −1]; z = [1, ½, ¼].
    z·softplus(−βu) + (1−z)·softplus(βu) = [softplus(−0.5), log 2, ¼·softplus(1) + ¾·softplus(−1)]."""
    out = L.dno_loss(*inputs(), 0.5, vec(1.0, 0.5, 0.25))
    close(out, [softplus(-0.5), math.log(2), 0.25 * softplus(1.0) + 0.75 * softplus(-1.0)])


def test_egpo_hand_case():
    """β = 0.5, pref_a = [0.9, 0.5, 0.2], pref_b = [0.4, 0.5, 0.7] -> (pa − pb)/β = [1, 0, −1];
    (u − target)² = [(1 − 1)², (0 − 0)², (−2 + 1)²] = [0, 0, 1]."""
    close(L.egpo_loss(*inputs(), vec(0.9, 0.5, 0.2), vec(0.4, 0.5, 0.7), 0.5), [0.0, 0.0, 1.0])


def test_apo_reference_and_cream_label_smoothing_hand_cases():
    """α = ½: 1.5·[−1, −2, −3] − 0.5·[−2, −2, −1] = [−0.5, −2, −4].
    CREAM: 1 − C with C = [1, ½, 0] gives [0, ½, 1]."""
    close(L.apo_reference(vec(-1.0, -2.0, -3.0), vec(-2.0, -2.0, -1.0), 0.5), [-0.5, -2.0, -4.0])
    close(L.cream_label_smoothing(vec(1.0, 0.5, 0.0)), [0.0, 0.5, 1.0])


def test_per_example_scalars_equal_per_call_floats():
    """β may be a [B] tensor; each example must then see its own β."""
    betas = (0.5, 0.1, 2.0)
    batched = L.dpo_loss(*inputs(), vec(*betas))
    for i, b in enumerate(betas):
        assert batched[i].item() == pytest.approx(L.dpo_loss(*inputs(), b)[i].item(), abs=1e-14)


# ---------------------------------------------------------------------------------------------
# Gradient signs: lowering the loss must raise log π(chosen) and lower log π(rejected)


@pytest.mark.parametrize("name", ["dpo", "ipo", "dno", "inpo", "egpo", "sppo"])
def test_gradient_signs_favour_the_chosen_response(name):
    pc, pr, rc, rr = inputs(grad=True)  # u = [1, 0, −2], below every target used here
    hi, lo = vec(1.0, 1.0, 1.0), vec(0.0, 0.0, 0.0)
    loss = {
        "dpo": lambda: L.dpo_loss(pc, pr, rc, rr, 0.5),
        "ipo": lambda: L.ipo_loss(pc, pr, rc, rr, 0.1),           # target 5
        "dno": lambda: L.dno_loss(pc, pr, rc, rr, 0.5, 1.0),
        "inpo": lambda: L.inpo_loss(pc, pr, rc, rr, rc, rr, 0.1, 0.05),  # target 5, h = u
        "egpo": lambda: L.egpo_loss(pc, pr, rc, rr, hi, lo, 0.1),  # target 10
        "sppo": lambda: L.sppo_loss(pc, pr, rc, rr, hi, lo, 10.0),  # targets ±5
    }[name]()
    g_chosen, g_rejected = torch.autograd.grad(loss.sum(), (pc, pr))
    assert (g_chosen < 0).all() and (g_rejected > 0).all()


# ---------------------------------------------------------------------------------------------
# Special cases


def test_sppo_hard_labels_are_half_of_trl_sppo_hard():
    """TRL dpo_trainer `sppo_hard`: (a − 1/(2β))² + (b + 1/(2β))², a, b the log-ratios, β = 1/η."""
    pc, pr, rc, rr = inputs()
    eta = 4.0
    a, b, beta = pc - rc, pr - rr, 1 / eta
    trl = (a - 1 / (2 * beta)) ** 2 + (b + 1 / (2 * beta)) ** 2
    ours = L.sppo_loss(pc, pr, rc, rr, torch.ones(3), torch.zeros(3), eta)
    torch.testing.assert_close(ours, 0.5 * trl, rtol=0, atol=1e-12)


def test_dpo_with_half_label_smoothing_ignores_the_order():
    pc, pr, rc, rr = inputs()
    torch.testing.assert_close(L.dpo_loss(pc, pr, rc, rr, 0.5, 0.5), L.dpo_loss(pr, pc, rr, rc, 0.5, 0.5),
                               rtol=0, atol=1e-14)
    assert not torch.allclose(L.dpo_loss(pc, pr, rc, rr, 0.5, 0.1), L.dpo_loss(pr, pc, rr, rc, 0.5, 0.1))


def test_cream_consistency_one_is_dpo_and_zero_flips_the_labels():
    pc, pr, rc, rr = inputs()
    torch.testing.assert_close(L.dpo_loss(pc, pr, rc, rr, 0.5, L.cream_label_smoothing(1.0)),
                               L.dpo_loss(pc, pr, rc, rr, 0.5), rtol=0, atol=1e-14)
    torch.testing.assert_close(L.dpo_loss(pc, pr, rc, rr, 0.5, L.cream_label_smoothing(0.0)),
                               L.dpo_loss(pr, pc, rr, rc, 0.5), rtol=0, atol=1e-14)
    per_example = L.dpo_loss(pc, pr, rc, rr, 0.5, L.cream_label_smoothing(vec(1.0, 0.5, 0.0)))
    assert per_example[0].item() == pytest.approx(L.dpo_loss(pc, pr, rc, rr, 0.5)[0].item(), abs=1e-14)
    assert per_example[2].item() == pytest.approx(L.dpo_loss(pr, pc, rr, rc, 0.5)[2].item(), abs=1e-14)


def test_apo_reference_with_zero_momentum_is_exactly_prev():
    prev = vec(-1.0, -2.5, -30.0)
    assert torch.equal(L.apo_reference(prev, vec(5.0, 7.0, -9.0), 0.0), prev)


def test_dno_with_hard_target_is_dpo_and_inpo_with_tau_zero_is_ipo():
    pc, pr, rc, rr = inputs()
    torch.testing.assert_close(L.dno_loss(pc, pr, rc, rr, 0.5), L.dpo_loss(pc, pr, rc, rr, 0.5), rtol=0, atol=0)
    junk = vec(9.0, -9.0, 3.0)  # the π_ref terms carry weight τ/η = 0
    torch.testing.assert_close(L.inpo_loss(pc, pr, junk, -junk, rc, rr, 0.25, 0.0), L.ipo_loss(pc, pr, rc, rr, 0.25),
                               rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Extremes and registry


def test_extreme_inputs_give_finite_losses_and_gradients():
    """Log-ratios of ±1e4, win rates exactly 0 and 1, β = η⁻¹ = 1e-3."""
    pc, pr = vec(1e4, -1e4, 0.0, grad=True), vec(-1e4, 1e4, 0.0, grad=True)
    rc, rr = vec(-1e4, 1e4, 1e4, grad=True), vec(1e4, -1e4, -1e4, grad=True)
    p1, p0 = vec(1.0, 0.0, 1.0), vec(0.0, 1.0, 0.0)
    outs = [L.dpo_loss(pc, pr, rc, rr, 1e-3, 0.1), L.dpo_loss(pc, pr, rc, rr, 1e3), L.ipo_loss(pc, pr, rc, rr, 1e-3),
            L.sppo_loss(pc, pr, rc, rr, p1, p0, 1e3), L.inpo_loss(pc, pr, rc, rr, rr, rc, 1e-3, 1e-3 / 3),
            L.dno_loss(pc, pr, rc, rr, 1e3, p1), L.egpo_loss(pc, pr, rc, rr, p1, p0, 1e-3)]
    for out in outs:
        assert out.shape == (3,) and torch.isfinite(out).all()
        for g in torch.autograd.grad(out.sum(), (pc, pr, rc, rr), allow_unused=True):
            assert g is None or torch.isfinite(g).all()


# Independent formulas, written out from the papers' equations with plain torch (no selfplay.losses).
# lsig(x) = log σ(x) = −log(1 + e^{−x}); every input below is O(1), so the naive form is exact enough.

def lsig(x):
    return -torch.log1p(torch.exp(-x))


FORMULAS = {   # LOSSES name: (argument names, formula)
    # DPO, arXiv 2305.18290 Eq. 7 (+ conservative label smoothing ls)
    "dpo": (("pc", "pr", "rc", "rr", "beta", "ls"),
            lambda pc, pr, rc, rr, beta, ls: -(1 - ls) * lsig(beta * ((pc - rc) - (pr - rr)))
            - ls * lsig(-beta * ((pc - rc) - (pr - rr)))),
    # IPO, arXiv 2310.12036 Eq. 17: (h − 1/(2τ))²
    "ipo": (("pc", "pr", "rc", "rr", "beta"),
            lambda pc, pr, rc, rr, beta: ((pc - rc) - (pr - rr) - 1 / (2 * beta)) ** 2),
    # SPPO, arXiv 2405.00675 Eq. 4.7 as in its code: ½Σ_{y ∈ {w, l}} (log π/π_t(y) − η(P̂(y ≻ π_t) − ½))²
    "sppo": (("pc", "pr", "rc", "rr", "wc", "wr", "eta"),
             lambda pc, pr, rc, rr, wc, wr, eta: ((pc - rc - eta * (wc - 0.5)) ** 2
                                                  + (pr - rr - eta * (wr - 0.5)) ** 2) / 2),
    # INPO, arXiv 2407.00617 Algorithm 1 / Eq. 8: (h − 1/(2η))², reference π_ref^{τ/η} π_t^{1−τ/η}
    "inpo": (("pc", "pr", "rc", "rr", "vc", "vr", "eta", "tau"),
             lambda pc, pr, rc, rr, vc, vr, eta, tau: ((pc - pr) - tau / eta * (rc - rr)
                                                       - (1 - tau / eta) * (vc - vr) - 1 / (2 * eta)) ** 2),
    # DNO, arXiv 2404.03715 Eq. 12 (soft target z) against π_t
    "dno": (("pc", "pr", "vc", "vr", "beta", "z"),
            lambda pc, pr, vc, vr, beta, z: -z * lsig(beta * ((pc - vc) - (pr - vr)))
            - (1 - z) * lsig(-beta * ((pc - vc) - (pr - vr)))),
    # EGPO's online IPO loss (code simulations/loss_funcs.py): (h_ref(y, y') − (P(y ≻ y″) − P(y' ≻ y″))/β)²
    "egpo": (("pc", "pr", "rc", "rr", "wc", "wr", "beta"),
             lambda pc, pr, rc, rr, wc, wr, beta: ((pc - rc) - (pr - rr) - (wc - wr) / beta) ** 2),
    # Nash-MD-PG, arXiv 2312.00886 in TRL's form (notes §6.2), sequence-level KL: its value is
    # [β(log π_θ(y) − log π_ref(y)) − (P(y ≻ y′) − ½)]·log π_θ(y) (the stop-gradient only changes ∇)
    "nash_md": (("pc", "rc", "wc", "beta"),
                lambda pc, rc, wc, beta: (beta * (pc - rc) - (wc - 0.5)) * pc),
}


def batch(seed=0, b=5):
    g = torch.Generator().manual_seed(seed)
    logp = lambda: -1 - 4 * torch.rand(b, generator=g, dtype=torch.float64)  # noqa: E731
    prob = lambda: torch.rand(b, generator=g, dtype=torch.float64)           # noqa: E731
    return {"pc": logp(), "pr": logp(), "rc": logp(), "rr": logp(), "vc": logp(), "vr": logp(), "oc": logp(),
            "or": logp(), "wc": prob(), "wr": prob(), "z": prob()}


def test_every_registered_loss_equals_its_paper_formula():
    x = batch()
    scalars = {"beta": 0.35, "eta": 1.7, "tau": 0.4, "ls": 0.15}
    assert set(L.LOSSES) == set(FORMULAS), "a registered loss has no independent formula here"
    for name, (args, formula) in FORMULAS.items():
        vals = [x.get(a, scalars.get(a)) for a in args]
        got = L.get_loss(name)(*vals)
        torch.testing.assert_close(got, formula(*vals), rtol=0, atol=1e-12, msg=name)


# Each round algorithm: the reference names it reads and its loss, from the paper, on PairTensors whose
# references all differ ("previous" = π_t, "initial" = π_ref, "previous2" = π_{t−1}).
def _dpo(pc, pr, rc, rr, beta, ls):
    return FORMULAS["dpo"][1](pc, pr, rc, rr, beta, ls)


def _sppo(pc, pr, rc, rr, wc, wr, eta):
    return FORMULAS["sppo"][1](pc, pr, rc, rr, wc, wr, eta)


ALGORITHM_FORMULAS = {   # name: (references read, formula of (x, loss config))
    "sppo": (("previous",), lambda x, c: _sppo(x["pc"], x["pr"], x["vc"], x["vr"], x["wc"], x["wr"], c.eta)),
    "inpo": (("initial", "previous"),
             lambda x, c: FORMULAS["inpo"][1](x["pc"], x["pr"], x["rc"], x["rr"], x["vc"], x["vr"], c.eta, c.tau)),
    "dno": (("previous",), lambda x, c: FORMULAS["dno"][1](x["pc"], x["pr"], x["vc"], x["vr"], c.beta, x["z"])),
    "egpo": (("initial",),
             lambda x, c: FORMULAS["egpo"][1](x["pc"], x["pr"], x["rc"], x["rr"], x["wc"], x["wr"], c.beta)),
    # the online batch's first sequence is y ~ π_θ, its win rate P(y ≻ y′) against the mixture sample
    "nash_md": (("initial",), lambda x, c: FORMULAS["nash_md"][1](x["pc"], x["rc"], x["wc"], c.beta)),
    # iterative DPO against π_t; CREAM's consistency C (the pair's target) softens the label: ls = 1 − C(1 − ls₀)
    "dpo": (("previous",),
            lambda x, c: _dpo(x["pc"], x["pr"], x["vc"], x["vr"], c.beta, 1 - x["z"] * (1 - c.label_smoothing))),
    "ipo": (("previous",), lambda x, c: FORMULAS["ipo"][1](x["pc"], x["pr"], x["vc"], x["vr"], c.beta)),
    # APO (reconstruction): the base loss against log π̂ = (1+α) log π_t − α log π_{t−1}
    "apo": (("previous", "previous2"),
            lambda x, c: (_dpo(x["pc"], x["pr"], (1 + c.alpha) * x["vc"] - c.alpha * x["oc"],
                               (1 + c.alpha) * x["vr"] - c.alpha * x["or"], c.beta,
                               1 - x["z"] * (1 - c.label_smoothing)) if c.apo_base == "dpo" else
                          _sppo(x["pc"], x["pr"], (1 + c.alpha) * x["vc"] - c.alpha * x["oc"],
                                (1 + c.alpha) * x["vr"] - c.alpha * x["or"], x["wc"], x["wr"], c.eta))),
}


@pytest.mark.parametrize("apo_base", ["sppo", "dpo"])
def test_every_registered_algorithm_loss_equals_its_paper_formula(apo_base):
    from selfplay.algorithms import ALGORITHMS, PairTensors
    from selfplay.config import LossConfig
    x = batch(1)
    cfg = LossConfig(eta=1.7, beta=0.35, tau=0.4, alpha=0.3, apo_base=apo_base, label_smoothing=0.15)
    # the algorithms written out here; any other registered one is held against the formula declared beside it
    # (test_every_registered_algorithm_loss_equals_its_declared_reference)
    assert set(ALGORITHM_FORMULAS) <= set(ALGORITHMS), "a formula here names no registered algorithm"
    every = {"previous": (x["vc"], x["vr"]), "initial": (x["rc"], x["rr"]), "previous2": (x["oc"], x["or"])}
    for name, (refs, formula) in ALGORITHM_FORMULAS.items():
        algo = ALGORITHMS[name]
        assert tuple(algo.references) == refs, name
        # only the references the algorithm declares are present: reading any other one raises KeyError
        t = PairTensors(x["pc"], x["pr"], {k: every[k] for k in refs}, x["wc"], x["wr"], x["z"])
        torch.testing.assert_close(algo.loss(t, cfg), formula(x, cfg), rtol=0, atol=1e-12, msg=name)
        # and the formula the algorithm declares beside it is this one
        torch.testing.assert_close(algo.reference(t, cfg), formula(x, cfg), rtol=0, atol=1e-12, msg=name)


def _registered():
    from selfplay.algorithms import ALGORITHMS
    return sorted(ALGORITHMS)


@pytest.mark.parametrize("name", _registered())
@pytest.mark.parametrize("apo_base", ["sppo", "dpo"])
def test_every_registered_algorithm_loss_equals_its_declared_reference(name, apo_base, monkeypatch):
    """Whatever the registry holds (a new module is covered with no edit here): its loss on random log-probs, with
    only its declared references present, equals the paper's formula declared beside it (Algorithm.reference),
    which is computed with every function of selfplay.losses made to fail, so it cannot be the loss itself."""
    from selfplay.algorithms import ALGORITHMS, PairTensors
    from selfplay.config import LossConfig
    algo, x = ALGORITHMS[name], batch(2)
    cfg = LossConfig(eta=1.7, beta=0.35, tau=0.4, alpha=0.3, apo_base=apo_base, label_smoothing=0.15)
    every = {"previous": (x["vc"], x["vr"]), "initial": (x["rc"], x["rr"]), "previous2": (x["oc"], x["or"])}
    t = PairTensors(x["pc"], x["pr"], {k: every[k] for k in algo.references}, x["wc"], x["wr"], x["z"])
    got = algo.loss(t, cfg)
    for fn in [n for n in vars(L) if n.endswith("_loss") or n in ("apo_reference", "cream_label_smoothing")]:
        monkeypatch.setattr(L, fn, _forbidden)
    want = algo.reference(t, cfg)
    assert got.shape == want.shape == x["pc"].shape and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=name)


def _forbidden(*args, **kwargs):
    raise AssertionError("an algorithm's reference formula must not call selfplay.losses")


def test_unknown_loss_names_are_rejected():
    assert L.get_loss("egpo") is L.LOSSES["egpo"]
    with pytest.raises(ValueError, match="'ppo'.*dno, dpo, egpo, inpo, ipo, nash_md, sppo"):
        L.get_loss("ppo")
