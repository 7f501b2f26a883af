"""wandb gets the same numbers as metrics.json, and offline mode writes local files only."""
import pytest

from pipelines.tracking import log_round, scalar_metrics
from selfplay.config import load_config

METRICS = {"round": 2, "winrate_vs_initial": {"mean": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n": 10},
           "winrate_vs_previous": {"mean": 0.55, "ci_low": 0.5, "ci_high": 0.6, "n": 10},
           "train_loss": 1.5, "mean_response_tokens": 7.0, "stage_seconds": {"train": 3.0},
           "samples": [{"prompt": "p", "response": "r", "policy": "round_2"}]}


def test_scalars_equal_metrics_json_values():
    s = scalar_metrics(METRICS)
    assert s["winrate_vs_initial/mean"] == 0.7 and s["winrate_vs_previous/ci_low"] == 0.5
    assert s["train_loss"] == 1.5 and s["stage_seconds/train"] == 3.0


def test_offline_run_files_are_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):  # set here so they are restored after
        monkeypatch.setenv(var, str(tmp_path / var.lower()) if var != "WANDB_DIR" else str(tmp_path))
    cfg = load_config(None, [f"run_dir={tmp_path}"])
    log_round(cfg, METRICS)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))
    tables = list(runs[0].rglob("samples_*.table.json"))
    assert tables and '"p"' in tables[0].read_text()
