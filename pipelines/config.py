"""The run configuration as every entry point loads it: selfplay.config's parsing and core checks, then the
checks that need the judges registry, which the core does not import.

    cfg = load_config("configs/arena_sppo.yaml", ["train.lr=1e-4", "generation.k=4"])

Every problem is one ConfigError naming the key, raised before any stage runs.
"""
from __future__ import annotations

from pathlib import Path

from selfplay.config import Config, ConfigError, read_config


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    cfg = read_config(path, overrides)
    check_plugins(cfg)
    return cfg


def check_plugins(cfg: Config) -> None:
    """Both judge sections against the judges registry, and what the algorithm asks of its judge."""
    from judges.registry import check_config, judge_scores
    from selfplay.algorithms import get_algorithm
    try:
        check_config(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if get_algorithm(cfg.algorithm).needs_scores and not judge_scores(cfg.judge):
        raise ConfigError(f"algorithm {cfg.algorithm} builds pairs from absolute scores, which judge "
                          f"{cfg.judge.name!r} does not give: use judge.name=llm with judge.mode=rubric (the paper's "
                          "rubric) or the arena's oracle")
