"""Typed run configuration: one YAML file → a frozen dataclass tree, validated before any work.

    cfg = read_config("configs/arena_sppo.yaml", ["train.lr=1e-4", "generation.k=4"])

Unknown keys, wrong types and out-of-range values raise `ConfigError` with one message that names
the key. Overrides use `section.key=value`, values parsed as YAML. This module checks what the core knows
(the algorithms and generation backends are core plug-ins); the judges' own checks live with the judges,
and pipelines/config.py's `load_config` runs both: that is the loader every entry point uses.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfplay.arena import ArenaRules


class ConfigError(ValueError):
    """A problem in the configuration, reported before any stage runs."""


@dataclass(frozen=True)
class ModelConfig:
    policy: str = "builtin:arena"      # hub id, local HF directory, builtin:arena or builtin:arena/topical (made by `make assets`)
    dtype: str = "float32"             # compute dtype: float32 | bfloat16 | float16. Trainable weights and optimizer
                                       # state stay fp32 (master weights) whatever this says; checkpoints, frozen
                                       # references and generation engines use this dtype
    max_length: int = 512              # prompt + response tokens seen by the trainer
    max_prompt_length: int = 0         # 0: (prompt + response)[:max_length]. N > 0, SPPO's sppo/trainer.py: a pair too long
                                       # keeps its prompt's last N tokens, then both responses' first max_length − N
    # Model facts for `make plan` and the memory checks when the checkpoint is not a local directory
    # (a local config.json wins). 0 = unknown: the plan then cannot size the model and says so.
    num_parameters: float = 0.0        # e.g. 7.24e9
    hidden_size: int = 0               # with num_layers: sizes LoRA adapters (rank × ~21.5 × hidden per layer)
    num_layers: int = 0


@dataclass(frozen=True)
class DataConfig:
    # One pool (a string: hub dataset, local datasets dir, .jsonl/.json/.parquet file), sliced disjointly
    # into rounds of prompts_per_round; or a list, one source per round (SPPO/INPO's iter1/2/3 sets),
    # each taking its first prompts_per_round prompts.
    train_prompts: str | tuple[str, ...] = "builtin:arena/train"
    eval_prompts: str = "builtin:arena/eval"
    split: str = "train"               # split name for hub datasets
    prompt_column: str = "prompt"
    id_column: str = "prompt_id"       # created from the row index when the data has none
    teacher_column: str = ""           # DNO: a column of the training prompt source holding a gold (teacher) response,
                                       # a string or a list of chat messages (the last assistant turn is used); the
                                       # judge stage adds it to each prompt's candidates (arXiv 2404.03715 §5.1,
                                       # y_gold). "" = no teacher
    prompts_per_round: int = 96        # round n uses its own slice of the pool (or its own source)
    reuse_prompts: bool = False        # allow rounds past the end of the pool/list (wrapping around); else an error
    eval_limit: int = 0                # 0 = every eval prompt
    single_turn: bool = False          # prompt_column holds chat-message lists: keep one-message rows (EGPO's lms/utils.py)
    max_prompt_chars: int = 0          # keep prompts (train and eval) shorter than this many characters (0 = any length)
    max_prompts: int = 0               # a training source's first N prompts left by the two above (0 = all)


@dataclass(frozen=True)
class GenerationConfig:
    backend: str = "hf"                # hf | vllm | auto
    k: int = 5                         # samples per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                     # 0 = no top-k filter (EGPO's authors: 10 for (y, y′))
    max_new_tokens: int = 24
    batch_size: int = 64
    # The online algorithms' opponent has its own sampler: EGPO's y″ (its authors: temperature 1, no top-k,
    # while (y, y′) use the settings above) and Nash-MD's mixture sample y′. Read only by egpo and nash_md.
    opponent_temperature: float = 1.0
    opponent_top_k: int = 0
    num_engines: int = 1               # data-parallel generation actors
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85


@dataclass(frozen=True)
class JudgeConfig:
    name: str = "oracle"               # oracle | pairrm | llm | self_reward | cream
    model: str = ""                    # checkpoint for pairrm / llm judges
    endpoint: str = ""                 # OpenAI-compatible URL for the llm judge
    batch_size: int = 32
    aggregation: str = "sppo"          # pairrm: sppo (σ(s_i − s_j)) | pairwise (order-averaged σ(L_ij))
    samples: int = 3                   # self_reward: judge samples averaged per response
    consistency: str = "per_prompt"    # cream: per_prompt (each prompt its own C) | mean (dataset-mean C)
    score_mode: str = "sample"         # self_reward: sample (parse "Score: N" from sampled text) | logprobs (expected digit)
    backend: str = "hf"                # llm / self_reward local judge model: hf | vllm | auto
    max_new_tokens: int = 0            # judge text budget; 0 = the judge's default (llm endpoint 16, self_reward 256)
    temperature: float = 0.7           # self_reward sample mode: judge sampling temperature (paper setup 0.7)
    top_p: float = 0.9                 # self_reward sample mode: judge sampling top-p
    api_key_env: str = "OPENAI_API_KEY"  # llm endpoint: environment variable with the API key (unset: no auth header)
    timeout_s: float = 60.0            # llm endpoint: seconds per HTTP request (retried twice, then the stage fails)
    num_actors: int = 1                # data-parallel judge actors, each with resources.judge; prompts are sharded
    dtype: str = "auto"                # pairrm weights: auto (fp16 on a GPU, fp32 on the CPU, as llm-blender) | float32 |
                                       # bfloat16 | float16 | int8 (CPU: dynamic int8 quantisation of the linear layers)
    prompt_format: str = "raw"         # pairrm's prompt: raw | chat (the policy's chat template up to the answer: SPPO's rank.py)
    mode: str = "pairwise"             # llm: pairwise (A/B verdicts, both orders) | rubric (DNO's 6-point additive rubric,
                                       # all candidates scored side by side; P(a ≻ b) = 1 / ½ / 0 by score; endpoint only;
                                       # max_new_tokens 0 = 256 per candidate shown)


@dataclass(frozen=True)
class LossConfig:
    eta: float = 10.0                  # SPPO η (authors' β = 1/η); INPO η
    beta: float = 0.1                  # DPO / IPO / DNO / EGPO β; Nash-MD's KL(π_θ‖π_ref) strength
    tau: float = 0.0                   # INPO τ (0 = INPO without KL)
    alpha: float = 0.3                 # APO momentum α (0 = iterative DPO/SPPO)
    mixture_coef: float = 0.125        # Nash-MD: weight m of π_ref in the opponent's per-token mixture π_θ^{1−m} π_ref^m
                                       # (EGPO's code runs Nash-MD at 0.125; TRL's default is 0.5)
    apo_base: str = "sppo"             # APO base loss: sppo | dpo
    label_smoothing: float = 0.0
    average_logprobs: bool = False     # per-token means instead of sums (EGPO's default is True)
    # DNO pairs from absolute judge scores (arXiv 2404.03715 §5.1 "Training Pair Construction", on its 6-point rubric):
    dno_min_chosen_score: float = 5.0  # DNO: a chosen response must score at least this ("only 5 or 6 are positives")
    dno_margin: float = 2.0            # DNO: the rejected scores at least this much lower ("at least 2 points")...
    dno_student_margin: float = 1.0    # ... or this much when the chosen is a policy sample, not the teacher ("1 point")
    dno_replay: float = 0.0            # DNO: fraction of the previous round's pairs replayed


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 2e-4
    epochs: int = 2
    batch_size: int = 32
    optimizer: str = "adamw"           # adamw | rmsprop (SPPO's choice) | sgd
    schedule: str = "linear"           # linear | cosine | constant
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    workers: int = 1                   # data-parallel Ray Train workers, each with resources.trainer
    strategy: str = "ddp"              # ddp | fsdp (shard params/grads/optimizer) | fsdp_offload (shards on host)
    lora_rank: int = 0                 # > 0: peft LoRA adapters, merged into the saved checkpoint
    lora_alpha: float = 16.0
    lora_targets: str | tuple[str, ...] = "all-linear"   # every linear layer but the head, or module names (peft matches
                                       # a name's last part; EGPO's code names none: peft's qwen2 default [q_proj, v_proj])
    # Online updates (egpo, nash_md): optimizer steps per round (egpo's: each a half+full extragradient pair), on
    # train.batch_size fresh prompts sampled from the trainer's own weights. 0 = one pass over the round's prompts.
    steps_per_round: int = 0
    extragradient_prompts: str = "successive"   # egpo: successive (each half its own batch, as the authors) | same


@dataclass(frozen=True)
class EvalConfig:
    samples_per_prompt: int = 2
    ci_method: str = "bootstrap"       # bootstrap | wilson
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(frozen=True)
class InitConfig:
    """An optional SFT stage before round 1: round 0's policy becomes model.policy fine-tuned on
    sft_data (CREAM and self-rewarding start from an SFT model M1 and keep the base M0 beside it).
    It trains through the same trainer as the rounds (train.batch_size, optimizer, schedule, LoRA,
    workers, strategy and dtype apply); epochs and lr are its own."""
    sft_data: str = ""                 # prompt/response dataset (file, datasets dir, hub id, builtin:arena/sft); "" = none
    prompt_column: str = "prompt"
    response_column: str = "response"
    epochs: int = 1
    lr: float = 1e-4


@dataclass(frozen=True)
class ActorResources:
    num_cpus: float = 1
    num_gpus: float = 0


@dataclass(frozen=True)
class ResourcesConfig:
    generation: ActorResources = field(default_factory=ActorResources)
    judge: ActorResources = field(default_factory=ActorResources)
    trainer: ActorResources = field(default_factory=ActorResources)
    gpu_memory_gb: float = 80.0        # the GPU size `make plan` budgets against when it cannot look at one
    stage_retries: int = 1             # a stage whose actor dies (its process killed, e.g. out of memory) is run again
                                       # from its start this many times, then the round fails naming the stage
    stall_report_s: float = 600.0      # a stage whose logs do not grow for this long is reported with its log's last
                                       # lines (again after each further period); 0 = never


@dataclass(frozen=True)
class WandbConfig:
    mode: str = "offline"              # offline | online | disabled (env WANDB_MODE wins)
    project: str = "selfplay"
    entity: str = ""


@dataclass(frozen=True)
class Config:
    run_dir: str = "runs/arena"
    seed: int = 0
    algorithm: str = "sppo"
    init: InitConfig = field(default_factory=InitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    eval_judge: JudgeConfig = field(default_factory=JudgeConfig)   # absent from the file: a copy of judge:
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # The synthetic arena's oracle (selfplay/arena.py ArenaRules: the two weights, quality_cap, unstyled_penalty):
    # read by the oracle judge and by the evaluate stage's exploitability on arena prompts.
    arena: ArenaRules = field(default_factory=ArenaRules)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key {where + '.' if where else ''}{unknown[0]} (valid: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    if isinstance(tp, types.UnionType):   # str | tuple[str, ...]: a YAML list becomes the tuple
        members = typing.get_args(tp)
        if isinstance(value, (list, tuple)) and any(typing.get_origin(m) is tuple for m in members):
            inner = next(m for m in members if typing.get_origin(m) is tuple)
            return _coerce(inner, value, path)
        return _coerce(next(m for m in members if typing.get_origin(m) is not tuple), value, path)
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{path}: expected a non-empty list, got {value!r}")
        item = typing.get_args(tp)[0]
        return tuple(_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value or {}, path)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is str and value is None:
        return ""
    ok = isinstance(value, tp) and not (tp in (int, float) and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{path}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _set(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {k} is not a section")
    node[keys[-1]] = value


def read_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """The config file plus overrides, checked as far as the core can (see the module docstring)."""
    data: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections, got a YAML {type(data).__name__}")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:   # `[1`, an unclosed quote, a `!!python/...` tag (safe_load refuses every one)
            where = f" ({str(e).splitlines()[0]})" if str(e) else ""
            raise ConfigError(f"override {item!r}: {raw!r} is not a YAML value{where}; quote strings with "
                              "spaces or brackets (key='a b'), lists as [a, b]") from None
        _set(data, key.strip(), value)
    if "eval_judge" not in data:   # the evaluation judge defaults to the training judge, overrides included
        data["eval_judge"] = copy.deepcopy(data.get("judge") or {})
    cfg = _build(Config, data, "")
    validate(cfg)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    """The resolved config (every key, overrides applied) as YAML that load_config reads back."""
    plain = json.loads(json.dumps(to_dict(cfg)))   # tuples → lists: plain YAML, no Python tags
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, width=100)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """Cross-field and range checks of everything but the judge sections' judge-specific needs; never mutates."""
    from selfplay.algorithms import ALGORITHMS
    from selfplay.generation import BACKENDS

    _check(cfg.algorithm in ALGORITHMS, f"algorithm: unknown {cfg.algorithm!r} (choose one of {', '.join(sorted(ALGORITHMS))})")
    g, t, lo, d = cfg.generation, cfg.train, cfg.loss, cfg.data
    _check(g.k >= 2, f"generation.k: needs at least 2 samples per prompt to compare, got {g.k}")
    _check(g.top_k >= 0 and g.opponent_top_k >= 0, "generation.top_k / opponent_top_k: 0 (off) or a positive count")
    _check(0 < g.opponent_temperature <= 10, f"generation.opponent_temperature: must be in (0, 10], got {g.opponent_temperature}")
    _check(t.steps_per_round >= 0, f"train.steps_per_round: 0 (one pass) or a positive count, got {t.steps_per_round}")
    _check(g.backend in BACKENDS, f"generation.backend: unknown {g.backend!r} (choose one of {', '.join(sorted(BACKENDS))})")
    _check(0 < g.temperature <= 10, f"generation.temperature: must be in (0, 10], got {g.temperature}")
    _check(0 < g.top_p <= 1, f"generation.top_p: must be in (0, 1], got {g.top_p}")
    for name in ("max_new_tokens", "batch_size", "num_engines", "tensor_parallel_size"):
        _check(getattr(g, name) >= 1, f"generation.{name}: must be >= 1, got {getattr(g, name)}")
    _check(0 < g.gpu_memory_utilization <= 1, "generation.gpu_memory_utilization: must be in (0, 1]")
    for name in ("eta", "beta"):
        _check(getattr(lo, name) > 0, f"loss.{name}: step size must be positive, got {getattr(lo, name)}")
    _check(0 <= lo.tau <= lo.eta, f"loss.tau: must be in [0, loss.eta], got {lo.tau}")
    _check(0 <= lo.alpha < 1, f"loss.alpha: must be in [0, 1), got {lo.alpha}")
    _check(0 <= lo.mixture_coef <= 1, f"loss.mixture_coef: must be in [0, 1], got {lo.mixture_coef}")
    _check(0 <= lo.label_smoothing < 0.5, f"loss.label_smoothing: must be in [0, 0.5), got {lo.label_smoothing}")
    _check(0 <= lo.dno_replay <= 1, f"loss.dno_replay: must be in [0, 1], got {lo.dno_replay}")
    for name in ("dno_margin", "dno_student_margin"):   # NaN fails too
        _check(getattr(lo, name) >= 0, f"loss.{name}: a score gap, must be >= 0, got {getattr(lo, name)}")
    _check(math.isfinite(lo.dno_min_chosen_score), f"loss.dno_min_chosen_score: must be finite, got {lo.dno_min_chosen_score}")
    _check(t.lr > 0, f"train.lr: step size must be positive, got {t.lr}")
    _check(t.epochs >= 1 and t.batch_size >= 1, "train.epochs and train.batch_size must be >= 1")
    _check(t.optimizer in ("adamw", "rmsprop", "sgd"), f"train.optimizer: adamw, rmsprop or sgd, got {t.optimizer!r}")
    _check(t.schedule in ("linear", "cosine", "constant"), f"train.schedule: linear, cosine or constant, got {t.schedule!r}")
    _check(0 <= t.warmup_ratio < 1, f"train.warmup_ratio: must be in [0, 1), got {t.warmup_ratio}")
    _check(t.workers >= 1, f"train.workers: at least 1, got {t.workers}")
    _check(t.strategy in ("ddp", "fsdp", "fsdp_offload"), f"train.strategy: ddp, fsdp or fsdp_offload, got {t.strategy!r}")
    _check(t.lora_rank >= 0, f"train.lora_rank: 0 (full fine-tuning) or a positive rank, got {t.lora_rank}")
    _check(d.prompts_per_round >= 1, f"data.prompts_per_round: must be >= 1, got {d.prompts_per_round}")
    _check(d.max_prompt_chars >= 0 and d.max_prompts >= 0, "data.max_prompt_chars / max_prompts: 0 (off) or a count")
    _check(t.lora_targets == "all-linear" or (isinstance(t.lora_targets, tuple) and t.lora_rank > 0), f"train.lora_targets="
           f"{t.lora_targets!r}: all-linear, or module names with train.lora_rank > 0 (it is unread at rank 0)")
    _check_settings_take_effect(cfg, ALGORITHMS[cfg.algorithm])
    _check_init(cfg)
    _check(d.reuse_prompts or isinstance(d.train_prompts, str) or len(set(d.train_prompts)) == len(d.train_prompts),
           "data.train_prompts: the per-round list names a source twice; set data.reuse_prompts: true to allow it")
    m = cfg.model
    _check(m.dtype in ("float32", "bfloat16", "float16"), f"model.dtype: float32, bfloat16 or float16, got {m.dtype!r}")
    _check(m.max_length >= 8, f"model.max_length: must be >= 8, got {m.max_length}")
    _check(0 <= m.max_prompt_length < m.max_length, f"model.max_prompt_length: 0 or < max_length, got {m.max_prompt_length}")
    for name in ("num_parameters", "hidden_size", "num_layers"):
        _check(getattr(m, name) >= 0, f"model.{name}: must be >= 0 (0 = read the checkpoint's config.json), got {getattr(m, name)}")
    _check(cfg.resources.gpu_memory_gb > 0, f"resources.gpu_memory_gb: must be positive, got {cfg.resources.gpu_memory_gb}")
    _check(cfg.resources.stage_retries >= 0, f"resources.stage_retries: 0 or more, got {cfg.resources.stage_retries}")
    _check(cfg.resources.stall_report_s >= 0, "resources.stall_report_s: seconds, 0 (off) or more, got "
           f"{cfg.resources.stall_report_s}")
    _check(cfg.eval.samples_per_prompt >= 1, "eval.samples_per_prompt: must be >= 1")
    _check(cfg.eval.ci_method in ("bootstrap", "wilson"), f"eval.ci_method: bootstrap or wilson, got {cfg.eval.ci_method!r}")
    a = cfg.arena
    _check(a.quality_weight >= 0 and a.style_weight >= 0 and a.quality_cap >= 0,
           f"arena: quality_weight, style_weight and quality_cap must be >= 0, got {a}")
    _check(a.unstyled_penalty >= 0, f"arena: unstyled_penalty must be >= 0, got {a.unstyled_penalty}")
    _check(cfg.wandb.mode in ("offline", "online", "disabled"), f"wandb.mode: offline, online or disabled, got {cfg.wandb.mode!r}")
    sources = [d.train_prompts] if isinstance(d.train_prompts, str) else list(d.train_prompts)
    for i, src in enumerate(sources):
        _check_source(src, "data.train_prompts" + ("" if isinstance(d.train_prompts, str) else f"[{i}]"))
    _check_source(d.eval_prompts, "data.eval_prompts")
    _check_source(cfg.model.policy, "model.policy")


def _get(cfg: Config, dotted: str):
    node = cfg
    for k in dotted.split("."):
        node = getattr(node, k)
    return node


def _check_init(cfg: Config) -> None:
    i = cfg.init
    _check(i.epochs >= 1, f"init.epochs: must be >= 1, got {i.epochs}")
    _check(i.lr > 0, f"init.lr: must be positive, got {i.lr}")
    if i.sft_data:
        _check_source(i.sft_data, "init.sft_data")


def _check_settings_take_effect(cfg: Config, algo) -> None:
    """Refuse values that no code path of this config would read (they would be silently ignored)."""
    from selfplay.algorithms import ALGORITHMS
    defaults = LossConfig()
    for f in dataclasses.fields(LossConfig):
        value = getattr(cfg.loss, f.name)
        used = f.name == "average_logprobs" or f.name in algo.loss_keys
        _check(used or value == getattr(defaults, f.name),
               f"loss.{f.name}={value!r} has no effect with algorithm {cfg.algorithm} (it reads loss."
               f"{', loss.'.join(algo.loss_keys)} and loss.average_logprobs); remove it")
    # keys outside loss: that only some algorithms read (Algorithm.reads)
    for key in sorted({k for a in ALGORITHMS.values() for k in a.reads} - set(algo.reads)):
        value, default = _get(cfg, key), _get(Config(), key)
        readers = sorted(n for n, a in ALGORITHMS.items() if key in a.reads)
        _check(value == default, f"{key}={value!r} has no effect with algorithm {cfg.algorithm}: only "
               f"{', '.join(readers)} read{'s' if len(readers) == 1 else ''} it; remove it")
    for problem in algo.check(cfg):
        raise ConfigError(problem)
    t, g = cfg.train, cfg.generation
    _check(t.strategy != "fsdp_offload" or cfg.resources.trainer.num_gpus > 0,
           "train.strategy=fsdp_offload moves shards between host and GPU memory; it needs "
           "resources.trainer.num_gpus > 0 (use fsdp or ddp on CPU)")
    from selfplay.backends import BACKENDS, planned
    splitting = " or ".join(n for n, spec in BACKENDS.items() if spec and spec.tensor_parallel)
    _check(g.tensor_parallel_size == 1 or planned(g.backend).tensor_parallel,
           f"generation.tensor_parallel_size={g.tensor_parallel_size} needs the {splitting} backend (one that splits "
           f"a model over GPUs); {g.backend} generates on one device")
    _check(g.tensor_parallel_size <= max(1, cfg.resources.generation.num_gpus),
           f"generation.tensor_parallel_size={g.tensor_parallel_size} needs as many GPUs per engine: set "
           f"resources.generation.num_gpus to {g.tensor_parallel_size}")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(src: str) -> bool:
    """org/name that is not a local path: what a hub loader would resolve."""
    return not src.startswith("builtin:") and not Path(src).exists() and bool(_HUB_ID.match(src))


def _check_source(src: str, key: str) -> None:
    """A local path must exist; a hub id (org/name, no file suffix) is resolved at load time."""
    if src.startswith("builtin:"):
        return
    p = Path(src)
    if p.exists():
        return
    looks_local = src.startswith((".", "/", "~")) or p.suffix in (".json", ".jsonl", ".parquet", ".csv")
    _check(not looks_local and bool(_HUB_ID.match(src)), f"{key}: file not found: {src}")
