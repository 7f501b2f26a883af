"""EGPO's full step starts from θ_t, not from θ_{t+½}: the weights and the optimizer state are restored.

One extragradient iteration (selfplay/algorithms/egpo.py `update`, spec §4.4):

    θ_{t+½} = θ_t − lr·∇L_half(θ_t)          half step, on θ_t's fresh pairs
    θ_{t+1} = θ_t − lr·∇L_full(θ_t)          full step, on θ_{t+½}'s fresh pairs, FROM θ_t

Here the trainer runs it for real (selfplay.distributed.train_policy on the tiny Qwen2 of
tests/fixtures_policy.py, one worker, SGD, constant lr, one pair per phase, one iteration), with the
sampler-and-judge `egpo.judged_pairs` replaced by a fake that returns fixed pairs (the half step's
first, then the full step's, recording the live weights it samples from), and the saved checkpoint is
compared with the two steps computed here by hand in plain torch on a copy of the model: the loss
is selfplay.losses.egpo_loss on selfplay.logprobs.sequence_logprobs, the reference being the
initial policy's log-probs. Forgetting `w.restore(before)` gives θ_{t+½} − lr·∇L_full(θ_{t+½})
instead, which is far from the expected weights, so these tests fail.

The RMSprop case checks the optimizer half of the restore: RMSprop's square average after the
half step is not zero, so a full step that kept it would move by a different amount.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest
import torch

from selfplay.config import ActorResources, Config, GenerationConfig, LossConfig, ModelConfig, ResourcesConfig, TrainConfig
from selfplay.distributed import train_policy
from selfplay.losses import egpo_loss
from selfplay.records import PreferencePair

BETA = 0.5
PROMPT = "tell me about the owl river"
# half step: the round's one pair (a, b) with P(a ≻ y″), P(b ≻ y″)
HALF = PreferencePair(prompt=PROMPT, chosen="ocean wave tide coral", rejected="the a", prompt_id="0",
                      chosen_winrate=0.8, rejected_winrate=0.3)
# full step: θ_{t+½}'s "fresh" samples; with K = 2, P(a ≻ y″) = (½ + M_ab)/2 = 0.7 and P(b ≻ y″) = 0.3
FRESH = ["pine moss boldly", "stone gently slyly river"]
MATRIX = [[0.5, 0.9], [0.1, 0.5]]
FULL = (FRESH[0], FRESH[1], 0.7, 0.3)


def fake_judged_pairs(calls: list, w, batch, judge, cfg, seed, tag, round_):
    """Stands in for egpo.judged_pairs: the first call (at θ_t) answers the half step's pair, the second
    (at θ_{t+½}) keeps a copy of the live weights it would sample from and answers the full step's."""
    calls.append({k: v.detach().clone() for k, v in w.live_model().state_dict().items()})
    if len(calls) == 1:
        return [HALF]
    a, b, pa, pb = FULL
    return [PreferencePair(prompt=PROMPT, chosen=a, rejected=b, prompt_id="0", chosen_winrate=pa, rejected_winrate=pb)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from fixtures_policy import build_tiny_policy
    return build_tiny_policy(tmp_path_factory.mktemp("tiny_egpo"))


def _cfg(policy: str, optimizer: str, lr: float) -> Config:
    return Config(algorithm="egpo", model=ModelConfig(policy=policy, dtype="float32", max_length=64),
                  generation=GenerationConfig(k=2, max_new_tokens=6),
                  loss=LossConfig(beta=BETA),
                  train=TrainConfig(lr=lr, epochs=1, batch_size=8, optimizer=optimizer, schedule="constant",
                                    warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1e9, steps_per_round=1),
                  resources=ResourcesConfig(trainer=ActorResources(num_cpus=1, num_gpus=0)))


def _load(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def _logprobs(model, tok, chosen: str, rejected: str) -> torch.Tensor:
    from selfplay.logprobs import sequence_logprobs
    return sequence_logprobs(model, tok, [PROMPT, PROMPT], [chosen, rejected], max_length=64)


def _grad(model, tok, pair, ref_model) -> dict[str, torch.Tensor]:
    """∇ of the batch-mean EGPO loss of one pair (a, b, P(a ≻ y″), P(b ≻ y″)) at the model's weights;
    the reference log-probs come from `ref_model` (the initial policy)."""
    a, b, pa, pb = pair
    with torch.no_grad():
        ref = _logprobs(ref_model, tok, a, b)
    model.zero_grad(set_to_none=True)
    lp = _logprobs(model, tok, a, b)
    loss = egpo_loss(lp[:1], lp[1:], ref[:1], ref[1:], torch.tensor([pa]), torch.tensor([pb]), BETA).mean()
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _step(model, grads, update) -> dict[str, torch.Tensor]:
    """Weights after θ ← θ − update(name, g), by state-dict name (a tied weight appears under each name)."""
    names = dict(model.named_parameters(remove_duplicate=False))
    owner = {id(p): n for n, p in reversed(list(names.items()))}          # first name of each tensor
    out = {}
    for k, v in model.state_dict().items():
        n = owner.get(id(names[k])) if k in names else None
        out[k] = v - update(n, grads[n]) if n in grads else v
    return out


def _run(tiny: str, out: Path, optimizer: str, lr: float, monkeypatch):
    from safetensors.torch import load_file

    from selfplay.algorithms import egpo
    calls: list = []
    monkeypatch.setattr(egpo, "judged_pairs", functools.partial(fake_judged_pairs, calls))
    res = train_policy(tiny, out / "policy", [HALF], {"initial": tiny}, _cfg(tiny, optimizer, lr), seed=0,
                       round_=1, make_judge=lambda: None)
    assert len(calls) == 2
    return res, load_file(str(out / "policy/model.safetensors")), calls[1]


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_full_step_is_taken_from_theta_t_with_sgd(tiny, tmp_path, monkeypatch):
    lr = 0.05
    res, saved, half_ckpt = _run(tiny, tmp_path, "sgd", lr, monkeypatch)
    assert res.steps == 2 and res.pairs == 2 and len(res.loss_curve) == 2   # one step per phase

    theta_t, tok = _load(tiny)
    ref_model, _ = _load(tiny)                                             # π_ref = the initial policy
    half = (HALF.chosen, HALF.rejected, HALF.chosen_winrate, HALF.rejected_winrate)

    # θ_{t+½} = θ_t − lr·∇L_half(θ_t): the checkpoint handed to the sampler
    want_half = _step(theta_t, _grad(theta_t, tok, half, ref_model), lambda n, g: lr * g)
    assert half_ckpt.keys() <= want_half.keys()
    assert _max_diff(half_ckpt, want_half) < 1e-6

    # θ_{t+1} = θ_t − lr·∇L_full(θ_t): what the round must save
    want = _step(theta_t, _grad(theta_t, tok, FULL, ref_model), lambda n, g: lr * g)
    # what it would save without the restore: θ_{t+½} − lr·∇L_full(θ_{t+½})
    at_half, _ = _load(tiny)
    at_half.load_state_dict(want_half)
    wrong = _step(at_half, _grad(at_half, tok, FULL, ref_model), lambda n, g: lr * g)

    moved = _max_diff({k: saved[k] for k in saved}, {k: theta_t.state_dict()[k] for k in saved})
    gap = _max_diff({k: want[k] for k in saved}, {k: wrong[k] for k in saved})
    assert moved > 1e-3 and gap > 1e-3                                    # the check can tell them apart
    assert _max_diff(saved, want) < 1e-6, "EGPO's full step did not start from θ_t"
    assert _max_diff(saved, wrong) > 1e-4


def test_full_step_restores_the_optimizer_state_too_with_rmsprop(tiny, tmp_path, monkeypatch):
    """RMSprop (α = 0.99, ε = 1e-8, torch's defaults): from a fresh state v = 0.01·g², so the full step is
    θ_t − lr·g/(√(0.01·g²) + ε). Keeping the half step's v (= 0.01·g_half²) would change every step size."""
    lr = 1e-3
    _, saved, _ = _run(tiny, tmp_path, "rmsprop", lr, monkeypatch)
    theta_t, tok = _load(tiny)
    ref_model, _ = _load(tiny)
    half = (HALF.chosen, HALF.rejected, HALF.chosen_winrate, HALF.rejected_winrate)
    g_half = _grad(theta_t, tok, half, ref_model)
    g_full = _grad(theta_t, tok, FULL, ref_model)

    want = _step(theta_t, g_full, lambda n, g: lr * g / ((0.01 * g * g).sqrt() + 1e-8))
    # had the half step's square average been kept: v = 0.99·(0.01·g_half²) + 0.01·g²
    wrong = _step(theta_t, g_full,
                  lambda n, g: lr * g / ((0.99 * 0.01 * g_half[n] ** 2 + 0.01 * g * g).sqrt() + 1e-8))
    assert _max_diff({k: want[k] for k in saved}, {k: wrong[k] for k in saved}) > 1e-4
    assert _max_diff(saved, want) < 1e-6, "EGPO's full step kept the half step's optimizer state"


# ---------------------------------------------------------------------------------------------
# The LR schedule spans both halves and is not rolled back; the halves take successive batches
# ---------------------------------------------------------------------------------------------

def test_the_schedule_counts_both_halves_and_is_not_rolled_back(tiny, tmp_path, monkeypatch):
    """SGD under a linear schedule over one iteration: the schedule is sized for its two optimizer steps
    (egpo.horizon), so the half step runs at lr·1 and the full step, from θ_t, at lr·(1 − 1/2):
        θ_{t+1} = θ_t − ½·lr·∇L_full(θ_t).
    Rolling the schedule back on restore would give the full step lr·1 (θ_t − lr·∇L_full); sizing it for
    iterations instead of optimizer steps (a one-step schedule) would give it lr·0 (θ_{t+1} = θ_t). The
    restored optimizer state must not bring the half step's rate back either (it holds it)."""
    from safetensors.torch import load_file

    from selfplay.algorithms import egpo
    lr, calls = 0.05, []
    monkeypatch.setattr(egpo, "judged_pairs", functools.partial(fake_judged_pairs, calls))
    cfg = dataclasses.replace(_cfg(tiny, "sgd", lr), train=dataclasses.replace(
        _cfg(tiny, "sgd", lr).train, schedule="linear"))
    res = train_policy(tiny, tmp_path / "policy", [HALF], {"initial": tiny}, cfg, seed=0, round_=1,
                       make_judge=lambda: None)
    assert [r["lr"] for r in res.step_log] == pytest.approx([lr, lr / 2])   # what the log says ...
    saved = load_file(str(tmp_path / "policy/model.safetensors"))
    theta_t, tok = _load(tiny)
    ref_model, _ = _load(tiny)
    g_full = _grad(theta_t, tok, FULL, ref_model)
    want = _step(theta_t, g_full, lambda n, g: 0.5 * lr * g)                 # ... is what the full step took
    rolled_back = _step(theta_t, g_full, lambda n, g: lr * g)
    assert _max_diff({k: want[k] for k in saved}, {k: rolled_back[k] for k in saved}) > 1e-3
    assert _max_diff(saved, {k: theta_t.state_dict()[k] for k in saved}) > 1e-3   # a one-step schedule: no move
    assert _max_diff(saved, want) < 1e-6, "EGPO's full step did not run at the schedule's second rate"


def _batches(tiny, tmp_path, monkeypatch, prompts: str, steps: int) -> list[list[str]]:
    """The prompt ids each sample() of an EGPO update drew, with 4 prompts and train.batch_size 1."""
    from selfplay.algorithms import egpo
    seen: list[list[str]] = []

    def fake(w, batch, judge, cfg, seed, tag, round_):
        seen.append([pid for pid, _ in batch])
        return [HALF]
    monkeypatch.setattr(egpo, "judged_pairs", fake)
    base = _cfg(tiny, "sgd", 1e-3)
    cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, batch_size=1, steps_per_round=steps,
                                                              extragradient_prompts=prompts))
    pairs = [dataclasses.replace(HALF, prompt_id=str(i), prompt=f"{PROMPT} {i}") for i in range(4)]
    res = train_policy(tiny, tmp_path / prompts, pairs, {"initial": tiny}, cfg, seed=0, round_=1,
                       make_judge=lambda: None)
    assert res.steps == len(seen)
    return seen


def test_the_half_and_full_steps_take_successive_batches(tiny, tmp_path, monkeypatch):
    """The authors' training_step takes the data loader's next batch at every optimizer step, half or
    full (train.extragradient_prompts: successive); `same` keeps one batch for both halves. With 0 steps
    a round is one pass over its prompts: two iterations of two batches, or four of one."""
    successive = _batches(tiny, tmp_path, monkeypatch, "successive", 2)
    assert len(successive) == 4 and sorted(b[0] for b in successive) == ["0", "1", "2", "3"]   # each prompt once
    same = _batches(tiny, tmp_path, monkeypatch, "same", 2)
    assert len(same) == 4 and same[0] == same[1] != same[2] == same[3]
    assert same[0::2] == successive[:2]                   # the same seeded order, one batch per iteration
    assert len(_batches(tiny, tmp_path, monkeypatch, "successive", 0)) == 4   # one pass: 2 iterations × 2 batches
    assert len(_batches(tiny, tmp_path, monkeypatch, "same", 0)) == 8         # 4 iterations × 2 halves
