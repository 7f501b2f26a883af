"""Submit rounds to a running Ray cluster as one Ray job, stream its logs, exit with its status.

    python -m pipelines.submit --address http://<head>:8265 --round 1 [--config F] run_dir=/shared/runs/x [k=v ...]
    make submit ROUND=1 ADDRESS=http://<head>:8265 RUN_DIR=/shared/runs/x      (ROUNDS=1-3 for a sequence)

The job's working directory is a copy of the files git tracks here, as they are now: nothing
untracked is uploaded (a venv, run outputs, a log being written), so the upload stays small and cannot
change while Ray zips it. Its entrypoint is `<python> -m pipelines.round ...` on the head node,
where <python> is the interpreter running this module (`make submit` runs it with .venv/bin/python):
the job runs in the environment that submitted it, whatever the head's PATH says. Nothing is installed
for the job: every node is expected to hold the repository and its .venv at the same path and to run
Ray from it (see docs/cluster.md), and workers use the Python that runs Ray there.

Before uploading anything, a preflight job (no working_dir) runs that interpreter on the head: it
must exist, import torch, and join the cluster as a driver (same Ray and Python), and the arena
assets must be where the job will look for them. Each failure is one message naming the fix.

The job client sends this user's Ray token (pipelines/ray_env.py) with every request; the head must run
with the same token (docs/cluster.md, section 2). A refused token, a head without a job agent, an
upload too large and an unreachable head each end in one line naming the fix.

Assets: the job gets SELFPLAY_ASSETS as an absolute path (this environment's SELFPLAY_ASSETS, else
<repo>/assets) and SELFPLAY_ASSETS_BUILD=0, so a node without them fails with a message naming
`make assets` instead of building them in the job's temporary copy of the repository.

The run directory must be storage that every node sees (NFS, Lustre, a FUSE-mounted bucket):
stages run on any node and read each other's outputs from it. check_shared_run_dir() verifies
that from inside the job, before any stage starts.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pipelines.graph import RoundError, parse_rounds
from pipelines.ray_env import RaySetupError, use_token   # before ray: token auth, loopback

REPO = Path(__file__).resolve().parent.parent
# Uploaded with the job: code and configs only. Ray also honours .gitignore; these hold either way.
EXCLUDES = ["runs/", "artifacts/", "assets/", ".venv*", ".git", ".cache", "__pycache__", "*.pyc", ".pytest_cache",
            "wandb/", ".wandb/", "*.egg-info"]
# Forwarded to the job when set here; the cluster's own environment supplies everything else.
# (SELFPLAY_ASSETS is always passed, as an absolute path: see assets_dir.)
FORWARD_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM",
               "WANDB_MODE", "VLLM_CACHE_ROOT")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
PREFLIGHT_TAG = "SELFPLAY_PREFLIGHT"


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

def settings_of(config: str | None, overrides: list[str]) -> dict:
    """The config as a plain tree (defaults, then the file, then the overrides, as load_config reads
    them), without validating it: paths in it may exist only on the cluster."""
    import copy

    import yaml

    from selfplay.config import Config, to_dict
    data = (yaml.safe_load(Path(config).read_text()) or {}) if config and Path(config).exists() else {}
    for item in overrides:
        key, _, raw = item.partition("=")
        node = data
        *parents, leaf = key.strip().split(".")
        for k in parents:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[leaf] = yaml.safe_load(raw)
    if "eval_judge" not in data:   # as in load_config: the evaluation judge is a copy of judge:
        data["eval_judge"] = copy.deepcopy(data.get("judge") or {})
    tree = to_dict(Config())
    _merge(tree, data)
    return tree


def _merge(tree: dict, data: dict) -> None:
    for k, v in data.items():
        if isinstance(v, dict) and isinstance(tree.get(k), dict):
            _merge(tree[k], v)
        else:
            tree[k] = v


def run_dir_of(config: str | None, overrides: list[str]) -> str:
    """run_dir as the job will see it (last override wins)."""
    return str(settings_of(config, overrides)["run_dir"])


def uses_builtin_assets(config: str | None, overrides: list[str]) -> bool:
    """Does any setting name a builtin:arena asset (the policy, a prompt set, a judge model)?"""
    def walk(v) -> bool:
        if isinstance(v, dict):
            return any(walk(x) for x in v.values())
        if isinstance(v, (list, tuple)):
            return any(walk(x) for x in v)
        return isinstance(v, str) and v.startswith("builtin:")
    return walk(settings_of(config, overrides))


def assets_dir() -> str:
    """The one assets location, absolute: $SELFPLAY_ASSETS (relative to the current directory), else
    <repo>/assets. The job gets this exact path; symlinks are kept, since a mount point may be a link."""
    return os.path.abspath(os.environ.get("SELFPLAY_ASSETS") or REPO / "assets")


def build_job(round_spec: str, config: str, overrides: list[str], *, python: str = sys.executable,
              py_executable: str | None = None, working_dir: Path = REPO,
              assets: str | None = None) -> tuple[str, dict]:
    """(entrypoint, runtime_env) for the job; raises ValueError for what would fail on the cluster."""
    parse_rounds(round_spec)  # a bad range fails here, not after the upload
    run_dir = run_dir_of(config, overrides)
    if not Path(run_dir).is_absolute():
        raise ValueError(f"run_dir must be an absolute path on storage every node mounts, got {run_dir!r} "
                         "(e.g. RUN_DIR=/shared/runs/arena); a relative one would land in the job's temporary copy")
    if not os.path.isabs(python):
        raise ValueError(f"--python must be an absolute path to an interpreter on the head, got {python!r}")
    cfg_path = Path(config).resolve()
    if cfg_path.is_relative_to(working_dir.resolve()):
        config = str(cfg_path.relative_to(working_dir.resolve()))  # uploaded with the working dir
    else:
        print(f"note: {config} is outside {working_dir}; it must exist at that path on the head node", file=sys.stderr)
    rest = [o for o in overrides if o.partition("=")[0].strip() != "run_dir"]
    entrypoint = shlex.join([python, "-m", "pipelines.round", "--round", round_spec, "--config", config, *rest,
                             f"run_dir={run_dir}"])
    env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
    # The job's cwd is a temporary copy of the repository without assets/: without an absolute path
    # the arena would be looked for (and built) there. With SELFPLAY_ASSETS_BUILD=0 a node that lacks
    # the assets fails with a message naming `make assets` instead of building them.
    env["SELFPLAY_ASSETS"] = assets or assets_dir()
    env["SELFPLAY_ASSETS_BUILD"] = "0"
    runtime_env: dict = {"working_dir": str(working_dir), "excludes": EXCLUDES, "env_vars": env}
    if py_executable:
        runtime_env["py_executable"] = py_executable
    return entrypoint, runtime_env


# ---------------------------------------------------------------- preflight: the job's Python and assets on the head

class PreflightError(RuntimeError):
    """The head cannot run the job as submitted; the message says what to do."""


# Run on the head by the job's interpreter: one tagged JSON line, whatever fails.
_PROBE = """
import json, os, socket, sys
out = {"host": socket.gethostname(), "python": sys.version.split()[0]}
try:
    import torch
    out["torch"] = torch.__version__
except Exception as e:
    out["torch_error"] = f"{type(e).__name__}: {e}"
try:
    import ray
    out["ray"] = ray.__version__
    ray.init(log_to_driver=False, logging_level="ERROR")
    ray.shutdown()
except Exception as e:
    out["ray_error"] = f"{type(e).__name__}: {str(e).strip()[:600]}"
out["assets"] = os.path.isfile(os.path.join(sys.argv[1], "arena", "manifest.json"))
print(%r, json.dumps(out), flush=True)
""" % PREFLIGHT_TAG


def preflight_entrypoint(python: str, assets: str) -> str:
    """A POSIX sh command: the probe, or a tagged line saying the interpreter is not there."""
    py = shlex.quote(python)
    return (f"if [ -x {py} ]; then exec {py} -c {shlex.quote(_PROBE)} {shlex.quote(assets)}; "
            f"else echo {PREFLIGHT_TAG} '{{\"missing\": true, \"host\": \"'\"$(uname -n)\"'\"}}'; fi")


def preflight_report(python: str, assets: str, needs_assets: bool, logs: str) -> str:
    """'' when the head can run the job, else the message for the user."""
    line = next((ln for ln in logs.splitlines() if ln.startswith(PREFLIGHT_TAG + " ")), None)
    start_head = (f"Start the head from the environment you submit from: `{Path(python).parent}/ray start --head ...` "
                  f"in a clone at {REPO} on the head (see docs/cluster.md, sections 1-2), or pass "
                  "--python <an interpreter on the head that has this project's environment>.")
    if line is None:
        return (f"the preflight job on the head did not report (is /bin/sh there?); its log:\n{logs[-2000:]}")
    try:
        r = json.loads(line[len(PREFLIGHT_TAG) + 1:])
    except ValueError:
        return f"the preflight job on the head reported garbage: {line[:500]}"
    where = f"the Ray head ({r.get('host', '?')})"
    if r.get("missing"):
        return (f"{python} does not exist (or is not executable) on {where}. The job runs with the Python that "
                f"submitted it. {start_head}")
    if "torch_error" in r:
        return f"{python} on {where} cannot import torch ({r['torch_error']}). {start_head}"
    if "ray_error" in r:
        return (f"{python} on {where} (Python {r['python']}, ray {r.get('ray', '?')}) cannot join the cluster as the "
                f"job's driver: {r['ray_error']}. {start_head}")
    if needs_assets and not r.get("assets"):
        return (f"the arena assets are not at {assets}/arena on {where}, and jobs do not build them. Build them "
                f"there with `make assets` in {REPO} (the default location, <repo>/assets), or on shared storage "
                f"with `{python} -m selfplay.assets --out <dir>/arena` and submit with SELFPLAY_ASSETS=<dir>; "
                "every node reads them at that path (see docs/cluster.md).")
    return ""


def preflight(client, python: str, assets: str, needs_assets: bool, *, timeout_s: float = 180.0) -> None:
    """Run the probe as a job without a working_dir (nothing is uploaded); raise PreflightError."""
    job_id = client.submit_job(entrypoint=preflight_entrypoint(python, assets),
                               submission_id=f"selfplay-preflight-{uuid.uuid4().hex[:10]}",
                               metadata={"selfplay": "preflight"})
    deadline = time.monotonic() + timeout_s
    while (status := str(client.get_job_status(job_id).value)) not in TERMINAL:
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            raise PreflightError(f"the preflight job {job_id} did not finish within {timeout_s:.0f}s (is the "
                                 "head out of CPUs for the job supervisor?)")
        time.sleep(0.25)
    logs = client.get_job_logs(job_id)
    message = preflight_report(python, assets, needs_assets, logs)
    if not message and status != "SUCCEEDED":
        message = f"the preflight job ended {status}: {client.get_job_info(job_id).message}\n{logs[-2000:]}"
    try:
        client.delete_job(job_id)   # keep `ray job list` to the real jobs
    except Exception:  # noqa: BLE001  a leftover preflight entry is harmless
        pass
    if message:
        raise PreflightError(message)


def connect(address: str):
    """A JobSubmissionClient for the head's dashboard, sending this user's Ray token; ConnectionError with
    what to check when the head cannot be reached (a refused token: head_error)."""
    use_token(create=False)
    from ray.job_submission import JobSubmissionClient
    try:
        return JobSubmissionClient(address)
    except ConnectionError as e:
        raise ConnectionError(f"cannot reach the Ray dashboard at {address}: is the head started (docs/cluster.md, "
                              f"section 2) and its --dashboard-host reachable from here? ({e})") from None


def head_error(e: Exception, address: str) -> str:
    """One line for what the head answered a request with: the cause and the fix."""
    text = str(e)
    if type(e).__name__ == "AuthenticationError":
        sent = "no token" if "Authentication required" in text else "a token it does not accept"
        return (f"the Ray head at {address} refused this client ({sent}): submit with the token it was started "
                "with, RAY_AUTH_TOKEN_PATH=<its token file> (docs/cluster.md, section 2)")
    if "status code 413" in text:
        return (f"the Ray head at {address} refused the job's upload as too large (413): the job ships the files "
                "git tracks; keep large files out of git (put data in the run dir or SELFPLAY_ASSETS)")
    if "No available agent" in text:
        return (f"the Ray head at {address} has no job agent (500: No available agent): its dashboard agent did "
                "not start, often because another Ray of this machine holds its port; start the head as "
                "docs/cluster.md shows (--dashboard-agent-listen-port=0) after stopping this one")
    return f"the Ray head at {address} failed the request: {(text.strip() or type(e).__name__).splitlines()[0][:300]}"


def tracked_files(repo: Path, dest: Path, config: str) -> str:
    """A copy under dest of the files git tracks in repo, as the working tree holds them now: the job's
    working_dir. `config` (relative to repo, or absolute) must be among them when it is in repo."""
    try:
        listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached"], capture_output=True,
                                check=True, timeout=60).stdout.decode()
    except (OSError, subprocess.SubprocessError) as e:
        raise ValueError(f"the job ships the files git tracks, but `git ls-files` failed in {repo} ({e})") from None
    names = [n for n in listed.split("\0") if n]
    if not os.path.isabs(config) and config not in names:
        raise ValueError(f"{config} is not tracked by git, and the job ships only tracked files: `git add {config}`, "
                         "or pass --config with an absolute path that exists on the head")
    for name in names:
        src = repo / name
        if src.is_symlink() or src.is_file():   # not a deleted file or a submodule's directory
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name, follow_symlinks=False)
    return str(dest)


def submit(client, entrypoint: str, runtime_env: dict, *, wait: bool = True, name: str = "") -> int:
    """Submit, stream logs until the job ends, and map its status to an exit code."""
    address = client.get_address()
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                               submission_id=f"selfplay-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
                               metadata={"selfplay_rounds": name})
    assets = runtime_env["env_vars"]["SELFPLAY_ASSETS"]
    print(f"submitted {job_id} to {address}\n  {entrypoint}\n  SELFPLAY_ASSETS={assets}", file=sys.stderr, flush=True)
    if not wait:
        return 0
    try:
        asyncio.run(_stream_logs(client, job_id))
        status = _wait_terminal(client, job_id)
    except KeyboardInterrupt:
        auth = f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={os.environ.get('RAY_AUTH_TOKEN_PATH', '<its token file>')}"
        print(f"\ndetached; the job keeps running. Stop it with: {auth} ray job stop --address {address} {job_id}",
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
    ap.add_argument("--python", default=sys.executable,
                    help="absolute path of the Python that runs the job's driver on the head (default: this one, "
                         f"{sys.executable}); checked on the head before anything is uploaded")
    ap.add_argument("--py-executable", default=None,
                    help="runtime_env py_executable for Ray workers (default: Ray's own)")
    ap.add_argument("--no-wait", action="store_true", help="print the job id and return")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args(argv)   # ARGS="--python X k=v" comes after make's run_dir=...
    if not args.address.startswith(("http://", "https://")):
        print("error: --address must be the head's dashboard URL, e.g. http://<head>:8265", file=sys.stderr)
        return 2
    assets = assets_dir()
    try:
        entrypoint, runtime_env = build_job(args.round, args.config, args.overrides, python=args.python,
                                            py_executable=args.py_executable, assets=assets)
        client = connect(args.address)
        t0 = time.monotonic()
        preflight(client, args.python, assets, uses_builtin_assets(args.config, args.overrides))
        print(f"preflight on the head: {args.python} runs the job ({time.monotonic() - t0:.1f}s)",
              file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="selfplay-job-") as snapshot:
            words = shlex.split(entrypoint)
            runtime_env["working_dir"] = tracked_files(REPO, Path(snapshot), words[words.index("--config") + 1])
            return submit(client, entrypoint, runtime_env, wait=not args.no_wait, name=f"r{args.round}")
    except (ValueError, RoundError, ConnectionError, PreflightError, RaySetupError) as e:
        print(f"error: {e}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001  what the head answered (Ray's AuthenticationError, HTTP errors)
        if type(e).__name__ != "AuthenticationError" and "Request failed with status code" not in str(e):
            raise
        print(f"error: {head_error(e, args.address)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
