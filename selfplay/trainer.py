"""The pieces every policy update is built from: precision, the optimizer and its schedule, the
loss of a batch, the epoch loop, and the probe that says whether the weights really moved.

Precision. `model.dtype` is the compute dtype. Trainable weights, their gradients and the optimizer
state are always fp32 ("master weights"): an AdamW step at the papers' learning rates (5e-7) is far
below bf16's resolution for weights of ~0.02 (spacing 1.2e-4), so updating bf16 weights in place
silently drops almost every step. Forward and backward run under `torch.autocast` in the compute
dtype (FSDP adds a MixedPrecisionPolicy, see selfplay/worker.py). Frozen weights (references, a LoRA
base) are held in the compute dtype, and checkpoints are saved in it.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Callable

import torch


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); nothing is saved."""


@dataclass
class TrainResult:
    steps: int = 0
    pairs: int = 0
    seconds: float = 0.0
    loss_curve: list[float] = field(default_factory=list)   # mean loss per epoch
    final_loss: float = float("nan")
    updated_fraction: float = float("nan")   # share of (sampled) trainable weights that changed in the round
    saved_fraction: float = float("nan")     # ... and that still differ once rounded to the checkpoint's dtype
    workers: int = 1
    step_log: list[dict] = field(default_factory=list)   # one record per optimizer step (rank 0's view)


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def autocast(device, dtype: str):
    """Compute in `dtype` on `device`; a no-op for float32."""
    dt = torch_dtype(dtype)
    if dt == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dt)


def load_policy(path: str, dtype: str = "float32", device: str = "cpu"):
    """A frozen model in `dtype` (references, samplers); training loads fp32 masters instead."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype)).to(device)
    return tok, model


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
        frac = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return {"constant": 1.0, "linear": 1.0 - frac, "cosine": 0.5 * (1 + math.cos(math.pi * frac))}[cfg.schedule]
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def batch_loss(model, tok, algo, pairs, idx, refs, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss of the pairs at `idx` (chosen and rejected scored in one forward pass), and the sums
    [chosen log-ratio, rejected log-ratio, correctly ordered, count] against the algorithm's first
    reference, for the per-step log (log-ratio = log π_θ − log π_ref, DPO's implicit reward / β)."""
    from selfplay.algorithms import PairTensors
    from selfplay.logprobs import sequence_logprobs

    sel = [pairs[i] for i in idx]
    prompts = [p.prompt for p in sel] * 2
    dev = next(model.parameters()).device
    with autocast(dev, cfg.model.dtype):
        lp = sequence_logprobs(model, tok, prompts, [p.chosen for p in sel] + [p.rejected for p in sel],
                               average=cfg.loss.average_logprobs, max_length=cfg.model.max_length,
                               max_prompt_length=cfg.model.max_prompt_length, paired=True)
    n, ix = len(sel), torch.tensor(idx)
    lp = lp.float()
    t = PairTensors(policy_chosen=lp[:n], policy_rejected=lp[n:],
                    refs={k: (c[ix].to(dev), r[ix].to(dev)) for k, (c, r) in refs.items()},
                    chosen_winrate=torch.tensor([p.chosen_winrate for p in sel], device=dev),
                    rejected_winrate=torch.tensor([p.rejected_winrate for p in sel], device=dev),
                    target=torch.tensor([p.target for p in sel], device=dev))
    loss = algo.loss(t, cfg.loss).mean()
    with torch.no_grad():
        zero = torch.zeros_like(lp[:n])
        ref_c, ref_r = t.refs[algo.references[0]] if algo.references else (zero, zero)
        rc, rr = t.policy_chosen.detach() - ref_c, t.policy_rejected.detach() - ref_r
        sums = torch.stack([rc.sum(), rr.sum(), (rc > rr).float().sum(), torch.tensor(float(n), device=dev)])
    return loss, sums


def run_epochs(n_pairs: int, cfg, rng: random.Random, result: TrainResult, step: Callable[[list[int]], float], *,
               desc: str = "train", show_bar: bool = True) -> None:
    """train.epochs passes over the pairs in `rng`-shuffled batches of train.batch_size, one `step`
    per batch; records steps and per-epoch mean losses in `result`, stops on a non-finite loss.
    Every update (one process, Ray Train workers, EGPO's two phases) runs this same loop."""
    from selfplay.progress import bar as progress_bar
    tc = cfg.train
    steps_per_epoch = math.ceil(n_pairs / tc.batch_size)
    bar = progress_bar(steps_per_epoch * tc.epochs, desc, unit="step", disable=not show_bar)
    for epoch in range(tc.epochs):
        order = list(range(n_pairs))
        rng.shuffle(order)
        losses = []
        for s in range(steps_per_epoch):
            loss = step(order[s * tc.batch_size:(s + 1) * tc.batch_size])
            if not math.isfinite(loss):
                raise TrainingError(f"{cfg.algorithm} loss is {loss} at epoch {epoch} step {s}; nothing was saved. "
                                    f"Lower train.lr ({tc.lr}) or check the loss section {cfg.loss}")
            losses.append(loss)
            result.steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)   # drawn with the next redraw
        result.loss_curve.append(sum(losses) / len(losses))
        if show_bar:   # one line per epoch for the stage log (the bar only keeps its last state)
            logging.getLogger("selfplay").info("%s epoch %d/%d: mean loss %.4f over %d steps", desc, epoch + 1,
                                               tc.epochs, result.loss_curve[-1], len(losses))
    bar.close()


def local_tensor(p: torch.Tensor) -> torch.Tensor:
    """The part of a parameter this process holds: its FSDP shard, or the whole tensor."""
    return p.to_local() if hasattr(p, "to_local") else p


class WeightProbe:
    """A fixed strided sample of every trainable tensor (≤ 4096 entries each, on CPU), taken before
    training, so the round can report which share of them changed without copying the model. A round
    whose updates vanish in rounding (bf16 weights at lr 5e-7) shows a share near 0."""

    def __init__(self, model) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.before = [self._sample(p) for p in self.params]

    @staticmethod
    def _sample(p: torch.Tensor) -> torch.Tensor:
        flat = local_tensor(p).detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        return flat[::step].float().cpu().clone()

    def changed(self, saved_dtype: torch.dtype = torch.float32) -> tuple[int, int, int]:
        """(changed, changed once rounded to `saved_dtype`, sampled) counts in this process. The second
        says how much of the round survives in a checkpoint saved in the compute dtype."""
        moved = kept = total = 0
        for p, b in zip(self.params, self.before):
            now = self._sample(p)
            moved += int((now != b).sum())
            kept += int((now.to(saved_dtype) != b.to(saved_dtype)).sum())
            total += now.numel()
        return moved, kept, total
