"""wandb logging of each round's metrics, offline by default (upload later with `wandb sync`)."""
from __future__ import annotations

import os
from pathlib import Path

from selfplay.artifacts import stable_hash
from selfplay.config import Config


def _flat(prefix: str, d: dict, out: dict) -> dict:
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict):
            _flat(key, v, out)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
            out[key] = v
    return out


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The numbers wandb gets: the same values as metrics.json, flattened with '/' separators."""
    keep = {k: metrics[k] for k in ("winrate_vs_initial", "winrate_vs_previous", "mean_response_tokens",
                                   "train_loss", "judge", "eval_judge", "stage_seconds") if metrics.get(k) is not None}
    out = _flat("", keep, {})
    ratings = metrics.get("ratings") or {}
    for key in ("elo", "ci_low", "ci_high"):   # ratings/elo/round_k: this round's view of every policy
        for name, v in zip(ratings.get("policies") or [], ratings.get(key) or []):
            if isinstance(v, (int, float)):
                out[f"ratings/{key}/{name}"] = v
    matrix = metrics.get("winrate_matrix") or {}
    names, rows = matrix.get("policies") or [], matrix.get("winrate") or []
    if rows and names:   # the new policy's row: its win rate against each earlier round
        out |= {f"winrate_vs/{n}": v for n, v in zip(names, rows[-1]) if isinstance(v, (int, float))}
    if isinstance(metrics.get("cycles"), list):
        out["cycles"] = len(metrics["cycles"])
    return out


def log_round(cfg: Config, metrics: dict) -> None:
    mode = os.environ.get("WANDB_MODE", cfg.wandb.mode)
    if mode == "disabled":
        return
    import wandb

    run_dir = Path(cfg.run_dir).resolve()
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    os.environ.setdefault("WANDB_CACHE_DIR", str(run_dir / ".wandb-cache"))
    os.environ.setdefault("WANDB_CONFIG_DIR", str(run_dir / ".wandb-config"))
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", cfg.wandb.project),
                     entity=os.environ.get("WANDB_ENTITY", cfg.wandb.entity) or None, mode=mode,
                     id=f"{run_dir.name}-{stable_hash(str(run_dir))[:8]}", name=run_dir.name, resume="allow",
                     config={"algorithm": cfg.algorithm, "judge": cfg.judge.name, "seed": cfg.seed},
                     dir=str(run_dir), settings=wandb.Settings(silent=True))
    run.log({**scalar_metrics(metrics), "round": metrics["round"]}, step=metrics["round"])
    samples = metrics.get("samples") or []
    if samples:
        table = wandb.Table(columns=["round", "prompt", "response"],
                            data=[[metrics["round"], s["prompt"], s["response"]] for s in samples])
        run.log({"samples": table}, step=metrics["round"])
    run.finish()
