"""Nash-MD (arXiv 2312.00886): the Nash-MD-PG loss on hand numbers, its tabular step against the closed
form and its last-iterate convergence to the regularised Nash equilibrium, the per-token geometric
mixture sampler, the pair rule, the config rules, and a short online update on the arena's tiny policy.
Run: .venv/bin/pytest tests/test_nash_md.py -q
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from selfplay import games as G
from selfplay import losses
from pipelines.config import load_config
from selfplay.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RPS, WRPS = G.rock_paper_scissors(), G.weighted_cycle()
REF = np.array([0.6, 0.3, 0.1])   # π_ref = π_0 of the notes' §10.3


# ---------------------------------------------------------------------------------------------
# The loss


def test_loss_hand_values_and_gradient_direction():
    """The docstring's numbers: log π_θ(y) = −2, log π_ref(y) = −2.5, β = 0.1 (β·Δ = 0.05).
    P = 0.8: L = (0.05 − 0.3)·(−2) = 0.5, ∂L/∂log π_θ = −0.25; P = 0.2: L = −0.7, ∂L/∂log π_θ = +0.35.
    The KL factor is a constant in the gradient (stop-gradient): not β·Δ + β·log π_θ."""
    policy = torch.tensor([-2.0, -2.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-2.5, -2.5], dtype=torch.float64, requires_grad=True)
    pref = torch.tensor([0.8, 0.2], dtype=torch.float64)
    out = losses.nash_md_loss(policy, ref, pref, 0.1)
    torch.testing.assert_close(out, torch.tensor([0.5, -0.7], dtype=torch.float64), rtol=0, atol=1e-12)
    out.sum().backward()
    torch.testing.assert_close(policy.grad, torch.tensor([-0.25, 0.35], dtype=torch.float64), rtol=0, atol=1e-12)
    assert ref.grad is None   # π_ref is frozen: nothing flows into it
    # a descent step raises the winner's log-prob and lowers the loser's ...
    assert policy.grad[0] < 0 < policy.grad[1]
    # ... and once the log-ratio is large, the KL term outweighs a win: β·Δ = 0.1·4 = 0.4 > P − ½ = 0.3
    far = torch.tensor([-2.0], dtype=torch.float64, requires_grad=True)
    losses.nash_md_loss(far, torch.tensor([-6.0], dtype=torch.float64), torch.tensor([0.8]), 0.1).sum().backward()
    assert far.grad.item() == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------
# Tabular: the loss's exact expectation on a 3-action game


def mixture(theta, log_ref, beta, eta):
    """π_t^{1−ηβ} π_ref^{ηβ}: Nash-MD's opponent (notes §6.1)."""
    return G.softmax((1 - eta * beta) * theta + eta * beta * log_ref)


def population_loss(th: torch.Tensor, P, log_ref, mu, beta) -> torch.Tensor:
    """E_{y ~ π_θ, y′ ~ μ} nash_md_loss(y, y′): the sampling weight π_θ(y) is a constant of the surrogate
    (REINFORCE differentiates log π_θ(y) only), so the exact expectation weights each (y, y′) by
    sg(π_θ(y))·μ(y′)."""
    logp = torch.log_softmax(th, 0)
    weight = torch.exp(logp).detach()[:, None] * torch.as_tensor(mu)[None, :]
    per = losses.nash_md_loss(logp[:, None], torch.as_tensor(log_ref)[:, None], torch.as_tensor(P), beta)
    return (weight * per).sum()


def nash_md_pg_step(P, theta, log_ref, beta, eta):
    """One natural-gradient step of size η on the exact Nash-MD-PG loss, opponent = the mixture with
    m = ηβ. The softmax's Fisher F = diag π − ππᵀ is the KL geometry of mirror descent; F·1 = 0, so
    F⁺ steps in the complement of the (irrelevant) constant direction."""
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(population_loss(th, P, log_ref, mixture(theta, log_ref, beta, eta), beta), th)
    pi = G.softmax(theta)
    return theta - eta * np.linalg.pinv(np.diag(pi) - np.outer(pi, pi)) @ grad.numpy()


def centred(x):
    return x - x.mean()


@pytest.mark.parametrize("P", [RPS, WRPS], ids=["rps", "wrps"])
def test_expected_loss_gradient_is_minus_the_regularised_objectives(P):
    """∇E[L] = −∇_θ[π_θᵀPμ − β·KL(π_θ‖π_ref)] with μ held fixed: the loss estimates the ascent
    direction of Nash-MD-PG's objective, KL estimator included."""
    rng = np.random.default_rng(0)
    theta, log_ref, beta = rng.normal(size=3), np.log(REF), 0.3
    mu = mixture(theta, log_ref, beta, 0.5)
    th = torch.tensor(theta, requires_grad=True)
    (g_loss,) = torch.autograd.grad(population_loss(th, P, log_ref, mu, beta), th)
    th2 = torch.tensor(theta, requires_grad=True)
    pi, lp = torch.softmax(th2, 0), torch.log_softmax(th2, 0)
    objective = pi @ torch.as_tensor(P) @ torch.as_tensor(mu) - beta * (pi * (lp - torch.as_tensor(log_ref))).sum()
    (g_obj,) = torch.autograd.grad(objective, th2)
    torch.testing.assert_close(g_loss, -g_obj, rtol=0, atol=1e-12)
    assert g_loss.abs().max() > 1e-3   # a real gradient, not two zeros


@pytest.mark.parametrize("P", [RPS, WRPS], ids=["rps", "wrps"])
@pytest.mark.parametrize("beta, eta", [(0.1, 0.4), (0.01, 0.8), (0.5, 1.5)])
def test_one_step_equals_the_closed_form_nash_md_step(P, beta, eta):
    """Natural-gradient step on the loss = games.nash_md_step = θ_m + ηP softmax(θ_m), θ_m = (1−ηβ)θ + ηβθ_ref,
    i.e. π_{t+1} ∝ μ_t exp(ηP(· ≻ μ_t)), the paper's Nash-MD step (notes §6.1)."""
    rng = np.random.default_rng(1)
    log_ref = np.log(REF)
    for _ in range(3):
        theta = rng.normal(size=3)
        new = nash_md_pg_step(P, theta, log_ref, beta, eta)
        np.testing.assert_allclose(centred(new), centred(G.nash_md_step(P, theta, log_ref, beta, eta)), atol=1e-10)
        m = (1 - eta * beta) * theta + eta * beta * log_ref
        np.testing.assert_allclose(G.softmax(new), G.softmax(m + eta * P @ G.softmax(m)), atol=1e-12)
        assert np.abs(G.softmax(new) - G.softmax(theta)).max() > 1e-3   # the step moves the policy


def regularised_nash_by_extragradient(P, beta, ref):
    """π* of the β-regularised game as the notes' §10.1 solve it: EG with η = 1/(β + 2 max P) to 1e-14."""
    eta, log_ref = 1 / (beta + 2 * P.max()), np.log(ref)
    theta = log_ref.copy()
    for _ in range(200_000):
        half = (1 - eta * beta) * theta + eta * beta * log_ref + eta * P @ G.softmax(theta)
        new = (1 - eta * beta) * theta + eta * beta * log_ref + eta * P @ G.softmax(half)
        new -= new.mean()
        if np.abs(new - theta).max() < 1e-14:
            return G.softmax(new)
        theta = new
    raise AssertionError("extragradient did not reach 1e-14")


def run(P, beta, etas):
    theta, log_ref, kls = np.log(REF), np.log(REF), []
    star = regularised_nash_by_extragradient(P, beta, REF)
    for eta in etas:
        theta = centred(nash_md_pg_step(P, theta, log_ref, beta, eta))
        kls.append(G.kl(star, G.softmax(theta)))
    return np.array(kls)


@pytest.mark.parametrize("P, star, plateau", [
    (RPS, (0.2958, 0.4442, 0.2600), 3.1e-4),   # notes §10.3: π* at β = 0.1, Nash-MD's constant-step KL
    (WRPS, (0.1249, 0.6350, 0.2401), 2.5e-4),
], ids=["rps", "wrps"])
def test_last_iterate_converges_to_the_regularised_nash_with_a_decreasing_step(P, star, plateau):
    """β = 0.1, π_0 = π_ref = (0.6, 0.3, 0.1). With η_t = 2/(β(t+3)) (so η_0β = 2/3 and ηβ → 0) the
    LAST iterate's KL(π*‖π_t) falls at every checkpoint to < 1e-6; with the constant η = 0.4 it stalls at
    the notes' biased fixed point (KL ≈ 3e-4): the step must decrease for the bias to vanish."""
    beta, T = 0.1, 2000
    pi_star = regularised_nash_by_extragradient(P, beta, REF)
    np.testing.assert_allclose(pi_star, star, atol=1e-4)
    np.testing.assert_allclose(pi_star, G.nash_equilibrium(P, beta, REF), atol=1e-10)
    decreasing = run(P, beta, [2 / (beta * (t + 3)) for t in range(T)])
    checkpoints = decreasing[[99, 249, 499, 999, T - 1]]
    assert np.all(np.diff(checkpoints) < 0), checkpoints
    assert checkpoints[-1] < 1e-6
    assert checkpoints[2] / checkpoints[-1] > 8     # 4× the steps, > 8× closer: faster than 1/t^1.5
    constant = run(P, beta, [0.4] * 500)
    assert constant[-1] == pytest.approx(plateau, rel=0.05)
    assert abs(constant[-1] - constant[-100]) < 1e-3 * constant[-1]   # settled there, not slowly progressing
    assert constant[-1] > 100 * decreasing[-1]


# ---------------------------------------------------------------------------------------------
# The per-token geometric mixture sampler


@pytest.fixture(scope="module")
def two_models():
    """The arena's tiny policy with its final norm scaled ×4 (logits ×4: a few first tokens carry most
    of the mass, so a modest sample resolves them), and a reference that differs from it: the same with
    its (tied) embeddings perturbed."""
    from selfplay.data import resolve_builtin
    from selfplay.trainer import load_policy
    tok, policy = load_policy(str(Path(resolve_builtin("builtin:arena")).resolve()))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        policy.model.norm.weight.mul_(4.0)
        ref = copy.deepcopy(policy)
        emb = ref.get_input_embeddings().weight
        emb.add_(emb.std() * torch.randn(emb.shape, generator=g))
    return tok, policy.eval(), ref.eval()


def first_token_logprobs(model, tok, prompt: str) -> torch.Tensor:
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1)


def test_first_token_distribution_is_the_normalised_geometric_mixture(two_models):
    """Explicitly: q ∝ π_θ^{1/2} π_ref^{1/2} over the vocabulary for the first response token. On the
    tokens with q > 0.02 (14 of them, ~84% of the mass), 1500 one-token samples of sample_mixture (m = ½)
    give Pearson's Σ N(f − q)²/q below 45 (χ² with ~14 degrees of freedom exceeds 45 with p ≈ 4e-5),
    while the same statistic for π_θ's and π_ref's own first-token distributions (expected 1355 and
    2900 at this N) is far above it: the check tells the mixture from either end."""
    from selfplay.generation import Request, SamplingSpec
    from selfplay.mixture import mixture_logprobs, sample_mixture
    tok, policy, ref = two_models
    prompt, m, n = "Tell me about the ocean.", 0.5, 1500
    lp_pol, lp_ref = first_token_logprobs(policy, tok, prompt), first_token_logprobs(ref, tok, prompt)
    explicit = torch.softmax(0.5 * lp_pol + 0.5 * lp_ref, -1)
    torch.testing.assert_close(mixture_logprobs(lp_pol, lp_ref, m).exp(), explicit, rtol=0, atol=1e-12)
    reqs = [Request(prompt, seed) for seed in range(n)]
    out = sample_mixture(policy, ref, tok, reqs, SamplingSpec(1, max_new_tokens=1), m, batch_size=750)
    counts = torch.zeros_like(explicit)
    for (c,) in out:
        ids = tok(c.text, add_special_tokens=False).input_ids if c.text else [tok.eos_token_id]
        counts[ids[0]] += 1
    freq, likely = counts / n, explicit > 0.02
    assert likely.sum() >= 10 and explicit[likely].sum() > 0.8
    pearson = lambda p: float((n * (freq - p)[likely] ** 2 / p[likely]).sum())  # noqa: E731
    assert pearson(explicit) < 45
    assert pearson(lp_pol.exp()) > 200 and pearson(lp_ref.exp()) > 200


def test_mixture_endpoints_are_the_policy_and_the_reference_token_for_token(two_models):
    """m = 0 reproduces sample_live's samples from π_θ, m = 1 those from π_ref, with the same seeds:
    same decoding (KV caches, left padding, end of turn), whatever the batch size."""
    from selfplay.generation import Request, SamplingSpec
    from selfplay.hf_backend import sample_live
    from selfplay.mixture import sample_mixture
    tok, policy, ref = two_models
    reqs = [Request(f"Tell me about the {t}, please.", 10 + i) for i, t in enumerate(["ocean", "city", "forest music"])]
    for spec in (SamplingSpec(2, max_new_tokens=12), SamplingSpec(2, 0.7, 0.9, 12, 5)):
        mine, theirs = sample_live(policy, tok, reqs, spec, 4), sample_live(ref, tok, reqs, spec, 4)
        assert sample_mixture(policy, ref, tok, reqs, spec, 0.0, batch_size=3) == mine
        assert sample_mixture(policy, ref, tok, reqs, spec, 1.0, batch_size=5) == theirs
        assert mine != theirs and any(c.n_tokens > 3 for row in mine for c in row)


def test_lora_reference_is_the_base_with_adapters_disabled(two_models):
    """With LoRA the reference is the live peft model under disable_adapter: m = 1 samples the base."""
    from peft import LoraConfig, get_peft_model

    from selfplay.generation import Request, SamplingSpec
    from selfplay.hf_backend import sample_live
    from selfplay.mixture import sample_mixture
    tok, policy, _ = two_models
    base = copy.deepcopy(policy)
    peft = get_peft_model(copy.deepcopy(policy), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                            init_lora_weights=False))
    reqs, spec = [Request("Describe the forest.", 5), Request("Tell me about music.", 6)], SamplingSpec(3, max_new_tokens=10)
    assert sample_mixture(peft, peft, tok, reqs, spec, 1.0, reference_mode=peft.disable_adapter) == \
        sample_live(base, tok, reqs, spec)
    assert sample_mixture(peft, peft, tok, reqs, spec, 0.0, reference_mode=peft.disable_adapter) != \
        sample_live(base, tok, reqs, spec)   # the adapters do change the policy


# ---------------------------------------------------------------------------------------------
# Pair rule, judge comparisons, config


def test_stage_pairs_are_consecutive_samples_preferred_first():
    from selfplay.algorithms import PairContext, get_algorithm, nash_md
    from selfplay.records import JudgedPrompt
    nan = float("nan")
    m = np.full((5, 5), nan)
    np.fill_diagonal(m, 0.5)
    m[0, 1], m[1, 0], m[2, 3], m[3, 2] = 0.3, 0.7, 0.5, 0.5
    asked = ~np.isnan(m)
    assert nash_md.consecutive_pairs(np.full((5, 5), nan), np.eye(5, dtype=bool)) == [(0, 1), (2, 3)]
    assert nash_md.consecutive_pairs(m, asked) == []
    jp = JudgedPrompt("p", "Describe the ocean.", [f"r{i}" for i in range(5)], [1] * 5, m.tolist(), "t")
    a, b = get_algorithm("nash_md").make_pairs([jp], PairContext(round=2, loss=None))
    assert (a.chosen, a.rejected, a.chosen_winrate, a.rejected_winrate, a.round) == ("r1", "r0", 0.7, pytest.approx(0.3), 2)
    assert (b.chosen_idx, b.rejected_idx, b.chosen_winrate) == (2, 3, 0.5)     # a tie is kept: its prompt is needed
    m[0, 1] = m[1, 0] = nan
    jp = dataclasses.replace(jp, matrix=m.tolist())
    assert len(get_algorithm("nash_md").make_pairs([jp], PairContext(round=2, loss=None))) == 1   # abstention dropped


def test_config_rules():
    cfg = load_config(ROOT / "configs/arena_nash_md.yaml")
    assert (cfg.algorithm, cfg.loss.mixture_coef, cfg.train.epochs) == ("nash_md", 0.125, 1)
    assert load_config(ROOT / "configs/arena_nash_md.yaml", ["loss.mixture_coef=0.5"]).loss.mixture_coef == 0.5
    for overrides, message in [
        (["loss.mixture_coef=1.5"], "loss.mixture_coef: must be in [0, 1]"),
        (["train.epochs=2"], "train.epochs=2: algorithm nash_md's online update"),
        (["train.strategy=fsdp"], "algorithm nash_md samples from the trainer's own weights"),
        (["loss.eta=3"], "loss.eta=3.0 has no effect with algorithm nash_md"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
            load_config(ROOT / "configs/arena_nash_md.yaml", overrides)
    with pytest.raises(ConfigError, match=r"loss\.mixture_coef=0\.5 has no effect with algorithm egpo"):
        load_config(ROOT / "configs/arena_egpo.yaml", ["loss.mixture_coef=0.5"])
    with pytest.raises(ConfigError, match="train.steps_per_round=3 has no effect with algorithm sppo: only egpo, nash_md read it"):
        load_config(ROOT / "configs/arena_sppo.yaml", ["train.steps_per_round=3"])


def test_each_step_samples_y_from_the_policy_and_y_prime_from_the_configured_mixture(monkeypatch):
    """generation.{temperature, top_p, top_k} reach y's sampler; opponent_{temperature, top_k} and
    loss.mixture_coef reach the mixture sampler, whose reference is the worker's frozen "initial"."""
    from selfplay import hf_backend, mixture
    from selfplay.algorithms import nash_md
    from selfplay.generation import Completion

    seen = {}

    def fake_live(model, tok, requests, spec, batch_size):
        seen["live"] = (model, spec)
        return [[Completion("y", 1, True)] for _ in requests]

    def fake_mixture(policy, reference, tok, requests, spec, coef, batch_size, mode):
        seen["mixture"] = (policy, reference, spec, coef, mode)
        return [[Completion("y2", 1, True)] for _ in requests]

    class W:
        device, tok = "cpu", None

        def live_model(self):
            return "live"

        def frozen_model(self, name):
            return f"frozen {name}", "mode"

    class Judge:
        def compare(self, prompts, a, b):
            assert (a, b) == (["y", "y"], ["y2", "y2"])
            return np.array([0.9, float("nan")])

    monkeypatch.setattr(hf_backend, "sample_live", fake_live)
    monkeypatch.setattr(mixture, "sample_mixture", fake_mixture)
    cfg = load_config(ROOT / "configs/arena_nash_md.yaml", [
        "generation.temperature=0.9", "generation.top_k=7", "generation.opponent_temperature=0.6",
        "generation.opponent_top_k=3", "loss.mixture_coef=0.3"])
    pairs = nash_md.sampled_pairs(W(), [("p0", "Tell me about the ocean."), ("p1", "Describe a city.")], Judge(), cfg,
                                  0, "t", 4)
    model, spec = seen["live"]
    assert (model, spec.n, spec.temperature, spec.top_k) == ("live", 1, 0.9, 7)
    policy, reference, spec, coef, mode = seen["mixture"]
    assert (policy, reference, mode, spec.temperature, spec.top_k, coef) == ("live", "frozen initial", "mode", 0.6, 3, 0.3)
    [p] = pairs   # the abstained prompt is dropped
    assert (p.prompt_id, p.chosen, p.rejected, p.chosen_winrate, p.target, p.round) == ("p0", "y", "y2", 0.9, 0.9, 4)
    assert p.rejected_winrate == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------
# A short online update on the arena's tiny policy, judged by the oracle


class Recording:
    """The oracle, recording every (prompt, y, P_oracle(y ≻ y′)) it is asked; `invert` answers 1 − P."""

    def __init__(self, oracle, invert: bool):
        self.oracle, self.invert, self.seen = oracle, invert, []

    def compare(self, prompts, a, b):
        p = self.oracle.compare(prompts, a, b)
        self.seen += list(zip(prompts, a, p))
        return 1 - p if self.invert else p

    def close(self):   # the judge protocol's (judges/base.py): the update closes its judge
        self.closed = True


@pytest.fixture(scope="module")
def arena_policy() -> str:
    from selfplay.data import resolve_builtin
    return str(Path(resolve_builtin("builtin:arena")).resolve())


def _update(policy: str, out: Path, invert: bool) -> tuple[object, list]:
    """Three Nash-MD steps of 16 fresh (y, y′) on ocean/forest/city/music prompts, through train_policy."""
    from judges.registry import JudgeContext
    from pipelines.stages import trainer_judge
    from selfplay.config import ActorResources, Config, GenerationConfig, LossConfig, ModelConfig, ResourcesConfig, TrainConfig
    from selfplay.distributed import train_policy
    from selfplay.records import PreferencePair
    cfg = Config(algorithm="nash_md", model=ModelConfig(policy=policy, max_length=64),
                 generation=GenerationConfig(k=2, max_new_tokens=8, batch_size=32), loss=LossConfig(beta=0.02),
                 train=TrainConfig(lr=1e-3, epochs=1, batch_size=16, optimizer="adamw", schedule="constant",
                                   warmup_ratio=0.0, steps_per_round=3),
                 resources=ResourcesConfig(trainer=ActorResources(num_cpus=1, num_gpus=0)))
    topics = ["ocean", "forest", "city", "music"]
    prompts = [PreferencePair(prompt=f"Tell me about the {topics[i % 4]}.", chosen="", rejected="", prompt_id=str(i),
                              chosen_winrate=0.5, rejected_winrate=0.5) for i in range(16)]
    judges = []

    def make_judge():
        judges.append(Recording(trainer_judge(cfg=cfg, judge_ctx=JudgeContext()), invert))
        return judges[-1]

    res = train_policy(policy, out, prompts, {"initial": policy}, cfg, seed=3, round_=1, make_judge=make_judge)
    return res, judges[0].seen


def _logprob_change(before: str, after: Path, seen: list) -> tuple[np.ndarray, np.ndarray]:
    """(P_oracle(y ≻ y′), log π_after(y) − log π_before(y)) for every y the update sampled."""
    from selfplay.logprobs import sequence_logprobs
    from selfplay.trainer import load_policy
    lps = []
    for path in (before, after):
        tok, model = load_policy(str(path))
        with torch.no_grad():
            lps.append(sequence_logprobs(model, tok, [x[0] for x in seen], [x[1] for x in seen]).numpy())
    return np.array([x[2] for x in seen]), lps[1] - lps[0]


def test_a_short_online_update_moves_towards_what_the_judge_prefers(arena_policy, tmp_path):
    """Over the 48 responses y the update sampled and trained on, the oracle's winners (P(y ≻ y′) > ½)
    gain log-probability relative to its losers, and E[(P − ½)·Δlog π(y)] > 0; with the same oracle
    inverted the same statistics flip sign. (Measured: +0.43 and a 3.4-nat gap; −0.46 and −3.2.)
    So the weights move the way the judge points, whichever way that is."""
    res, seen = _update(arena_policy, tmp_path / "oracle", invert=False)
    res_inv, seen_inv = _update(arena_policy, tmp_path / "inverted", invert=True)
    assert (res.steps, res.pairs, len(seen)) == (3, 48, 48) and res_inv.steps == 3
    for out, sample, sign in ((tmp_path / "oracle", seen, 1), (tmp_path / "inverted", seen_inv, -1)):
        p, change = _logprob_change(arena_policy, out, sample)
        assert 0 < (p > 0.5).sum() < len(p) - 3          # winners and losers both present
        assert sign * float(np.mean((p - 0.5) * change)) > 0.2
        assert sign * (change[p > 0.5].mean() - change[p < 0.5].mean()) > 1.5


# ---------------------------------------------------------------------------------------------
# One round of configs/arena_nash_md.yaml end to end (slow)


@pytest.mark.slow
def test_a_round_of_the_arena_config_runs_end_to_end(ray_local, tmp_path):
    import json

    from pipelines.round import main
    assert main(["--round", "1", "--config", "configs/arena_nash_md.yaml", f"run_dir={tmp_path}",
                 "data.prompts_per_round=16", "data.eval_limit=16", "train.steps_per_round=3",
                 "generation.max_new_tokens=12", "wandb.mode=disabled"]) == 0
    for d in ("generations", "judgments", "preferences", "policy", "eval"):
        assert (tmp_path / "round_1" / d / "manifest.json").exists(), d
    train = json.loads((tmp_path / "round_1/policy/manifest.json").read_text())["extra"]
    assert train["steps"] == 3 and train["pairs"] == 3 * 16 and len(train["loss_curve"]) == 1
    assert 0 < train["updated_fraction"] <= 1
    m = json.loads((tmp_path / "round_1/eval/metrics.json").read_text())
    w = m["winrate_vs_initial"]
    assert 0 <= w["ci_low"] <= w["mean"] <= w["ci_high"] <= 1
