"""Will a stage fit on its GPU? One memory model, used twice: by the stages right before they load
anything (`check_fits`, against the real GPU) and by `make plan` (pipelines/plan.py, against
resources.gpu_memory_gb), so that a run that cannot fit stops with a message naming the component
and what to change instead of a CUDA OOM deep inside training or a vLLM engine that fails to start.

The model (n parameters, W = train.workers, k optimizer states per parameter: adamw 2, rmsprop 1,
sgd 0; c bytes per value of model.dtype, the compute dtype: bf16/fp16 2, fp32 4):

  full fine-tuning   fp32 master weights 4n, fp32 gradients 4n, fp32 optimizer states 4kn
    ddp              every GPU holds all of it, plus autocast's compute-dtype copy of the weights
                     (c·n, none in fp32): (8 + 4k)n + c·n
    fsdp             (8 + 4k)n / W, plus the units FSDP gathers in the compute dtype: two decoder
                     layers at a time, 2·c·n / num_layers
    fsdp_offload     the shards live in host RAM ((8 + 4k)n / W per worker); the GPU holds the
                     gathered units only
  LoRA (rank r)      the base frozen in the compute dtype (c·n, or c·n / W sharded) and fp32 adapters:
                     (8 + 4k) bytes per adapter parameter (16 for adamw)
  references         frozen, scored before training one at a time in the compute dtype: c·n each
                     (sharded like the policy under fsdp); transient
  generation (vLLM)  c·n / tensor_parallel_size of weights, at most 0.8 of the
                     gpu_memory_utilization share of the GPU (the rest is KV cache)
  judges             each judge declares the weights it holds and their dtype (judges/: JudgeSpec.budget,
                     judge_weights here); nothing for a judge that loads no model

Activations are not counted: train.batch_size × model.max_length decide them, and the 10% left
under the trainer's limit (0.9 × GPU) is the room they get. docs/cluster.md tabulates these numbers.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
OPTIMIZER_STATES = {"adamw": 2, "rmsprop": 1, "sgd": 0}   # fp32 tensors per trainable parameter
TRAINER_SHARE = 0.9          # of the GPU: the rest is for activations and the CUDA context
KV_SHARE = 0.2               # of vLLM's gpu_memory_utilization share, kept for the KV cache
DEFAULT_LAYERS = 32          # sizes FSDP's gathered units when the layer count is unknown
# (in + out) / hidden of a decoder layer's linears, by module name: attention's 4 projections of ~2h each,
# the MLP's 3 of ~4.5h each; an estimate for models without a local config.json (grouped-query attention
# makes k/v smaller). all-linear: their sum, 21.5.
LORA_WIDTHS = {"q_proj": 2.0, "k_proj": 2.0, "v_proj": 2.0, "o_proj": 2.0,
               "gate_proj": 4.5, "up_proj": 4.5, "down_proj": 4.5}
LORA_WIDTH_PER_LAYER = sum(LORA_WIDTHS.values())


class MemoryBudgetError(RuntimeError):
    """A component cannot fit on its device; the message says which and what to change."""


@dataclass(frozen=True)
class ModelFacts:
    """What sizing a model needs; read from a local checkpoint when there is one, else from the config."""
    parameters: float | None = None    # n; None = unknown
    hidden_size: int = 0               # 0 = unknown
    num_layers: int = 0
    checkpoint: str = ""               # the local directory the numbers came from ("" = model.num_parameters)

    @property
    def source(self) -> str:
        if self.parameters is None:
            return "unknown (set model.num_parameters)"
        return self.checkpoint or "model.num_parameters"


# ---------------------------------------------------------------- model facts, nothing loaded

def parameter_count(path: str) -> int | None:
    """Parameters of a local safetensors checkpoint, from its headers (nothing is loaded); None if unknown."""
    d = Path(path)
    files = sorted(d.glob("*.safetensors")) if d.is_dir() else []
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for s in meta["shape"]:
                    count *= s
                total += count
    return total


@functools.lru_cache(maxsize=8)
def _meta_model(path: str):
    """The model built from its config.json on the meta device: shapes only, no memory, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))


def _config_json(path: str) -> dict:
    f = Path(path) / "config.json"
    if not f.is_file():
        return {}
    cfg = json.loads(f.read_text())
    return cfg.get("text_config") or cfg   # multimodal checkpoints nest the language model's facts


def checkpoint_facts(path: str) -> ModelFacts | None:
    """Facts of a local HF directory (safetensors headers, else config.json on the meta device); None if not local."""
    d = Path(path)
    if not d.is_dir():
        return None
    cfg = _config_json(path)
    n = parameter_count(path)
    if n is None and cfg:
        n = sum(p.numel() for p in _meta_model(str(d)).parameters())   # tied weights counted once
    if n is None:
        return None
    return ModelFacts(float(n), int(cfg.get("hidden_size", 0)), int(cfg.get("num_hidden_layers", 0)), str(d))


def model_facts(path: str, model_cfg) -> ModelFacts:
    """A local checkpoint's facts, with the config's model.{hidden_size,num_layers} filling what it lacks;
    else the config's model facts (model.num_parameters 0 = unknown)."""
    local = checkpoint_facts(path)
    if local is not None:
        return ModelFacts(local.parameters, local.hidden_size or model_cfg.hidden_size,
                          local.num_layers or model_cfg.num_layers, local.checkpoint)
    return ModelFacts(model_cfg.num_parameters or None, model_cfg.hidden_size, model_cfg.num_layers)


def lora_parameters(rank: int, facts: ModelFacts,
                    targets: str | tuple[str, ...] = "all-linear") -> tuple[float | None, bool]:
    """(adapter parameters, exact?) for rank-`rank` adapters on the linear layers `targets` names (all-linear:
    every one but the output layer; a list: those whose name is one of them or ends in ".<it>", as peft matches):
    r·(in + out) each. Exact from a local config.json, else the documented estimate r × width × hidden ×
    layers (LORA_WIDTHS); None when hidden_size, or a listed name's width, is unknown."""
    if rank <= 0:
        return 0.0, True
    if facts.checkpoint and _config_json(facts.checkpoint):
        import torch
        model = _meta_model(facts.checkpoint)
        out = model.get_output_embeddings()
        width = sum(m.in_features + m.out_features for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and m is not out
                    and (targets == "all-linear" or any(name == t or name.endswith("." + t) for t in targets)))
        return float(rank * width), True
    per_layer = LORA_WIDTH_PER_LAYER if targets == "all-linear" else sum(LORA_WIDTHS.get(t, math.nan) for t in targets)
    if not facts.hidden_size or math.isnan(per_layer):
        return None, False
    return rank * per_layer * facts.hidden_size * (facts.num_layers or DEFAULT_LAYERS), False


# ---------------------------------------------------------------- the trainer

@dataclass(frozen=True)
class TrainerBudget:
    """Per-GPU bytes of one training worker's state (activations not counted), and its host share."""
    weights: float          # fp32 masters (full FT); LoRA: the frozen compute-dtype base + fp32 adapters
    gradients: float        # fp32, of the trainable parameters
    optimizer: float        # fp32 optimizer states of the trainable parameters
    compute_copy: float     # ddp: autocast's compute-dtype weights; fsdp: the gathered units
    reference: float        # one frozen reference being scored (before training; transient)
    host: float = 0.0       # fsdp_offload: what each worker keeps in host RAM instead
    adapters: float = 0.0   # LoRA adapter parameters (a count)
    adapters_exact: bool = True

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.compute_copy

    @property
    def reference_peak(self) -> float:
        """While a reference is scored: no gradients or optimizer states exist yet (they appear at the first step)."""
        return self.weights + self.compute_copy + self.reference

    def peak(self, references: int) -> float:
        """The most the worker holds at once; `references` = frozen models loaded besides the policy."""
        return max(self.total, self.reference_peak if references else 0.0)


def trainer_budget(facts: ModelFacts, cfg) -> TrainerBudget | None:
    """The memory model of the module docstring for cfg.train; None when the model cannot be sized."""
    n, t = facts.parameters, cfg.train
    if n is None:
        return None
    c, k = DTYPE_BYTES[cfg.model.dtype], OPTIMIZER_STATES[t.optimizer]
    adapters, exact = lora_parameters(t.lora_rank, facts, t.lora_targets)
    if adapters is None:
        return None
    lora = t.lora_rank > 0
    trainable, frozen = (adapters, c * n) if lora else (n, 0.0)
    shards = 1 if t.strategy == "ddp" else t.workers
    gathered = 2 * c * n / (facts.num_layers or DEFAULT_LAYERS)
    if t.strategy == "ddp":   # LoRA computes on the frozen base directly: no second copy
        copy = 0.0 if lora or c == 4 else c * n
    else:
        copy = gathered
    on_gpu = 0.0 if t.strategy == "fsdp_offload" else 1.0 / shards
    host = (frozen + (8 + 4 * k) * trainable) / shards if t.strategy == "fsdp_offload" else 0.0
    return TrainerBudget(weights=(frozen + 4 * trainable) * on_gpu, gradients=4 * trainable * on_gpu,
                         optimizer=4 * k * trainable * on_gpu, compute_copy=copy, reference=c * n * on_gpu,
                         host=host, adapters=adapters, adapters_exact=exact)


def describe_trainer(b: TrainerBudget, cfg) -> str:
    """'fp32 masters 27.0 + fp32 gradients 27.0 + rmsprop states 27.0 + bf16 copy 13.5' (GiB per GPU)."""
    t, dt = cfg.train, _short(cfg.model.dtype)
    copy = f"{dt} copy" if t.strategy == "ddp" else f"{dt} gathered units"
    first = (f"{dt} base + fp32 adapters" if t.lora_rank > 0 else "fp32 masters")
    parts = [(first, b.weights), ("fp32 gradients", b.gradients), (f"{t.optimizer} states", b.optimizer),
             (copy, b.compute_copy)]
    return " + ".join(f"{name} {v / GIB:.1f}" for name, v in parts if v > 0) or "nothing"


def check_trainer(facts: ModelFacts, cfg, device_bytes: float, references: int = 0) -> None:
    """Raise MemoryBudgetError if a training worker cannot fit `device_bytes` (its GPU)."""
    b = trainer_budget(facts, cfg)
    if b is None:
        return
    need, limit = b.peak(references), TRAINER_SHARE * device_bytes
    if need <= limit:
        return
    what = (f"{describe_trainer(b, cfg)}" if need == b.total else
            f"a frozen reference {b.reference / GIB:.1f} on top of {(b.weights + b.compute_copy) / GIB:.1f} of policy")
    raise MemoryBudgetError(
        f"trainer: a {facts.parameters / 1e9:.2f}B-parameter policy needs {need / GIB:.1f} GiB per GPU before "
        f"activations ({what}) but {TRAINER_SHARE:g} × {device_bytes / GIB:.0f} GiB = {limit / GIB:.1f} GiB is "
        f"the limit. {_remedies(cfg)}")


def _remedies(cfg) -> str:
    t = cfg.train
    ways = []
    if t.strategy == "ddp" or t.workers < 8:
        ways.append("train.strategy=fsdp with more train.workers")
    if t.strategy != "fsdp_offload":
        ways.append("train.strategy=fsdp_offload")
    if t.lora_rank == 0:
        ways.append("train.lora_rank=16")
    if t.optimizer == "adamw":
        ways.append("train.optimizer=rmsprop")
    return ("Set " + ", or ".join(ways) + ".") if ways else "Use GPUs with more memory."


def _short(dtype: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[dtype]


# ---------------------------------------------------------------- generation and judges

def generation_weights(facts: ModelFacts, cfg) -> float | None:
    """Per-GPU weight bytes of one generation engine (vLLM splits them over tensor_parallel_size GPUs)."""
    if facts.parameters is None:
        return None
    from selfplay.backends import planned
    tp = cfg.generation.tensor_parallel_size if planned(cfg.generation.backend).tensor_parallel else 1
    return facts.parameters * DTYPE_BYTES[cfg.model.dtype] / tp


def generation_limit(cfg, device_bytes: float) -> float:
    """vLLM's weights get at most 0.8 of its gpu_memory_utilization share (the rest is KV cache); HF as the trainer."""
    from selfplay.backends import planned
    g = cfg.generation
    if not planned(g.backend).reserves_gpu_share:
        return TRAINER_SHARE * device_bytes
    return (1 - KV_SHARE) * g.gpu_memory_utilization * device_bytes


def check_generation(facts: ModelFacts, cfg, device_bytes: float) -> None:
    g = cfg.generation
    weights = generation_weights(facts, cfg)
    if weights is None or weights <= generation_limit(cfg, device_bytes):
        return
    raise MemoryBudgetError(
        f"generation: {weights / GIB:.1f} GiB of weights per GPU leave no KV cache within "
        f"generation.gpu_memory_utilization={g.gpu_memory_utilization} of {device_bytes / GIB:.0f} GiB "
        f"(limit {generation_limit(cfg, device_bytes) / GIB:.1f} GiB). Raise generation.tensor_parallel_size "
        f"(and resources.generation.num_gpus to match) or generation.gpu_memory_utilization.")


@dataclass(frozen=True)
class JudgeBudget:
    model: str                  # what the judge holds: "PairRM", a checkpoint, "the policy", "none (API)"
    parameters: float | None    # None = unknown (a hub checkpoint not on disk)
    bytes: float | None         # on its device


def judge_weights(model: str, n: float | None, device: str, gpu_bytes_per_param: int) -> JudgeBudget:
    """A judge holding `n` parameters of `model` on `device`: gpu_bytes_per_param each on a GPU. Each judge
    says which model and dtype it holds (its JudgeSpec.budget in judges/)."""
    per = gpu_bytes_per_param if device == "cuda" else 4   # judges compute in fp32 on the CPU
    return JudgeBudget(model, n, None if n is None else n * per)


# ---------------------------------------------------------------- at run time

def gpu_bytes() -> float | None:
    """Total memory of the first visible GPU, or None without one."""
    import torch
    if not torch.cuda.is_available():
        return None
    return float(torch.cuda.get_device_properties(0).total_memory)


def separate_references(cfg, round_: int | None = None) -> int:
    """Frozen models the trainer loads besides the policy itself ("previous" is the policy). Without the
    round, assume one whenever the algorithm names another reference (round 1's are all the policy)."""
    from selfplay.algorithms import get_algorithm
    names = get_algorithm(cfg.algorithm).references
    if round_ is None:
        return int(any(r != "previous" for r in names))
    rounds = {reference_round(r, round_) for r in names}
    return len(rounds - {round_ - 1})


def reference_round(name: str, round_: int) -> int:
    """The round whose policy a reference is (pipelines.round.reference_paths' mapping)."""
    return {"previous": round_ - 1, "initial": 0, "previous2": max(round_ - 2, 0)}[name]


def check_fits(component: str, path: str, cfg) -> None:
    """Stop before loading anything if `component` ("trainer" or "generation") cannot fit on this
    process's GPU; a no-op on CPU or when the model cannot be sized (no local checkpoint, no
    model.num_parameters)."""
    device = gpu_bytes()
    if device is None:
        return
    facts = model_facts(path, cfg.model)
    if component == "trainer":
        check_trainer(facts, cfg, device, separate_references(cfg))
    else:
        check_generation(facts, cfg, device)
