"""The run configuration as every entry point loads it: selfplay.config's parsing and core checks, then the
checks that need the plug-in registries the core does not import (the judges').

    cfg = load_config("configs/arena_sppo.yaml", ["train.lr=1e-4", "generation.k=4"])

Every problem is one ConfigError naming the key, raised before any stage runs.
"""
from __future__ import annotations

from pathlib import Path

from selfplay.config import ArenaRules, Config, ConfigError, JudgeConfig, read_config, uses_arena


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    cfg = read_config(path, overrides)
    check_plugins(cfg)
    return cfg


def check_plugins(cfg: Config) -> None:
    """The judge sections against the judges registry, and what the algorithm asks of its judge."""
    from judges.registry import JUDGES, judge_scores
    from selfplay.algorithms import get_algorithm
    from selfplay.generation import BACKENDS
    for where in ("judge", "eval_judge"):
        _check_judge(getattr(cfg, where), where, JUDGES, BACKENDS)
    _check(not get_algorithm(cfg.algorithm).needs_scores or judge_scores(cfg.judge),
           f"algorithm {cfg.algorithm} builds pairs from absolute scores, which judge {cfg.judge.name!r} does not "
           "give: use judge.name=llm with judge.mode=rubric (the paper's rubric) or the arena's oracle")
    _check(cfg.judge.name != "cream" or bool(cfg.init.sft_data),
           "judge.name=cream: CREAM's consistency compares the policy's ranking with the previous model's, and in "
           "round 1 that needs an SFT model M1 beside the base M0 (CREAM starts from SFT; without it the two models "
           "are the same, C = 1 everywhere and round 1 is plain unregularised self-rewarding). Set init.sft_data to a "
           "prompt/response dataset (the arena has builtin:arena/sft)")
    _check(uses_arena(cfg) or cfg.arena == ArenaRules(), "arena: set, but nothing in this config plays the arena "
           "(no oracle judge and data.eval_prompts is not builtin:arena/...); remove it")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_judge(j: JudgeConfig, where: str, judges, backends) -> None:
    """The fields every judge shares, then the named judge's own checks (judges/registry.py)."""
    from judges.registry import check_judge_config
    _check(j.name in judges, f"{where}.name: unknown {j.name!r} (choose one of {', '.join(sorted(judges))})")
    _check(j.backend in backends, f"{where}.backend: unknown {j.backend!r} (choose one of {', '.join(sorted(backends))})")
    _check(j.batch_size >= 1, f"{where}.batch_size: must be >= 1, got {j.batch_size}")
    _check(j.num_actors >= 1, f"{where}.num_actors: at least 1, got {j.num_actors}")
    try:
        check_judge_config(j, where)
    except ValueError as e:
        raise ConfigError(str(e)) from None
