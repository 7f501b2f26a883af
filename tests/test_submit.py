"""Job submission: the job's shape, the shared-run-dir check, and one real round through a Ray head.

The slow test starts a head with `ray start --head --block` on loopback (its own temp dir and
free ports) and stops it by signalling that process, whose shutdown hook ends the node's
processes. `ray stop` is not used: it ends every Ray process of the user on the machine,
including clusters that are not ours.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipelines.submit import (EXCLUDES, SharedRunDirError, build_job, check_shared_run_dir, main, probe_run_dir,
                              shared_dir_report)

REPO = Path(__file__).resolve().parent.parent
TINY = ["data.prompts_per_round=16", "data.eval_limit=16", "generation.k=3", "train.epochs=1", "wandb.mode=disabled",
        "generation.max_new_tokens=12"]


def test_job_runs_the_round_driver_from_the_uploaded_repo(tmp_path):
    entry, env = build_job("1-3", "configs/arena_sppo.yaml", ["train.lr=1e-4", f"run_dir={tmp_path}"])
    assert shlex.split(entry) == ["python", "-m", "pipelines.round", "--round", "1-3", "--config",
                                  "configs/arena_sppo.yaml", "train.lr=1e-4", f"run_dir={tmp_path}"]
    assert env["working_dir"] == str(REPO)
    assert {"runs/", ".venv*", ".git", "__pycache__", "artifacts/"} <= set(env["excludes"])
    assert "pip" not in env and "conda" not in env and "uv" not in env   # the cluster's env is used as is
    assert env["env_vars"]["SELFPLAY_ASSETS"] in (os.environ.get("SELFPLAY_ASSETS"), str(tmp_path / "assets"))


def test_relative_run_dir_and_bad_rounds_are_refused_before_submitting(capsys):
    assert main(["--address", "http://127.0.0.1:1", "--round", "1", "run_dir=runs/x"]) == 2
    assert "absolute path" in capsys.readouterr().err
    assert main(["--address", "http://127.0.0.1:1", "--round", "3-1", "run_dir=/shared/x"]) == 2
    assert main(["--address", "127.0.0.1:6379", "--round", "1", "run_dir=/shared/x"]) == 2
    assert "dashboard URL" in capsys.readouterr().err


def test_probe_sees_the_marker_or_says_why(tmp_path):
    (tmp_path / "m").write_text("tok")
    assert probe_run_dir(str(tmp_path), "m", "tok", 0)["ok"]
    assert "not visible" in probe_run_dir(str(tmp_path), "absent", "tok", 0)["reason"]
    assert "does not exist" in probe_run_dir(str(tmp_path / "nope"), "m", "tok", 0)["reason"]
    assert "other content" in probe_run_dir(str(tmp_path), "m", "other", 0)["reason"]


def test_report_names_each_failing_node():
    ok = {"ok": True, "node": "10.0.0.1", "host": "a", "reason": ""}
    bad = {"ok": False, "node": "10.0.0.2", "host": "b", "reason": "the directory does not exist on this node"}
    assert shared_dir_report(Path("/x"), [ok]) == ""
    msg = shared_dir_report(Path("/x"), [ok, bad])
    assert "1 of 2 Ray nodes" in msg and "10.0.0.2 (b): the directory does not exist" in msg
    assert issubclass(SharedRunDirError, RuntimeError)


def test_check_probes_every_node_and_cleans_up(ray_local, tmp_path):
    check_shared_run_dir(tmp_path / "run", always=True)   # one task pinned to the (only) node
    assert list((tmp_path / "run").iterdir()) == []         # the marker is gone


# ---------------------------------------------------------------- a real head, one round

def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)   # the venv: the head's PATH gives the job its `python`
    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**base, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
            "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture
def head():
    """A single-node cluster bound to 127.0.0.1; yields the dashboard URL."""
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")   # short: AF_UNIX paths must stay < 108 bytes
    gcs, dash, client, agent, agent_grpc, rt_agent, metrics, nm, om = _free_ports(9)
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--num-cpus=2",
           "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={rt_agent}",
           f"--metrics-export-port={metrics}", f"--node-manager-port={nm}", f"--object-manager-port={om}",
           f"--temp-dir={temp}", "--disable-usage-stats"]
    log = open(Path(temp) / "head.log", "w")
    proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        _wait_for_dashboard(url, proc, Path(temp) / "head.log")
        yield url
    finally:
        _stop_head(proc, temp)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_dashboard(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    import urllib.request
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the dashboard at {url} did not come up in {timeout_s}s:\n{log.read_text()[-3000:]}")


def _stop_head(proc: subprocess.Popen, temp: str) -> None:
    """SIGTERM to `ray start --block` runs its shutdown hook; then end any leftover process of this
    node (found by our unique temp dir in its command line), by pid."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = _processes_mentioning(temp)
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if left:
            time.sleep(2)


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _submit_cmd(address: str, round_: str, run_dir: Path) -> list[str]:
    """`make submit`, as a user types it (setup skipped: this venv is the one under test)."""
    args = [*TINY, f"run_dir={run_dir}"]
    return ["make", "-s", "-o", "setup", "submit", f"ROUND={round_}", f"ADDRESS={address}",
            "CONFIG=configs/arena_sppo.yaml", f"ARGS={shlex.join(args)}"]


@pytest.fixture(scope="module")
def assets() -> str:
    """The tiny policy, built once in the repo (a cluster would build it under run_dir/assets)."""
    from selfplay.assets import build_assets
    root = Path(os.environ.get("SELFPLAY_ASSETS", REPO / "assets")).resolve()
    build_assets(root / "arena")
    return str(root)


@pytest.mark.slow
def test_submit_one_round_through_a_ray_head(head, assets, tmp_path):
    run_dir = tmp_path / "run"
    env = {**_env(), "SELFPLAY_ASSETS": assets}
    t0 = time.monotonic()
    done = subprocess.run(_submit_cmd(head, "1", run_dir), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "round 1 complete" in done.stdout + done.stderr
    for d in ("generations", "judgments", "preferences", "policy", "eval"):
        assert (run_dir / "round_1" / d / "manifest.json").exists(), d
    metrics = json.loads((run_dir / "round_1/eval/metrics.json").read_text())
    assert metrics["round"] == 1 and 0 <= metrics["winrate_vs_initial"]["mean"] <= 1
    print(f"one round through the job: {time.monotonic() - t0:.0f}s")

    # A failing job (round 3 needs round 2) comes back as a nonzero exit with the driver's message.
    failed = subprocess.run(_submit_cmd(head, "3", run_dir), cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert failed.returncode != 0
    assert "round 2 is not complete" in failed.stdout + failed.stderr
