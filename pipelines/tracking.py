"""wandb logging of each round, offline by default (upload later with `wandb sync`).

One wandb run per run directory. Every `log_round` call opens it again (same id, resume="allow"), logs
what is new and closes it:

- config: the whole resolved config, nested as in config.yaml (`config["train"]["lr"]`).
- per optimizer step, from round_<n>/policy/train_log.jsonl: train/loss, train/lr, train/grad_norm,
  train/chosen_logratio, train/rejected_logratio, train/margin, train/accuracy (plus train/round and
  train/phase) against `train/step`, a global step that continues across rounds (round n's step s is
  the steps of rounds 1..n-1 plus s).
- per round, from round_<n>/eval/metrics.json: `scalar_metrics` and the samples table against `round`.
- identity: id `<basename>-<hash of the absolute run dir>`, name `<parent>/<basename>`, group the
  algorithm, tags the algorithm and `judge:<name>` (see `run_identity`).

wandb's own `_step` is only an ordering counter that never goes back, kept in the ledger
RUN_DIR/wandb/logged.json together with the rounds already logged: a round in the ledger is not
logged again (re-running `--round 1-2` after `--round 1` logs round 2 only), so no step appears twice.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from pathlib import Path

from pipelines.layout import round_paths
from selfplay.artifacts import stable_hash
from selfplay.config import Config, to_dict

log = logging.getLogger(__name__)

TRAIN_KEYS = ("loss", "lr", "grad_norm", "chosen_logratio", "rejected_logratio", "margin", "accuracy")
LEDGER = "logged.json"


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
                                   "train_loss", "judge", "eval_judge", "stage_seconds", "exploitability",
                                   "style_mix", "mean_quality", "judge_vs_oracle") if metrics.get(k) is not None}
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


# ---------------------------------------------------------------- run identity

def run_identity(cfg: Config) -> dict[str, str]:
    """id: stable per run directory (its basename plus a hash of its absolute path), so every round of
    one run dir resumes the same wandb run; moving the dir starts a new one. name: `<parent>/<basename>`,
    readable and rarely ambiguous. group: the algorithm. WANDB_NAME / WANDB_RUN_GROUP override."""
    run_dir = Path(cfg.run_dir).resolve()
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", run_dir.name)[:48] or "run"
    name = f"{run_dir.parent.name}/{run_dir.name}" if run_dir.parent.name else run_dir.name
    return {"id": f"{base}-{stable_hash(str(run_dir))[:8]}",
            "name": os.environ.get("WANDB_NAME") or name,
            "group": os.environ.get("WANDB_RUN_GROUP") or cfg.algorithm}


def wandb_config(cfg: Config) -> dict:
    """The resolved config, nested like config.yaml; tuples become lists."""
    return json.loads(json.dumps(to_dict(cfg)))


# ---------------------------------------------------------------- per-step training log

def train_log(run_dir: str | Path, n: int) -> list[dict]:
    """round_<n>/policy/train_log.jsonl: one record per optimizer step; [] for a round without one."""
    path = round_paths(run_dir, n).policy / "train_log.jsonl"
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning("wandb: %s line %d is not JSON; skipped", path, i)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def round_steps(records: list[dict]) -> int:
    """How many train/step values a round's step log spans: its last 1-based step."""
    return max((_step_of(rec, i) for i, rec in enumerate(records, 1)), default=0)


def _step_of(rec: dict, i: int) -> int:
    step = rec.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 1 else i


def train_rows(records: list[dict], offset: int, round_: int) -> list[dict]:
    """wandb rows for one round's step log: train/step = offset + the record's 1-based step."""
    rows = []
    for i, rec in enumerate(records, 1):
        row = {"train/step": offset + _step_of(rec, i), "train/round": round_}
        row |= {f"train/{k}": float(rec[k]) for k in TRAIN_KEYS
                if isinstance(rec.get(k), (int, float)) and not isinstance(rec.get(k), bool)}
        if isinstance(rec.get("phase"), str):
            row["train/phase"] = rec["phase"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------- ledger

def ledger_path(cfg: Config) -> Path:
    return Path(cfg.run_dir).resolve() / "wandb" / LEDGER


def read_ledger(cfg: Config, run_id: str) -> dict:
    """{"run_id", "next_step", "rounds": {"<n>": {"train_steps", "first_train_step", "metrics_sha"}}}.
    A ledger for another run id (the run dir moved, so the id changed) counts as empty."""
    path = ledger_path(cfg)
    fresh = {"run_id": run_id, "next_step": 0, "rounds": {}}
    if not path.exists():
        return fresh
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as e:
        log.warning("wandb: unreadable ledger %s (%s); starting a new one", path, e)
        return fresh
    if not isinstance(data, dict) or data.get("run_id") != run_id or not isinstance(data.get("rounds"), dict):
        return fresh
    data.setdefault("next_step", 0)
    return data


def write_ledger(cfg: Config, data: dict) -> None:
    """Atomic: a temporary file in the same directory, then os.replace."""
    path = ledger_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{LEDGER}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def train_offset(cfg: Config, ledger: dict, n: int) -> int:
    """Steps of rounds 1..n-1: what the ledger recorded for a logged round, else its train_log.jsonl."""
    total = 0
    for k in range(1, n):
        entry = ledger["rounds"].get(str(k))
        total += entry["train_steps"] if entry else round_steps(train_log(cfg.run_dir, k))
    return total


def _sha(metrics: dict) -> str:
    return hashlib.sha256(json.dumps(metrics, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- logging

def log_round(cfg: Config, metrics: dict) -> bool:
    """Log round metrics["round"] (its training steps, then its round-level metrics) to the run dir's
    wandb run. Returns False when nothing was logged: wandb disabled, or the round already logged."""
    mode = os.environ.get("WANDB_MODE", cfg.wandb.mode)
    if mode == "disabled":
        return False
    n = int(metrics["round"])
    ident = run_identity(cfg)
    ledger = read_ledger(cfg, ident["id"])
    done = ledger["rounds"].get(str(n))
    if done:
        if done.get("metrics_sha") != _sha(metrics):
            log.warning("wandb: round %d is already in run %s with other metrics; not logged again (wandb history "
                        "cannot be rewritten: use a new run dir to log the new results)", n, ident["id"])
        else:
            log.info("wandb: round %d already logged to run %s; skipped", n, ident["id"])
        return False

    run_dir = Path(cfg.run_dir).resolve()
    offset = train_offset(cfg, ledger, n)
    records = train_log(cfg.run_dir, n) if n > 0 else []   # round 0 (the initial policy) is a point, not training
    steps = train_rows(records, offset, n)
    scalars = scalar_metrics(metrics)
    with _wandb_env(run_dir):
        step = _log(cfg, ident, mode, ledger, n, steps, scalars, metrics.get("samples") or [])
    ledger["next_step"] = step
    ledger["rounds"][str(n)] = {"train_steps": round_steps(records), "first_train_step": offset + 1 if steps else None,
                                "metrics_sha": _sha(metrics), "mode": mode}
    write_ledger(cfg, ledger)
    return True


@contextlib.contextmanager
def _wandb_env(run_dir: Path):
    """wandb's files (runs, cache, config, data) under the run dir unless the environment names other
    places; restored afterwards, so a later run dir in the same process gets its own."""
    defaults = {"WANDB_DIR": run_dir, "WANDB_CACHE_DIR": run_dir / ".wandb-cache",
                "WANDB_CONFIG_DIR": run_dir / ".wandb-config", "WANDB_DATA_DIR": run_dir / ".wandb-data"}
    added = [k for k in defaults if k not in os.environ]
    os.environ.update({k: str(defaults[k]) for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _log(cfg: Config, ident: dict, mode: str, ledger: dict, n: int, steps: list[dict], scalars: dict,
         samples: list[dict]) -> int:
    """One wandb session: the round's train rows, then its round row. Returns the next wandb _step."""
    import wandb

    run = wandb.init(project=os.environ.get("WANDB_PROJECT", cfg.wandb.project),
                     entity=os.environ.get("WANDB_ENTITY", cfg.wandb.entity) or None, mode=mode,
                     id=ident["id"], name=ident["name"], group=ident["group"], resume="allow",
                     tags=[cfg.algorithm, f"judge:{cfg.judge.name}"], config=wandb_config(cfg),
                     dir=os.environ["WANDB_DIR"], settings=wandb.Settings(silent=True))
    try:
        run.define_metric("train/step")
        run.define_metric("train/*", step_metric="train/step")
        run.define_metric("round")
        for key in [*scalars, "samples"]:
            run.define_metric(key, step_metric="round")
        # wandb's _step: monotonic across every call for this run (offline runs restart at 0, online
        # resumes carry the server's step), so each row gets the next one.
        step = max(int(ledger["next_step"]), int(run.step or 0))
        for row in steps:
            run.log(row, step=step)
            step += 1
        row = {**scalars, "round": n}
        if samples:
            row["samples"] = wandb.Table(columns=["round", "prompt", "response"],
                                         data=[[n, s["prompt"], s["response"]] for s in samples])
        run.log(row, step=step)
        step += 1
    finally:
        run.finish()
        # finish() can return before wandb-core has written the offline .wandb file (from the second run
        # of a process on); teardown waits for the service, so the files are complete when we return
        wandb.teardown()
    return step
