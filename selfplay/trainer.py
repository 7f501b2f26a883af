"""The policy update of one round: reference log-probs once, then a few epochs of the round's loss.

Every frozen reference (π_t, π_ref, π_{t-1}) is scored before training starts and only its [N]
log-prob vectors are kept, so no reference model is resident while the policy trains. π_t's
log-probs come from the policy itself before its first step.
"""
from __future__ import annotations

import gc
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfplay.algorithms import PairTensors, get_algorithm
from selfplay.logprobs import batched_logprobs, sequence_logprobs
from selfplay.records import PreferencePair


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); nothing is saved."""


@dataclass
class TrainResult:
    steps: int = 0
    pairs: int = 0
    seconds: float = 0.0
    loss_curve: list[float] = field(default_factory=list)   # mean loss per epoch
    final_loss: float = float("nan")


def load_policy(path: str, dtype: str = "float32", device: str = "cpu"):
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    return tok, model


def reference_logprobs(pairs: list[PreferencePair], references: dict[str, str], policy_path: str,
                       policy, tok, *, average: bool, max_length: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(chosen, rejected) log-probs under each frozen reference, one model in memory at a time."""
    prompts = [p.prompt for p in pairs]
    out = {}
    for name, path in references.items():
        model = policy if path == policy_path else load_policy(path, device=_device(policy))[1]
        model.eval()
        out[name] = tuple(batched_logprobs(model, tok, prompts, [getattr(p, side) for p in pairs],
                                           average=average, max_length=max_length)
                          for side in ("chosen", "rejected"))
        if model is not policy:
            del model
            gc.collect()
    return out


def _device(model) -> torch.device:
    return next(model.parameters()).device


def make_optimizer(model, cfg, total_steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":  # linear in the gradient: what the data-parallel equivalence test steps with
        opt = torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        frac = (step - warmup) / max(1, total_steps - warmup)
        return {"constant": 1.0, "linear": 1.0 - frac, "cosine": 0.5 * (1 + math.cos(math.pi * frac))}[cfg.schedule]
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def batch_loss(model, tok, algo, pairs, idx, refs, loss_cfg, max_length: int) -> torch.Tensor:
    """Mean loss of the pairs at `idx`: chosen and rejected scored in one forward pass."""
    sel = [pairs[i] for i in idx]
    prompts = [p.prompt for p in sel] * 2
    lp = sequence_logprobs(model, tok, prompts, [p.chosen for p in sel] + [p.rejected for p in sel],
                           average=loss_cfg.average_logprobs, max_length=max_length)
    n = len(sel)
    dev = lp.device
    ix = torch.tensor(idx)
    t = PairTensors(policy_chosen=lp[:n], policy_rejected=lp[n:],
                    refs={k: (c[ix].to(dev), r[ix].to(dev)) for k, (c, r) in refs.items()},
                    chosen_winrate=torch.tensor([p.chosen_winrate for p in sel], device=dev),
                    rejected_winrate=torch.tensor([p.rejected_winrate for p in sel], device=dev),
                    target=torch.tensor([p.target for p in sel], device=dev))
    return algo.loss(t, loss_cfg).mean()


def local_step(model, tok, algo, pairs, refs, cfg, opt, sched) -> Callable[[list[int]], float]:
    """One optimizer step in this process on the pairs of a batch; returns the batch loss.

    A non-finite loss is returned without stepping, so the weights stay as they were."""
    def step(batch: list[int]) -> float:
        loss = batch_loss(model, tok, algo, pairs, batch, refs, cfg.loss, cfg.model.max_length)
        if not torch.isfinite(loss):
            return loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
        opt.step()
        sched.step()
        return loss.item()
    return step


def run_epochs(n_pairs: int, cfg, rng: random.Random, result: TrainResult, step: Callable[[list[int]], float], *,
               desc: str = "train", show_bar: bool = True) -> None:
    """train.epochs passes over the pairs in `rng`-shuffled batches of train.batch_size, one `step`
    per batch; records steps and per-epoch mean losses in `result`, stops on a non-finite loss.
    Every trainer (one process, Ray Train workers, EGPO's two phases) runs this same loop."""
    tc = cfg.train
    steps_per_epoch = math.ceil(n_pairs / tc.batch_size)
    bar = tqdm(total=steps_per_epoch * tc.epochs, desc=desc, unit="step", leave=False, disable=not show_bar)
    for epoch in range(tc.epochs):
        order = list(range(n_pairs))
        rng.shuffle(order)
        losses = []
        for s in range(steps_per_epoch):
            loss = step(order[s * tc.batch_size:(s + 1) * tc.batch_size])
            if not math.isfinite(loss):
                raise TrainingError(f"{cfg.algorithm} loss is {loss} at epoch {epoch} step {s}; "
                                    f"lower train.lr ({tc.lr}) or check the loss section {cfg.loss}")
            losses.append(loss)
            result.steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
        result.loss_curve.append(sum(losses) / len(losses))
    bar.close()


def train_policy(policy_path: str, out_dir: Path, pairs: list[PreferencePair], references: dict[str, str],
                 cfg, seed: int) -> TrainResult:
    """Train from `policy_path` on `pairs` with cfg.algorithm; save an HF checkpoint to `out_dir`."""
    t0 = time.time()
    if not pairs:
        raise TrainingError("no preference pairs to train on (every prompt's responses tied?)")
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok, model = load_policy(policy_path, cfg.model.dtype, device)
    algo = get_algorithm(cfg.algorithm)
    refs = reference_logprobs(pairs, references, policy_path, model, tok,
                              average=cfg.loss.average_logprobs, max_length=cfg.model.max_length)
    tc = cfg.train
    opt, sched = make_optimizer(model, tc, math.ceil(len(pairs) / tc.batch_size) * tc.epochs)
    result = TrainResult(pairs=len(pairs))
    model.train()
    run_epochs(len(pairs), cfg, random.Random(seed), result, local_step(model, tok, algo, pairs, refs, cfg, opt, sched))
    result.final_loss = result.loss_curve[-1]
    model.eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    result.seconds = time.time() - t0
    return result
