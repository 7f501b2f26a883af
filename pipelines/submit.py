"""Submit rounds to a running Ray cluster as one Ray job, stream its logs, exit with its status.

    python -m pipelines.submit --address http://<head>:8265 --round 1 [--config F] run_dir=/shared/runs/x [k=v ...]
    make submit ROUND=1 ADDRESS=http://<head>:8265 RUN_DIR=/shared/runs/x      (ROUNDS=1-3 for a sequence)

The job's working directory is this repository, uploaded without run outputs, virtual
environments, caches or git history. Its entrypoint is `python -m pipelines.round ...` on the
head node. Nothing is installed for the job: every node is expected to run Ray from the project's
environment (see docs/cluster.md), and workers use the Python that runs Ray there.

The run directory must be storage that every node sees (NFS, Lustre, a FUSE-mounted bucket):
stages run on any node and read each other's outputs from it. check_shared_run_dir() verifies
that from inside the job, before any stage starts.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import socket
import sys
import time
import uuid
from pathlib import Path

from pipelines.round import RoundError, parse_rounds

REPO = Path(__file__).resolve().parent.parent
# Uploaded with the job: code and configs only. Ray also honours .gitignore; these hold either way.
EXCLUDES = ["runs/", "artifacts/", "assets/", ".venv*", ".git", ".cache", "__pycache__", "*.pyc", ".pytest_cache",
            "wandb/", ".wandb/", "*.egg-info"]
# Forwarded to the job when set here; the cluster's own environment supplies everything else.
FORWARD_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM",
               "WANDB_MODE", "VLLM_CACHE_ROOT", "SELFPLAY_ASSETS")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class SharedRunDirError(RoundError):
    """The run directory is not the same storage on every node."""


# ---------------------------------------------------------------- shared-storage check (runs in the driver)

def check_shared_run_dir(run_dir: str | Path, *, timeout_s: float = 120.0, visible_within_s: float = 15.0,
                         always: bool = False) -> None:
    """Raise SharedRunDirError unless every alive Ray node sees `run_dir` and a marker written now.

    One zero-CPU task is pinned to each node (NodeAffinitySchedulingStrategy, hard). A node that
    cannot see the marker within `visible_within_s` (NFS may cache a directory listing for a few
    seconds) or does not answer within `timeout_s` is reported by address and hostname. With a
    single node, the driver's own, there is nothing to check unless `always`.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    run_dir = Path(run_dir).resolve()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    here = ray.get_runtime_context().get_node_id()
    if not always and [n["NodeID"] for n in nodes] == [here]:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = run_dir / f".shared-check-{token[:12]}"
    marker.write_text(token)
    probe = ray.remote(num_cpus=0, max_retries=0)(probe_run_dir)
    try:
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(run_dir), marker.name, token, visible_within_s): n for n in nodes}
        done, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        results = [_result(r, refs[r]) for r in done]
        results += [{"ok": False, "node": refs[r]["NodeManagerAddress"], "host": refs[r].get("NodeManagerHostname", "?"),
                     "reason": f"no answer within {timeout_s:.0f}s"} for r in pending]
        for r in pending:
            ray.cancel(r, force=True)
    finally:
        marker.unlink(missing_ok=True)
    message = shared_dir_report(run_dir, results)
    if message:
        raise SharedRunDirError(message)


def _result(ref, node: dict) -> dict:
    import ray
    try:
        return {**ray.get(ref), "node": node["NodeManagerAddress"]}
    except Exception as e:  # noqa: BLE001  a probe that could not run is a failing node, not a crash
        return {"ok": False, "node": node["NodeManagerAddress"], "host": node.get("NodeManagerHostname", "?"),
                "reason": f"the probe task failed: {type(e).__name__}: {str(e).strip().splitlines()[-1]}"}


def probe_run_dir(run_dir: str, name: str, token: str, visible_within_s: float) -> dict:
    """On one node: does `run_dir/name` exist there with `token` in it? Retries while NFS catches up."""
    d = Path(run_dir)
    deadline = time.monotonic() + visible_within_s
    while True:
        if not d.is_dir():
            reason = "the directory does not exist on this node"
        else:
            try:
                os.listdir(d)  # a fresh readdir makes NFS revalidate its cached directory entries
                seen = (d / name).read_text()
                reason = "" if seen == token else "the marker holds other content"
            except OSError:
                reason = "the directory exists but the driver's marker file is not visible (a different disk?)"
        if not reason or time.monotonic() >= deadline:
            return {"ok": not reason, "host": socket.gethostname(), "reason": reason}
        time.sleep(0.5)


def shared_dir_report(run_dir: Path, results: list[dict]) -> str:
    """'' when every node passed, else one message naming each failing node and why."""
    bad = [r for r in results if not r["ok"]]
    if not bad:
        return ""
    lines = [f"  {r['node']} ({r['host']}): {r['reason']}" for r in bad]
    return (f"run_dir {run_dir} is not shared storage: {len(bad)} of {len(results)} Ray nodes cannot see what "
            f"the driver wrote there:\n" + "\n".join(lines) +
            "\nPoint run_dir at a filesystem mounted at the same path on every node (NFS, Lustre, a FUSE bucket); "
            "see docs/cluster.md.")


# ---------------------------------------------------------------- job submission (runs on the client)

def run_dir_of(config: str | None, overrides: list[str]) -> str:
    """run_dir as the job will see it (last override wins), without validating the rest of the config:
    paths in it may exist only on the cluster."""
    import yaml

    from selfplay.config import Config
    value = Config().run_dir
    if config and Path(config).exists():
        value = (yaml.safe_load(Path(config).read_text()) or {}).get("run_dir", value)
    for item in overrides:
        key, _, raw = item.partition("=")
        if key.strip() == "run_dir":
            value = str(yaml.safe_load(raw))
    return str(value)


def build_job(round_spec: str, config: str, overrides: list[str], *, python: str = "python",
              py_executable: str | None = None, working_dir: Path = REPO) -> tuple[str, dict]:
    """(entrypoint, runtime_env) for the job; raises ValueError for what would fail on the cluster."""
    parse_rounds(round_spec)  # a bad range fails here, not after the upload
    run_dir = run_dir_of(config, overrides)
    if not Path(run_dir).is_absolute():
        raise ValueError(f"run_dir must be an absolute path on storage every node mounts, got {run_dir!r} "
                         "(e.g. RUN_DIR=/shared/runs/arena); a relative one would land in the job's temporary copy")
    cfg_path = Path(config).resolve()
    if cfg_path.is_relative_to(working_dir.resolve()):
        config = str(cfg_path.relative_to(working_dir.resolve()))  # uploaded with the working dir
    else:
        print(f"note: {config} is outside {working_dir}; it must exist at that path on the head node", file=sys.stderr)
    rest = [o for o in overrides if o.partition("=")[0].strip() != "run_dir"]
    entrypoint = shlex.join([python, "-m", "pipelines.round", "--round", round_spec, "--config", config, *rest,
                             f"run_dir={run_dir}"])
    env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
    # builtin:arena is built on first use; on shared storage it is built once and every node reads the same copy.
    env.setdefault("SELFPLAY_ASSETS", str(Path(run_dir) / "assets"))
    runtime_env: dict = {"working_dir": str(working_dir), "excludes": EXCLUDES, "env_vars": env}
    if py_executable:
        runtime_env["py_executable"] = py_executable
    return entrypoint, runtime_env


def submit(address: str, entrypoint: str, runtime_env: dict, *, wait: bool = True, name: str = "") -> int:
    """Submit, stream logs until the job ends, and map its status to an exit code."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                               submission_id=f"selfplay-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
                               metadata={"selfplay_rounds": name})
    print(f"submitted {job_id} to {address}\n  {entrypoint}", file=sys.stderr, flush=True)
    if not wait:
        return 0
    try:
        asyncio.run(_stream_logs(client, job_id))
        status = _wait_terminal(client, job_id)
    except KeyboardInterrupt:
        print(f"\ndetached; the job keeps running. Stop it with: ray job stop --address {address} {job_id}",
              file=sys.stderr)
        return 130
    info = client.get_job_info(job_id)
    print(f"job {job_id}: {status}" + (f" ({info.message})" if status != "SUCCEEDED" and info.message else ""),
          file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


async def _stream_logs(client, job_id: str) -> None:
    async for chunk in client.tail_job_logs(job_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()


def _wait_terminal(client, job_id: str, timeout_s: float = 60.0) -> str:
    """The log stream can close a moment before the status turns terminal."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Submit self-play rounds to a Ray cluster as one job.",
                                 epilog="overrides: key.sub=value ...; run_dir=/abs/shared/path is required")
    ap.add_argument("--address", default=os.environ.get("RAY_ADDRESS", ""),
                    help="the head's dashboard, http://<head>:8265 (default: $RAY_ADDRESS)")
    ap.add_argument("--round", required=True, help="round n, or a range a-b run in order by one job")
    ap.add_argument("--config", default="configs/arena_sppo.yaml")
    ap.add_argument("--python", default="python", help="the Python that runs the driver on the head (default: python on its PATH)")
    ap.add_argument("--py-executable", default=None, help="runtime_env py_executable for Ray workers (default: Ray's own)")
    ap.add_argument("--no-wait", action="store_true", help="print the job id and return")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    if not args.address.startswith(("http://", "https://")):
        print("error: --address must be the head's dashboard URL, e.g. http://<head>:8265", file=sys.stderr)
        return 2
    try:
        entrypoint, runtime_env = build_job(args.round, args.config, args.overrides, python=args.python,
                                            py_executable=args.py_executable)
    except (ValueError, RoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return submit(args.address, entrypoint, runtime_env, wait=not args.no_wait, name=f"r{args.round}")


if __name__ == "__main__":
    raise SystemExit(main())
