"""Typed run configuration: one YAML file → a frozen dataclass tree (its sections in selfplay/config_sections.py),
validated before any work.

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
from selfplay.config_sections import (ActorResources, DataConfig, EvalConfig, GenerationConfig,  # noqa: F401
                                      InitConfig, JudgeConfig, LossConfig, ModelConfig, ResourcesConfig,
                                      TrainConfig, WandbConfig)


class ConfigError(ValueError):
    """A problem in the configuration, reported before any stage runs."""


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
