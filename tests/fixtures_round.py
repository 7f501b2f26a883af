"""One finished round 1 of a tiny arena run, shared by tests/test_bad_inputs.py and tests/test_security.py.

It runs once per test session in a child process, as a user would run it, with fake API keys in its
environment and wandb logging offline, and keeps the Ray session's directory so the security tests can
read Ray's own logs. Tests that change the run work on a copy (`copy_run`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipelines.ray_env import new_temp_dir

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.prompts_per_round=8", "data.eval_limit=8", "generation.k=2", "generation.max_new_tokens=8",
        "train.epochs=1", "wandb.mode=offline"]
SECRETS = {"OPENAI_API_KEY": "sk-fake-9f3a1c7e5b2d4f60a8c1", "HF_TOKEN": "hf_fakeQ7w2Z9x4C1v8B3n6M5k0",
           "WANDB_API_KEY": "fakewandb0123456789abcdef0123456789abcdef"}
# The driver's own Ray start-up (pipelines.ray_session.ray_session), with a Ray directory the test names: a
# driver that finds Ray initialised uses it. Its token is the tests' (conftest.py exports RAY_AUTH_TOKEN_PATH).
DRIVER = """
import sys
from pipelines.ray_session import _worker_env   # first: it sets Ray's environment (loopback, auth) before ray loads
import ray
ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=sys.argv[1],
         runtime_env={"env_vars": _worker_env()}, log_to_driver=False)
from pipelines.round import main
code = main(sys.argv[2:])
ray.shutdown()
sys.exit(code)
"""


@dataclass(frozen=True)
class FinishedRound:
    run_dir: Path           # round 0 and round 1 of the tiny config, finished
    ray_dir: Path           # the Ray session's directory of that run (logs included)
    output: str             # what the run printed


_DONE: dict[str, FinishedRound] = {}


def finished_round(base: Path) -> FinishedRound:
    """Round 1 of the tiny config, run once per session (the first caller's `base` holds it)."""
    if "run" not in _DONE:
        run_dir, ray_dir = base / "run", Path(new_temp_dir())  # private, and short: AF_UNIX paths < 108 bytes
        env = {**os.environ, **SECRETS, "WANDB_MODE": "offline"}
        p = subprocess.run([sys.executable, "-c", DRIVER, str(ray_dir), "--round", "1", "--config",
                            "configs/arena_sppo.yaml", f"run_dir={run_dir}", *TINY],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        _DONE["run"] = FinishedRound(run_dir, ray_dir, p.stdout + p.stderr)
    return _DONE["run"]


def copy_run(src: Path, dest: Path) -> Path:
    """A copy of a run dir without its wandb files (tests change the copy, never the shared run)."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("wandb"), symlinks=True)
    return dest


def tree_digest(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """relative path -> sha256 of every file under root (names starting with a `skip` entry left out, and the
    verification caches, round_<n>/.verified.json, and the run dir's lock, which are not artifacts: a check may
    refresh them)."""
    from pipelines.run_lock import LOCK
    from selfplay.artifacts import VERIFIED
    out = {}
    for f in sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name not in (VERIFIED, LOCK)):
        rel = str(f.relative_to(root))
        if not rel.startswith(skip):
            out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out
