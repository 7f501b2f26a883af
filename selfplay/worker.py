"""One training worker's state: the policy loaded for training, wrapped for its strategy, with its
optimizer and schedule; the operations every algorithm's update is made of (score references, run
epochs, snapshot/restore, save). The same object runs in the calling process (one worker, ddp) and
in each Ray Train worker, so LoRA, strategy, dtype and workers apply to every algorithm alike.

Data parallelism. Every worker shuffles the pairs with the same seeded RNG, so global batch s is the
same set of pairs everywhere. Worker r takes a contiguous shard of it and weights its shard-mean loss
by W·n_r/n; DDP's all-reduce (FSDP's reduce-scatter) averages gradients over the W workers, so the
result is Σ_r (n_r/n)·∇mean_r = ∇(global mean), also when n does not divide by W. A worker whose
shard is empty runs one pair with weight 0 so that it still joins every collective.

Strategies: ddp (whole model per worker), fsdp (FSDP2 `fully_shard` per decoder layer, then the root:
parameters, gradients and optimizer state split over workers), fsdp_offload (fsdp with the shards in
host memory). FSDP computes with a MixedPrecisionPolicy: parameters gathered in the compute dtype,
gradients reduced in fp32 (a bf16 reduce-scatter would round the sum of W gradients), fp32 shards.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import math
import random
from pathlib import Path

import torch
import torch.distributed as dist

from selfplay.checkpoint import write_tokenizer
from selfplay.trainer import (TrainResult, WeightProbe, autocast, batch_loss, load_policy, local_tensor,
                              make_optimizer, run_epochs, torch_dtype)

REF_BATCH = 64  # forward batch for reference log-probs


class Worker:
    """Training state of one worker (rank `rank` of `world`); `total_steps` sizes the LR schedule."""

    def __init__(self, job, *, rank: int, world: int, device: torch.device, total_steps: int) -> None:
        from selfplay.algorithms import get_algorithm
        self.job, self.cfg, self.spec = job, job.cfg, job.spec
        self.rank, self.world, self.device = rank, world, device
        self.fsdp = self.spec.strategy != "ddp" and dist.is_initialized()
        torch.manual_seed(job.seed)  # same on every worker: LoRA's initial A is then identical everywhere
        self.tok, base = _load_trainable(job.policy_path, self.cfg.model.dtype, self.spec,
                                         "cpu" if self.fsdp else device)
        self.model = _wrap(base, self.spec, world, device, self.cfg.model.dtype) if dist.is_initialized() else base
        # Before any forward: FSDP2 keeps the root's parameters unsharded after a no-grad forward, and an
        # optimizer built then would hold those temporary tensors instead of the sharded parameters.
        self.opt, self.sched = make_optimizer(self.model, self.cfg.train, total_steps)
        self.algo = job.algo or get_algorithm(self.cfg.algorithm)
        self.probe = WeightProbe(self.model)
        self.step_log: list[dict] = []   # per optimizer step: loss, lr, grad norm, log-ratios, accuracy
        self._phase = "train"
        self._frozen: dict[str, torch.nn.Module] = {}   # online updates: frozen references, loaded once

    # ------------------------------------------------------------ the operations updates are made of

    def references(self, pairs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{name: (chosen [N], rejected [N])} on CPU, identical on every worker; one model at a time."""
        out = {}
        for name, path in self.job.references.items():
            if path == self.job.policy_path:
                model = self._forward_model()   # π_t is the policy before this round's first step
            else:
                model = load_policy(path, self.cfg.model.dtype, "cpu" if self.fsdp else self.device)[1]
                if self.fsdp:
                    model = _fully_shard(model, self.spec, self.world, self.device, self.cfg.model.dtype)
            out[name] = self._score(model, pairs)
            if model is not self._forward_model():
                del model
                gc.collect()
        if self.fsdp:
            _reshard(self.model)
        return out

    def epochs(self, pairs, refs, result: TrainResult, rng: random.Random, desc: str = "train") -> None:
        self.model.train()
        self._phase = desc
        run_epochs(len(pairs), self.cfg, rng, result, lambda batch: self._step(pairs, refs, batch),
                   desc=f"{desc}[{self.world}]" if self.world > 1 else desc, show_bar=self.rank == 0)
        self.model.eval()

    def step_on(self, pairs, refs) -> float:
        """One optimizer step on all of `pairs` (an online update's fresh batch); the global batch loss."""
        self.model.train()
        self._phase = "online"
        return self._step(pairs, refs, list(range(len(pairs))))

    def frozen_references(self, pairs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Reference log-probs for pairs sampled mid-update: from frozen models kept for the whole update
        (LoRA: the base with its adapters disabled), never from the moving policy."""
        out = {}
        for name in self.job.references:
            model, mode = self.frozen_model(name)
            with mode():
                out[name] = self._score(model, pairs)
        return out

    def frozen_model(self, name: str):
        """(model, mode) for reference `name` mid-update, run inside `with mode():`. With LoRA on the
        round's own policy it is the live model with its adapters disabled (no second copy); otherwise
        a model loaded on first use and kept for the whole update (Nash-MD also samples from it)."""
        path = self.job.references[name]
        if self.spec.lora_rank > 0 and path == self.job.policy_path:
            return self._forward_model(), self._forward_model().disable_adapter
        if path not in self._frozen:
            self._frozen[path] = load_policy(path, self.cfg.model.dtype, self.device)[1].eval()
        return self._frozen[path], contextlib.nullcontext

    def live_model(self):
        """The model to sample from with the current weights (unwrapped from DDP)."""
        return self._forward_model()

    def snapshot(self) -> tuple[list[torch.Tensor], dict]:
        """This worker's trainable weights (its shards) and optimizer state, copied to host memory."""
        weights = [local_tensor(p).detach().to("cpu", copy=True) for p in self.probe.params]
        return weights, copy.deepcopy(self.opt.state_dict())

    def restore(self, state: tuple[list[torch.Tensor], dict]) -> None:
        """Weights and optimizer state back to the snapshot; the LR schedule is not rolled back. The saved
        optimizer state carries the snapshot's learning rate, so the schedule's current one is put back."""
        weights, opt_state = state
        with torch.no_grad():
            for p, w in zip(self.probe.params, weights):
                local_tensor(p).copy_(w)
        self.opt.load_state_dict(opt_state)
        for group, lr in zip(self.opt.param_groups, self.sched.get_last_lr()):
            group["lr"] = lr

    def on_rank0(self, fn):
        """fn() on rank 0, its result sent to every worker (the others wait in the broadcast)."""
        value = fn() if self.rank == 0 else None
        if self.world > 1:
            box = [value]
            dist.broadcast_object_list(box, src=0)
            value = box[0]
        return value

    def updated_fraction(self) -> tuple[float, float]:
        """Shares of sampled trainable weights changed since set-up: in the fp32 masters, and once
        rounded to the compute dtype the checkpoint is saved in."""
        t = torch.tensor(self.probe.changed(torch_dtype(self.cfg.model.dtype)), dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(t)
        moved, kept, total = t.tolist()
        return moved / max(total, 1), kept / max(total, 1)

    def save(self, out: str | Path | None) -> None:
        """A plain HF checkpoint in the compute dtype (LoRA merged) that vLLM and the next round load.
        Under FSDP a collective: every worker calls it, rank 0 writes."""
        state = _full_state(self.model, self.fsdp)
        if self.rank != 0:
            return
        state = _retie(state, _hf_model(self.model))
        if self.spec.lora_rank > 0:
            state = merge_lora(state, self.spec.lora_alpha / self.spec.lora_rank)
        state = _cast(state, torch_dtype(self.cfg.model.dtype))
        model = _hf_model(self.model)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, state_dict=state)
        # save_pretrained records the live (fp32 master) dtype; loaders with dtype="auto" want the saved one
        model.config.dtype = torch_dtype(self.cfg.model.dtype)
        model.config.save_pretrained(out)
        write_tokenizer(self.tok, out, model.config)

    # ------------------------------------------------------------ internals

    def _forward_model(self):
        return self.model.module if isinstance(self.model, torch.nn.parallel.DistributedDataParallel) else self.model

    def _step(self, pairs, refs, batch: list[int]) -> float:
        """One optimizer step on the global `batch`; returns the global batch-mean loss."""
        mine = shard(batch, self.rank, self.world)
        # An empty shard still runs a forward/backward (weight 0) so every worker joins the gradient sync.
        idx, frac = (mine, len(mine) / len(batch)) if mine else (batch[:1], 0.0)
        loss, sums = batch_loss(self.model, self.tok, self.algo, pairs, idx, refs, self.cfg)
        # one all-reduce for the loss (the single worker's batch mean) and the step's statistics
        packed = torch.cat([(loss.detach().float() * frac).reshape(1), sums.float() * (frac > 0)])
        packed = _all_reduce(packed, self.device)
        total = float(packed[0])
        if not math.isfinite(total):
            return total
        lr = self.sched.get_last_lr()[0]
        self.opt.zero_grad(set_to_none=True)
        (loss * (frac * self.world)).backward()  # gradient averaging divides by world again
        norm = torch.nn.utils.clip_grad_norm_(self.probe.params, self.cfg.train.max_grad_norm)
        self.opt.step()
        self.sched.step()
        c, r, right, count = packed[1:].tolist()
        self.step_log.append({"step": len(self.step_log) + 1, "phase": self._phase, "loss": total, "lr": lr,
                              "grad_norm": float(norm), "chosen_logratio": c / count, "rejected_logratio": r / count,
                              "margin": (c - r) / count, "accuracy": right / count})
        return total

    def _score(self, model, pairs) -> tuple[torch.Tensor, torch.Tensor]:
        """Worker r scores pairs r, r+W, ...; every worker runs as many forwards (FSDP needs that)."""
        from selfplay.logprobs import sequence_logprobs
        n, cfg = len(pairs), self.cfg
        per = math.ceil(n / self.world)
        mine = list(range(self.rank, n, self.world))
        padded = mine + [mine[-1] if mine else 0] * (per - len(mine))
        was_training = model.training
        model.eval()
        chosen, rejected = [], []
        with torch.no_grad(), autocast(self.device, cfg.model.dtype):  # not inference_mode: FSDP2 rejects it
            for b in range(0, per, REF_BATCH):
                sel = [pairs[i] for i in padded[b:b + REF_BATCH]]
                # both sides in one call: its length groups then mix chosen and rejected sequences
                lp = sequence_logprobs(model, self.tok, [p.prompt for p in sel] * 2,
                                       [p.chosen for p in sel] + [p.rejected for p in sel],
                                       average=cfg.loss.average_logprobs, max_length=cfg.model.max_length,
                                       max_prompt_length=cfg.model.max_prompt_length, paired=True)
                chosen.append(lp[:len(sel)])
                rejected.append(lp[len(sel):])
        model.train(was_training)
        return tuple(_gather_strided(torch.cat(v).float(), n, self.world, self.device) for v in (chosen, rejected))


def shard(batch: list[int], rank: int, world: int) -> list[int]:
    """Contiguous, near-equal split of one global batch (sizes differ by at most one)."""
    q, r = divmod(len(batch), world)
    start = rank * q + min(rank, r)
    return batch[start:start + q + (rank < r)]


def _all_reduce(x: torch.Tensor, device) -> torch.Tensor:
    """Sum over workers (a no-op with one), returned on CPU."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        x = x.to(device)
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x.cpu()


def _gather_strided(local: torch.Tensor, n: int, world: int, device) -> torch.Tensor:
    """Worker r holds values for indices r, r+W, ...; return all N values in index order, on CPU."""
    if world == 1:
        return local[:n].cpu()
    parts = [torch.empty_like(local, device=device) for _ in range(world)]
    dist.all_gather(parts, local.to(device))
    full = torch.empty(n, dtype=local.dtype)
    for r, part in enumerate(parts):
        count = len(range(r, n, world))
        full[r::world] = part[:count].cpu()
    return full


# ---------------------------------------------------------------- model set-up

def _load_trainable(path: str, dtype: str, spec, device):
    """Full fine-tuning: fp32 master weights. LoRA: the frozen base in the compute dtype, fp32 adapters."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    base_dtype = torch_dtype(dtype) if spec.lora_rank > 0 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=base_dtype).to(device)
    if spec.lora_rank > 0:
        from peft import LoraConfig, get_peft_model
        # dropout 0: the update stays deterministic, so workers and runs agree exactly.
        targets = spec.lora_targets if spec.lora_targets == "all-linear" else list(spec.lora_targets)
        lc = LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=0.0, bias="none",
                        target_modules=targets, task_type="CAUSAL_LM")
        model = get_peft_model(model, lc, autocast_adapter_dtype=True)   # adapters fp32 over a bf16 base
    return tok, model


def _wrap(model, spec, world: int, device: torch.device, dtype: str):
    if spec.strategy == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return _fully_shard(model, spec, world, device, dtype)


def _fully_shard(model, spec, world: int, device: torch.device, dtype: str):
    """FSDP2: each decoder layer is one unit (gathered only while it runs), the rest is the root's."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    offload = CPUOffloadPolicy() if spec.strategy == "fsdp_offload" else OffloadPolicy()
    compute = torch_dtype(dtype)
    mp = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32) if compute != torch.float32 \
        else MixedPrecisionPolicy()
    blocks = set(getattr(_hf_model(model), "_no_split_modules", None) or ())
    for m in list(model.modules()):
        if type(m).__name__ in blocks:
            fully_shard(m, mesh=mesh, offload_policy=offload, mp_policy=mp)
    fully_shard(model, mesh=mesh, offload_policy=offload, mp_policy=mp)
    return _Anchored(model, device) if spec.strategy == "fsdp_offload" else model


class _Anchored(torch.nn.Module):
    """With offloading the sharded parameters live on the host while FSDP computes on `device`, but
    sequence_logprobs places its inputs on the device of the model's first parameter. A frozen
    zero-size parameter on `device`, registered first, makes that the compute device."""

    def __init__(self, inner: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(0, device=device), requires_grad=False)
        self.inner = inner

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


def _reshard(model) -> None:
    """Free the full parameters that no-grad forwards leave gathered (FSDP2 reshards those in backward)."""
    from torch.distributed.fsdp import FSDPModule
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def _hf_model(model):
    """The transformers model inside the DDP / _Anchored / peft wrappers."""
    from selfplay.logprobs import causal_lm
    return causal_lm(model)


# ---------------------------------------------------------------- checkpoint

def _full_state(model, fsdp: bool) -> dict[str, torch.Tensor]:
    """The whole state dict with plain HF (or peft) key names; under FSDP gathered to rank 0 on CPU."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        inner = model.inner if isinstance(model, _Anchored) else model
        state = get_model_state_dict(inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        state = inner.state_dict()
    prefix = "base_model.model."   # peft's wrapper; the saved checkpoint is a plain model
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def _retie(state: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """Tied parameters (embeddings and LM head) as one tensor again: FSDP's gathered state dict has
    separate copies, and save_pretrained only drops a tied duplicate that shares storage."""
    first: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owner = first.setdefault(id(p), name)
        if owner != name and owner in state and name in state:
            state[name] = state[owner]
    return state


def merge_lora(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """W + scaling·B·A for every adapted layer, computed in fp32, without touching the live model."""
    out = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            stem, leaf = key.split(".base_layer.")
            if leaf == "weight":
                a, b = state[f"{stem}.lora_A.default.weight"], state[f"{stem}.lora_B.default.weight"]
                value = value.float() + scaling * (b.float() @ a.float())
            key = f"{stem}.{leaf}"
        out[key] = value
    return out


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating tensors to `dtype`, on CPU; tied tensors (same storage) stay one tensor."""
    memo: dict[int, torch.Tensor] = {}
    out = {}
    for k, v in state.items():
        key = v.data_ptr()
        if key not in memo:
            memo[key] = v.detach().to("cpu", dtype=dtype if v.is_floating_point() else v.dtype)
        out[k] = memo[key]
    return out
