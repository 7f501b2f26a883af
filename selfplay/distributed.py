"""Multi-worker policy training through Ray Train: the update of selfplay.trainer.train_policy,
data-parallel over `train.workers` processes, with optional LoRA.

Equivalence with one worker. Every worker shuffles the pairs with the same seeded RNG as
train_policy, so global batch s is the same set of pairs. Worker r takes a contiguous shard of
it and weights its shard-mean loss by W·n_r/n; DDP's all-reduce (and FSDP's reduce-scatter)
average gradients over the W workers, so the result is Σ_r (n_r/n)·∇mean_r = ∇(global mean),
also when n does not divide by W. A worker whose shard is empty runs one pair with weight 0 so
that it still joins every collective. Gradient clipping, the optimizer and the schedule then
see the same gradients as the single worker.

Reference log-probs (π_t, π_ref, ...) are computed once before training, sharded: worker r
scores pairs r, r+W, r+2W, ..., every worker runs the same number of forward passes (FSDP needs
that), and the [N] vectors are all-gathered, so each worker holds every reference value.

Strategies (train.strategy):
  ddp           each worker holds the whole model; gradients are all-reduced (mean).
  fsdp          FSDP2 `fully_shard` per decoder layer, then the root: parameters, gradients and
                optimizer state are split over the workers, for models that do not fit one device.
  fsdp_offload  fsdp with the sharded parameters and optimizer state in host memory.
With one worker and ddp, training runs in the calling process (no Ray Train, no process group).

Resources: one worker gets `resources.trainer` (num_cpus, num_gpus); the caller's own process
only coordinates while Ray Train runs (see needs_worker_group).

LoRA (train.lora_rank > 0): peft adapters on every linear layer, base weights frozen; the saved
checkpoint has them merged (merge_and_unload), so vLLM and the next round load a plain model.
"""
from __future__ import annotations

import gc
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from selfplay.records import PreferencePair
from selfplay.trainer import TrainingError, TrainResult, batch_loss, load_policy, make_optimizer, run_epochs

STRATEGIES = ("ddp", "fsdp", "fsdp_offload")
REF_BATCH = 64  # forward batch for reference log-probs (batched_logprobs' default)


@dataclass(frozen=True)
class DistSpec:
    """The distributed part of the config: train.{workers,strategy,lora_*} and resources.trainer."""
    workers: int = 1
    strategy: str = "ddp"
    lora_rank: int = 0
    lora_alpha: float = 16.0
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0


def dist_spec(cfg) -> DistSpec:
    t, res = cfg.train, cfg.resources.trainer
    spec = DistSpec(workers=int(t.workers), strategy=str(t.strategy), lora_rank=int(t.lora_rank),
                    lora_alpha=float(t.lora_alpha), cpus_per_worker=float(res.num_cpus),
                    gpus_per_worker=float(res.num_gpus))
    if spec.workers < 1:
        raise ValueError(f"train.workers must be >= 1, got {spec.workers}")
    if spec.strategy not in STRATEGIES:
        raise ValueError(f"train.strategy: one of {', '.join(STRATEGIES)}, got {spec.strategy!r}")
    if spec.strategy == "fsdp_offload" and spec.gpus_per_worker <= 0:
        raise ValueError("train.strategy=fsdp_offload moves shards between host and GPU memory; "
                         "it needs resources.trainer.num_gpus > 0 (use fsdp or ddp on CPU)")
    if spec.lora_rank < 0:
        raise ValueError(f"train.lora_rank must be >= 0 (0 = full fine-tuning), got {spec.lora_rank}")
    return spec


def uses_distributed(cfg) -> bool:
    """True unless plain single-process full fine-tuning (selfplay.trainer.train_policy) does the job."""
    s = dist_spec(cfg)
    return needs_worker_group(cfg) or s.lora_rank > 0


def needs_worker_group(cfg) -> bool:
    """True when training runs in Ray Train workers; the calling actor then needs no CPUs or GPUs."""
    s = dist_spec(cfg)
    return s.workers > 1 or s.strategy != "ddp"


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs; put in the object store once and shared by every worker."""
    policy_path: str
    out_dir: str
    pairs: list[PreferencePair]
    references: dict[str, str]
    cfg: Any
    seed: int
    spec: DistSpec


def train_policy_distributed(policy_path: str, out_dir: Path, pairs: list[PreferencePair],
                             references: dict[str, str], cfg, seed: int) -> TrainResult:
    """train_policy's contract over `train.workers` workers; the HF checkpoint lands in `out_dir`."""
    if not pairs:
        raise TrainingError("no preference pairs to train on (every prompt's responses tied?)")
    spec = dist_spec(cfg)
    # Workers run elsewhere (and Ray Train changes their cwd): every path must be absolute.
    absolute = lambda p: str(Path(p).resolve()) if Path(p).exists() else str(p)  # noqa: E731  (hub ids stay)
    job = _Job(absolute(policy_path), str(Path(out_dir).resolve()), list(pairs),
               {k: absolute(v) for k, v in references.items()}, cfg, seed, spec)
    if not needs_worker_group(cfg):
        return _train(job, rank=0, world=1, device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return _fit(job)


# ---------------------------------------------------------------- Ray Train driver side

def _fit(job: _Job) -> TrainResult:
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    s = job.spec
    per_worker = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.gpus_per_worker else {})}
    storage = tempfile.mkdtemp(prefix="raytrain-")  # nothing is checkpointed there; it holds run state only
    sink = ray.remote(num_cpus=0)(_ResultSink).remote()
    trainer = TorchTrainer(
        _worker_main, train_loop_config={"job": ray.put(job), "sink": sink},
        scaling_config=ScalingConfig(num_workers=s.workers, use_gpu=s.gpus_per_worker > 0,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=f"train-{Path(job.out_dir).name}", storage_path=storage,
                             failure_config=FailureConfig(max_failures=0),  # a failed round is re-run whole
                             worker_runtime_env={"env_vars": {"OMP_NUM_THREADS": str(max(1, int(s.cpus_per_worker)))}}))
    try:
        trainer.fit()
    except Exception as e:  # noqa: BLE001  Ray wraps the worker's error; surface it as ours
        raise TrainingError(_worker_error(e)) from None
    finally:
        import shutil
        shutil.rmtree(storage, ignore_errors=True)
    try:
        return TrainResult(**ray.get(sink.get.remote()))
    finally:
        ray.kill(sink)


class _ResultSink:
    """Rank 0 hands its TrainResult back here: Ray Train v2 only returns metrics with checkpoints."""

    def __init__(self) -> None:
        self.value: dict | None = None

    def put(self, value: dict) -> None:
        self.value = value

    def get(self) -> dict:
        if self.value is None:
            raise TrainingError("training ended without a result from rank 0")
        return self.value


def _worker_error(e: Exception) -> str:
    failures = getattr(e, "worker_failures", None) or {}
    if failures:
        rank = min(failures)
        cause = failures[rank]
        return f"worker {rank} of {len(failures)} failed: {str(cause).strip().splitlines()[-1]}"
    return f"{type(e).__name__}: {e}"


def _worker_main(config: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch

    job: _Job = ray.get(config["job"])
    ctx = ray.train.get_context()
    result = _train(job, rank=ctx.get_world_rank(), world=ctx.get_world_size(), device=ray.train.torch.get_device())
    if ctx.get_world_rank() == 0:
        ray.get(config["sink"].put.remote(asdict(result)))


# ---------------------------------------------------------------- the per-worker loop

def _train(job: _Job, *, rank: int, world: int, device: torch.device) -> TrainResult:
    from selfplay.algorithms import get_algorithm

    t0 = time.time()
    cfg, tc, spec = job.cfg, job.cfg.train, job.spec
    torch.manual_seed(job.seed)  # same on every worker: LoRA's initial A is then identical everywhere
    fsdp = spec.strategy != "ddp" and dist.is_initialized()
    tok, base = load_policy(job.policy_path, cfg.model.dtype, "cpu" if fsdp else device)
    if spec.lora_rank > 0:
        base = _add_lora(base, spec)
    model = _wrap(base, spec, world, device) if dist.is_initialized() else base
    n = len(job.pairs)
    steps_per_epoch = math.ceil(n / tc.batch_size)
    # Before any forward: FSDP2 keeps the root's parameters unsharded after a no-grad forward, and an
    # optimizer built then would hold those temporary tensors instead of the sharded parameters.
    opt, sched = make_optimizer(model, tc, steps_per_epoch * tc.epochs)
    forward = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    refs = _reference_logprobs(job, forward, tok, rank, world, device, fsdp)
    if fsdp:
        _reshard(model)

    algo = get_algorithm(cfg.algorithm)
    result = TrainResult(pairs=n)
    model.train()
    # The same shuffles as train_policy, hence the same global batches; every worker sees the same
    # all-reduced loss, so a non-finite one stops them all.
    run_epochs(n, cfg, random.Random(job.seed), result,
               lambda batch: _step(model, tok, algo, job, batch, refs, rank, world, device, opt, sched),
               desc=f"train[{world}]", show_bar=rank == 0)
    result.final_loss = result.loss_curve[-1]
    model.eval()
    _save(model, tok, job, rank, fsdp)
    result.seconds = time.time() - t0
    return result


def shard(batch: list[int], rank: int, world: int) -> list[int]:
    """Contiguous, near-equal split of one global batch (sizes differ by at most one)."""
    q, r = divmod(len(batch), world)
    start = rank * q + min(rank, r)
    return batch[start:start + q + (rank < r)]


def _step(model, tok, algo, job: _Job, batch: list[int], refs, rank: int, world: int, device, opt, sched) -> float:
    """One optimizer step on the global `batch`; returns the global batch-mean loss."""
    cfg = job.cfg
    mine = shard(batch, rank, world)
    # An empty shard still runs a forward/backward (weight 0) so every worker joins the gradient sync.
    idx, frac = (mine, len(mine) / len(batch)) if mine else (batch[:1], 0.0)
    loss = batch_loss(model, tok, algo, job.pairs, idx, refs, cfg.loss, cfg.model.max_length)
    total = _all_reduce_sum(loss.detach().float() * frac, device)  # the single worker's batch mean
    if not math.isfinite(total):
        return total
    opt.zero_grad(set_to_none=True)
    (loss * (frac * world)).backward()  # gradient averaging divides by world again
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.train.max_grad_norm)
    opt.step()
    sched.step()
    return total


def _all_reduce_sum(x: torch.Tensor, device) -> float:
    if dist.is_initialized() and dist.get_world_size() > 1:
        x = x.to(device)
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return float(x.item())


# ---------------------------------------------------------------- model set-up

def _add_lora(model, spec: DistSpec):
    from peft import LoraConfig, get_peft_model

    # dropout 0: the update stays deterministic, so workers and runs agree exactly.
    lc = LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=0.0, bias="none",
                    target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lc)


def _wrap(model, spec: DistSpec, world: int, device: torch.device):
    if spec.strategy == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return _fully_shard(model, spec, world, device)


def _fully_shard(model, spec: DistSpec, world: int, device: torch.device):
    """FSDP2: each decoder layer is one unit (gathered only while it runs), the rest is the root's."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    offload = CPUOffloadPolicy() if spec.strategy == "fsdp_offload" else OffloadPolicy()
    blocks = set(getattr(_base_model(model), "_no_split_modules", None) or ())
    for m in list(model.modules()):
        if type(m).__name__ in blocks:
            fully_shard(m, mesh=mesh, offload_policy=offload)
    fully_shard(model, mesh=mesh, offload_policy=offload)
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


def _base_model(model):
    get = getattr(model, "get_base_model", None)
    return get() if get else model


# ---------------------------------------------------------------- reference log-probs

def _reference_logprobs(job: _Job, policy, tok, rank: int, world: int, device, fsdp: bool):
    """{name: (chosen [N], rejected [N])} on CPU, identical on every worker."""
    out = {}
    for name, path in job.references.items():
        if path == job.policy_path:
            model = policy  # π_t is the policy before its first step (LoRA's B = 0 leaves it unchanged)
        else:
            model = load_policy(path, job.cfg.model.dtype, "cpu" if fsdp else device)[1]
            if fsdp:
                model = _fully_shard(model, job.spec, world, device)
        out[name] = _score_sharded(model, tok, job, rank, world, device)
        if model is not policy:
            del model
            gc.collect()
    return out


def _score_sharded(model, tok, job: _Job, rank: int, world: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    from selfplay.logprobs import sequence_logprobs

    n = len(job.pairs)
    per = math.ceil(n / world)
    mine = list(range(rank, n, world))
    padded = mine + [mine[-1] if mine else 0] * (per - len(mine))  # equal forward counts on every worker
    was_training = model.training
    model.eval()
    sides = []
    with torch.no_grad():  # not inference_mode: FSDP2's all-gathers reject inference tensors
        for side in ("chosen", "rejected"):
            vals = [sequence_logprobs(model, tok, [job.pairs[i].prompt for i in padded[b:b + REF_BATCH]],
                                      [getattr(job.pairs[i], side) for i in padded[b:b + REF_BATCH]],
                                      average=job.cfg.loss.average_logprobs, max_length=job.cfg.model.max_length)
                    for b in range(0, per, REF_BATCH)]
            sides.append(_gather_strided(torch.cat(vals).float(), n, world, device))
    model.train(was_training)
    return sides[0], sides[1]


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


# ---------------------------------------------------------------- checkpoint

def _save(model, tok, job: _Job, rank: int, fsdp: bool) -> None:
    """Rank 0 writes a plain HF checkpoint (LoRA merged) that vLLM and the next round can load."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        model = model.inner if isinstance(model, _Anchored) else model
        # A collective: every worker sends its shards; only rank 0 receives the full tensors.
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank != 0:
            return
        _, model = load_policy(job.policy_path, job.cfg.model.dtype, "cpu")
        if job.spec.lora_rank > 0:
            model = _add_lora(model, job.spec)
        model.load_state_dict(state)
    elif rank != 0:
        return
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    if job.spec.lora_rank > 0:
        model = model.merge_and_unload()
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
