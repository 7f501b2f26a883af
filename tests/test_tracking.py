"""wandb gets the same numbers as metrics.json, the whole config, every training step on a global step
axis, and re-logging a finished round adds nothing; offline mode writes local files only."""
import json
import logging
import math
import os
from pathlib import Path

import pytest

from fixtures_wandb import config, history, metric_axes, run_facts
from pipelines.tracking import TRAIN_KEYS, log_round, read_ledger, run_identity, scalar_metrics, write_ledger
from pipelines.config import load_config

METRICS = {"round": 2, "winrate_vs_initial": {"mean": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n": 10},
           "winrate_vs_previous": {"mean": 0.55, "ci_low": 0.5, "ci_high": 0.6, "n": 10},
           "train_loss": 1.5, "mean_response_tokens": 7.0, "stage_seconds": {"train": 3.0},
           "samples": [{"prompt": "p", "response": "r", "policy": "round_2"}]}
WANDB_ENV = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_NAME", "WANDB_RUN_GROUP")


@pytest.fixture()
def offline(monkeypatch):
    """WANDB_MODE=offline with nothing else set, so log_round puts wandb's files under the run dir."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in WANDB_ENV:
        monkeypatch.delenv(var, raising=False)


def _round_metrics(n: int) -> dict:
    """round_<n>/eval/metrics.json with the keys and nesting evaluate writes (copied from a real run)."""
    names = [f"round_{i}" for i in range(n + 1)]

    def wr(m: float) -> dict:
        return {"mean": m, "ci_low": m - 0.03, "ci_high": m + 0.03, "n": 96, "method": "bootstrap", "tie_rate": 0.2,
                "abstain_rate": 0.0, "lc": m - 0.1, "judge": "oracle",
                "judge_stats": {"pairs": 768, "pairs_per_s": 7e4, "abstain_rate": 0.0,
                                "position_disagreement_rate": 0.0, "mean_winner_chars": None, "mean_loser_chars": None}}

    return {"round": n, "algorithm": "sppo", "winrate_vs_initial": wr(0.5 + 0.06 * n), "winrate_vs_previous": wr(0.56),
            "winrate_matrix": {"policies": names, "winrate": [[0.5 + 0.05 * (i - j) for j in range(n + 1)]
                                                             for i in range(n + 1)]},
            "ratings": {"policies": names, "elo": [1000.0 + 40 * i for i in range(n + 1)],
                        "ci_low": [1000.0] + [980.0 + 40 * i for i in range(1, n + 1)],
                        "ci_high": [1000.0] + [1020.0 + 40 * i for i in range(1, n + 1)]},
            "cycles": [], "mean_response_tokens": 5.5 + n, "train_loss": 3.1 - 0.3 * n, "train_loss_curve": [6.0, 3.7],
            "judge": {"judge": "oracle", "pairs": 1920, "pairs_per_s": 1e5, "abstain_rate": 0.0,
                      "position_disagreement_rate": 0.0, "mean_winner_chars": 38.7, "mean_loser_chars": 50.1},
            "eval_judge": {"pairs": 768, "pairs_per_s": 7e4, "abstain_rate": 0.0, "position_disagreement_rate": 0.0,
                           "mean_winner_chars": None, "mean_loser_chars": None, "name": "oracle"},
            "stage_seconds": {"generate": 5.5, "judge": 2.5, "preferences": 2.4, "train": 6.3 + n, "evaluate": 3.4},
            "samples": [{"prompt": "What comes to mind about space?", "response": f"kelp and bridge {n}",
                         "policy": f"round_{n}"}]}


def _step_log(n_steps: int, phases: tuple[str, ...] = ("train",)) -> list[dict]:
    return [{"step": s, "phase": phases[(s - 1) % len(phases)], "loss": 2.0 / s, "lr": 1e-4 * s, "grad_norm": 0.5 + s,
             "chosen_logratio": 0.1 * s, "rejected_logratio": -0.1 * s, "margin": 0.2 * s, "accuracy": 0.5}
            for s in range(1, n_steps + 1)]


def _fake_round(run: Path, n: int, steps: list[dict] | None) -> dict:
    """round_<n>/eval/metrics.json and round_<n>/policy/train_log.jsonl, as a finished round leaves them."""
    metrics = _round_metrics(n)
    (run / f"round_{n}/eval").mkdir(parents=True, exist_ok=True)
    (run / f"round_{n}/eval/metrics.json").write_text(json.dumps(metrics))
    if steps is not None:
        (run / f"round_{n}/policy").mkdir(parents=True, exist_ok=True)
        (run / f"round_{n}/policy/train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    return metrics


def test_scalars_equal_metrics_json_values():
    s = scalar_metrics(METRICS)
    assert s["winrate_vs_initial/mean"] == 0.7 and s["winrate_vs_previous/ci_low"] == 0.5
    assert s["train_loss"] == 1.5 and s["stage_seconds/train"] == 3.0


def test_offline_run_files_are_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):  # set here so they are restored after
        monkeypatch.setenv(var, str(tmp_path / var.lower()) if var != "WANDB_DIR" else str(tmp_path))
    cfg = load_config(None, [f"run_dir={tmp_path}"])
    assert log_round(cfg, METRICS)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))
    tables = list(runs[0].rglob("samples_*.table.json"))
    assert tables and '"p"' in tables[0].read_text()


def test_rounds_logged_once_with_steps_continuing_across_rounds(tmp_path, offline, caplog):
    run = tmp_path / "exp" / "sppo_run"
    m1 = _fake_round(run, 1, _step_log(3))
    m2 = _fake_round(run, 2, _step_log(4, ("egpo half step", "egpo full step")))
    cfg = load_config(None, [f"run_dir={run}", "train.lr=3e-4"])

    assert log_round(cfg, m1)
    assert not log_round(cfg, m1)                  # `--round 1` again: nothing new
    assert log_round(cfg, m2)                      # `--round 1-2`: round 1 skipped, round 2 logged
    assert not log_round(cfg, m1) and not log_round(cfg, m2)
    m2_changed = {**m2, "train_loss": 9.0}
    with caplog.at_level(logging.WARNING, logger="pipelines.tracking"):
        assert not log_round(cfg, m2_changed)      # a round is never logged twice, even with new numbers
    assert "already in run" in caplog.text
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        assert var not in os.environ               # the run dir's defaults do not leak to a later run dir

    wdir = run / "wandb"
    assert len(list(wdir.glob("offline-run-*"))) == 2   # one wandb session per round actually logged
    rows = history(wdir)
    wandb_steps = [r["_step"] for r in rows]
    assert wandb_steps == sorted(set(wandb_steps))      # wandb's own step only goes forward

    train = [r for r in rows if "train/step" in r]
    train_steps = [r["train/step"] for r in train]
    assert len(train_steps) == len(set(train_steps)) == 7          # no step twice
    assert train_steps == list(range(1, 8))                        # round 2's first step = round 1's 3 steps + 1
    assert [r["train/round"] for r in train] == [1] * 3 + [2] * 4
    assert [r["train/phase"] for r in train[3:5]] == ["egpo half step", "egpo full step"]
    for row, rec in zip(train, _step_log(3) + _step_log(4)):
        assert {k: row[f"train/{k}"] for k in TRAIN_KEYS} == pytest.approx({k: rec[k] for k in TRAIN_KEYS})
    assert all("round" not in r for r in train)

    rounds = [r for r in rows if "round" in r]
    assert [r["round"] for r in rounds] == [1, 2]
    for r, m in zip(rounds, (m1, m2)):
        expected = scalar_metrics(m)
        assert len(expected) > 20 and "ratings/elo/round_0" in expected
        for key, value in expected.items():
            assert math.isclose(r[key], value, rel_tol=1e-12), key
        assert r["samples/_type"] == "table-file"

    axes = metric_axes(wdir)
    assert axes["train/*"] == "train/step" and axes["winrate_vs_initial/mean"] == "round"
    assert axes["samples"] == "round" and axes["train/step"] == "" and axes["round"] == ""

    cfg_logged = config(wdir)
    assert cfg_logged["train"]["lr"] == 3e-4 and cfg_logged["train"]["epochs"] == cfg.train.epochs
    assert cfg_logged["judge"]["name"] == cfg.judge.name and cfg_logged["algorithm"] == cfg.algorithm
    assert cfg_logged["run_dir"] == cfg.run_dir and set(cfg_logged) >= {"model", "data", "generation", "eval", "wandb"}

    ident = run_identity(cfg)
    assert run_facts(wdir) == [{"id": ident["id"], "name": "exp/sppo_run", "group": "sppo"}] * 2
    ledger = json.loads((wdir / "logged.json").read_text())
    assert ledger["run_id"] == ident["id"] and ledger["next_step"] == wandb_steps[-1] + 1
    assert {k: (v["train_steps"], v["first_train_step"]) for k, v in ledger["rounds"].items()} == {"1": (3, 1),
                                                                                                   "2": (4, 4)}


def test_offset_counts_a_round_that_was_never_logged(tmp_path, offline, monkeypatch):
    """Round 1 ran with wandb disabled: round 2's steps still start after round 1's train_log.jsonl."""
    run = tmp_path / "run"
    m1 = _fake_round(run, 1, _step_log(5))
    m2 = _fake_round(run, 2, _step_log(2))
    cfg = load_config(None, [f"run_dir={run}"])
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert not log_round(cfg, m1)
    assert not (run / "wandb").exists()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert log_round(cfg, m2)
    rows = history(run / "wandb")
    assert [r["train/step"] for r in rows if "train/step" in r] == [6, 7]
    assert [r["round"] for r in rows if "round" in r] == [2]


def test_round_without_step_log_logs_round_metrics_only(tmp_path, offline):
    run = tmp_path / "run"
    m1 = _fake_round(run, 1, None)                 # an older round: no train_log.jsonl
    cfg = load_config(None, [f"run_dir={run}"])
    assert log_round(cfg, m1)
    rows = history(run / "wandb")
    assert [r["round"] for r in rows] == [1] and not any("train/step" in r for r in rows)


def test_run_identity_is_stable_per_run_dir(tmp_path, monkeypatch):
    for var in ("WANDB_NAME", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(var, raising=False)
    a = load_config(None, [f"run_dir={tmp_path / 'a' / 'run'}", "algorithm=dpo"])
    b = load_config(None, [f"run_dir={tmp_path / 'b' / 'run'}"])
    ia, ib = run_identity(a), run_identity(b)
    assert ia == run_identity(load_config(None, [f"run_dir={tmp_path / 'a' / 'run'}", "algorithm=dpo"]))
    assert ia["id"] != ib["id"] and ia["id"].startswith("run-") and len(ia["id"]) <= 64
    assert ia["name"] == "a/run" and ia["group"] == "dpo" and ib["group"] == b.algorithm
    odd = run_identity(load_config(None, [f"run_dir={tmp_path / 'x:y#z?'}"]))
    assert not set(odd["id"]) & set("/\\#?%:")
    monkeypatch.setenv("WANDB_NAME", "mine")
    monkeypatch.setenv("WANDB_RUN_GROUP", "sweep")
    assert run_identity(a) | {"id": ia["id"]} == {"id": ia["id"], "name": "mine", "group": "sweep"}


def test_ledger_of_another_run_id_counts_as_empty(tmp_path):
    cfg = load_config(None, [f"run_dir={tmp_path}"])
    write_ledger(cfg, {"run_id": "old-id", "next_step": 9, "rounds": {"1": {"train_steps": 3}}})
    assert read_ledger(cfg, "old-id")["rounds"] == {"1": {"train_steps": 3}}
    assert read_ledger(cfg, "new-id") == {"run_id": "new-id", "next_step": 0, "rounds": {}}
    (tmp_path / "wandb" / "logged.json").write_text("{not json")
    assert read_ledger(cfg, "old-id")["rounds"] == {}
    assert [p.name for p in (tmp_path / "wandb").iterdir()] == ["logged.json"]   # no temp file left behind
