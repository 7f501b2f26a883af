"""Job submission: the job's shape, the preflight, the shared-run-dir check, and one real round
through a Ray head started as docs/cluster.md says.

The slow test is docs/cluster.md's walk-through, read from the doc and run by bash as written there: the
setup lines of section 2 (exports, the token command, HEAD=...) and its head start, section 4's `make
submit`, and section 2's stop line. What the test changes is named where it changes it (_swap): free ports
for 6379 and 8265, a temp dir name and run dir of its own, a fresh config dir for the token, `-s -o setup`
and a tiny round in ARGS. PATH has no virtual environment on it. The stop must end that head and spare
another Ray of the same user (this process's); a fixture ends what is left of the head if the test fails.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.ray_env import gcs_answer
from pipelines.submit import (EXCLUDES, PREFLIGHT_TAG, SharedRunDirError, assets_dir, build_job, check_shared_run_dir,
                              connect, main, preflight_entrypoint, preflight_report, probe_run_dir, shared_dir_report,
                              uses_builtin_assets)
from selfplay.data import DataError, assets_root

REPO = Path(__file__).resolve().parent.parent


def test_job_runs_the_round_driver_from_the_uploaded_repo_with_the_submitting_python(tmp_path):
    entry, env = build_job("1-3", "configs/arena_sppo.yaml", ["train.lr=1e-4", f"run_dir={tmp_path}"])
    assert shlex.split(entry) == [sys.executable, "-m", "pipelines.round", "--round", "1-3", "--config",
                                  "configs/arena_sppo.yaml", "train.lr=1e-4", f"run_dir={tmp_path}"]
    assert env["working_dir"] == str(REPO)
    assert {"runs/", ".venv*", ".git", "__pycache__", "artifacts/"} <= set(env["excludes"])
    assert "pip" not in env and "conda" not in env and "uv" not in env   # the cluster's env is used as is
    # the one assets location, absolute (the job's cwd is a copy without assets/), never built by the job
    assert env["env_vars"]["SELFPLAY_ASSETS"] == assets_dir() and os.path.isabs(assets_dir())
    assert env["env_vars"]["SELFPLAY_ASSETS_BUILD"] == "0"
    with pytest.raises(ValueError, match="absolute path to an interpreter"):
        build_job("1", "configs/arena_sppo.yaml", [f"run_dir={tmp_path}"], python="python")


def test_assets_dir_is_absolute_from_the_env_or_the_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("SELFPLAY_ASSETS", raising=False)
    assert assets_dir() == str(REPO / "assets")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SELFPLAY_ASSETS", "shared/assets")
    assert assets_dir() == str(tmp_path / "shared/assets")


def test_a_job_never_builds_missing_assets(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFPLAY_ASSETS", str(tmp_path))
    assert assets_root() == tmp_path / "arena"            # by default, resolve_builtin builds them here
    monkeypatch.setenv("SELFPLAY_ASSETS_BUILD", "0")
    with pytest.raises(DataError, match=r"missing or stale at .*/arena on .*make assets"):
        assets_root()
    (tmp_path / "arena").mkdir()
    (tmp_path / "arena/manifest.json").write_text('{"key": "another spec"}')
    with pytest.raises(DataError, match="missing or stale"):
        assets_root()


def test_only_configs_naming_builtin_assets_need_them():
    assert uses_builtin_assets("configs/arena_sppo.yaml", [])
    assert not uses_builtin_assets("configs/paper/sppo_mistral7b_pairrm.yaml", [])
    assert uses_builtin_assets("configs/paper/sppo_mistral7b_pairrm.yaml", ["data.eval_prompts=builtin:arena/eval"])


def _report(**probe) -> str:
    return preflight_report("/venv/bin/python", "/shared/assets", True, f"noise\n{PREFLIGHT_TAG} {json.dumps(probe)}\n")


def test_preflight_names_the_fix_for_each_failure():
    msg = _report(missing=True, host="head1")
    assert "/venv/bin/python does not exist (or is not executable) on the Ray head (head1)" in msg
    assert "/venv/bin/ray start --head" in msg
    assert "cannot import torch (ModuleNotFoundError" in _report(host="h", python="3.11.9",
                                                                 torch_error="ModuleNotFoundError: torch")
    assert "cannot join the cluster" in _report(host="h", python="3.12.1", torch="2.13", ray="2.59.0",
                                                ray_error="RuntimeError: Version mismatch")
    msg = _report(host="h", python="3.11.9", torch="2.13", ray="2.60.0", assets=False)
    assert "not at /shared/assets/arena" in msg and "make assets" in msg
    assert _report(host="h", python="3.11.9", torch="2.13", ray="2.60.0", assets=True) == ""
    assert preflight_report("/p", "/a", False, f"{PREFLIGHT_TAG} " + json.dumps({"assets": False})) == ""
    assert "did not report" in preflight_report("/p", "/a", False, "sh: 1: oops")


def test_preflight_entrypoint_reports_a_missing_interpreter_in_sh(tmp_path):
    cmd = preflight_entrypoint(str(tmp_path / "no such dir/python"), "/a b")
    out = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    msg = preflight_report(str(tmp_path / "x"), "/a", True, out.stdout)
    assert "does not exist (or is not executable) on the Ray head" in msg


def test_relative_run_dir_and_bad_rounds_are_refused_before_submitting(capsys):
    assert main(["--address", "http://127.0.0.1:1", "--round", "1", "run_dir=runs/x"]) == 2
    assert "absolute path" in capsys.readouterr().err
    assert main(["--address", "http://127.0.0.1:1", "--round", "3-1", "run_dir=/shared/x"]) == 2
    assert main(["--address", "127.0.0.1:6379", "--round", "1", "run_dir=/shared/x"]) == 2
    assert "dashboard URL" in capsys.readouterr().err


def test_an_unreachable_head_is_one_message():
    # not under capsys: Ray's log handler keeps the stderr it was created with, and capsys closes its own
    port = _free_ports(1)[0]   # nothing listens there
    with pytest.raises(ConnectionError, match=f"cannot reach the Ray dashboard at http://127.0.0.1:{port}: is the"):
        connect(f"http://127.0.0.1:{port}")


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


# ---------------------------------------------------------------- a real head started as documented, one round

DOC = REPO / "docs" / "cluster.md"
TINY = ["data.prompts_per_round=16", "data.eval_limit=16", "generation.k=2", "train.epochs=1",
        "eval.samples_per_prompt=1", "wandb.mode=disabled", "generation.max_new_tokens=12"]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _documented(prefix: str) -> str:
    """The one line of docs/cluster.md that starts with `prefix` (inside a code block)."""
    lines = [ln.strip() for ln in DOC.read_text().splitlines() if ln.strip().startswith(prefix)]
    assert len(lines) == 1, f"docs/cluster.md should show exactly one `{prefix} ...` line, found {lines}"
    return lines[0]


def _shell_env(**extra: str) -> dict[str, str]:
    """A user's shell with no virtual environment active: nothing of the venv on PATH."""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
           "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
    return {**env, **extra}


def _swap(line: str, swaps: dict[str, str]) -> str:
    """line with each documented value replaced by the test's own (each must occur exactly once)."""
    for old, new in swaps.items():
        assert line.count(old) == 1, f"docs/cluster.md's `{line}` should hold `{old}` once"
        line = line.replace(old, new)
    return line


@dataclass(frozen=True)
class Head:
    """A head started with docs/cluster.md's lines; `preamble` is the doc's setup lines (exports, token,
    HEAD=...) with this head's temp dir name, which every later documented command runs after, as in the
    user's shell."""
    url: str
    gcs: int
    temp_dir: str
    preamble: str
    env: dict
    token_file: Path


def _run_documented(head_or_preamble, line: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """bash runs the doc's setup lines, then `line`, from the repository root."""
    preamble = head_or_preamble.preamble if isinstance(head_or_preamble, Head) else head_or_preamble
    return subprocess.run(["bash", "-c", f"set -e\n{preamble}\n{line}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def head(tmp_path):
    """A head started by bash running docs/cluster.md section 2's lines as written there, with free ports,
    a temp dir name of its own and a fresh config dir (so the doc's token command makes the token)."""
    gcs, dash = _free_ports(2)
    name = f"t{os.getpid()}"   # short, as Ray's socket paths under it must stay within 107 bytes
    exports = _documented("export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=")
    exported = dict(e.split("=", 1) for e in shlex.split(exports, comments=True)[1:])
    assert exported.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0" and exported.get("RAY_AUTH_MODE") == "token"
    preamble = "\n".join([exports, _documented("export RAY_AUTH_TOKEN_PATH="),
                          _swap(_documented("HEAD="), {"temp-dir head": f"temp-dir {name}"})])
    doc_start = _documented(".venv/bin/ray start --head --port=6379 --dashboard-host=127.0.0.1")
    start = _swap(doc_start, {"--port=6379": f"--port={gcs}", "--dashboard-port=8265": f"--dashboard-port={dash}"})
    assert start != doc_start and "--temp-dir=$HEAD" in start and "--dashboard-host=127.0.0.1" in start
    assert re.findall(r"--[\w-]*port=\S+", start) == [f"--port={gcs}", f"--dashboard-port={dash}",
                                                      "--dashboard-agent-listen-port=0"]   # the doc's ports only
    env = _shell_env(XDG_CONFIG_HOME=str(tmp_path / "config"))
    temp = str(Path("/tmp") / f"selfplay-ray-{os.getuid()}" / name)
    h = Head(f"http://127.0.0.1:{dash}", gcs, temp, preamble, env, tmp_path / "config/selfplay/ray_auth_token")
    t0 = time.monotonic()
    try:
        started = _run_documented(h, start, env, timeout=120)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        _wait_for_dashboard(h)
        print(f"head up in {time.monotonic() - t0:.1f}s: {start}")
        yield h
    finally:
        _stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_dashboard(head: Head, timeout_s: float = 90) -> None:
    import urllib.request
    deadline = time.monotonic() + timeout_s
    auth = {"Authorization": f"Bearer {head.token_file.read_text().strip()}"}
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{head.url}/api/version", headers=auth),
                                        timeout=2) as r:
                if r.status == 200:
                    return
        except OSError as e:
            last = e
        time.sleep(0.5)
    logs = sorted(Path(head.temp_dir).glob("session_latest/logs/dashboard*.err"))
    raise RuntimeError(f"the dashboard at {head.url} did not come up in {timeout_s}s ({last!r}); "
                       + "".join(f"\n{f.name}: {f.read_text()[-1500:]}" for f in logs))


def _job_post(url: str, token: str | None) -> int | None:
    """The HTTP status a job submission to url's job API gets, with `token` (None: no Authorization)."""
    import urllib.error
    import urllib.request
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(f"{url}/api/jobs/", data=json.dumps({"entrypoint": "id"}).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:   # nothing listens there
        return None


def _stop_cluster(temp: str) -> None:
    """`ray stop`, limited to this head: SIGTERM to every process whose command line names our temp
    dir and to their descendants (workers rename themselves), then SIGKILL to what is left."""
    pids = _with_descendants(_processes_mentioning(temp))
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while (pids := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.25)
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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


def _with_descendants(roots: list[int]) -> list[int]:
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(roots), list(roots)
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in found]
        found.update(kids)
        frontier += kids
    return sorted(found)


def _make_submit(head: Head, round_: str, run_dir: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    """docs/cluster.md section 4's `make submit` line, after section 2's setup lines, from a shell without the
    venv on PATH; the test adds `-s -o setup` (skips only the install step: this venv is the one under test)
    and ARGS (a tiny round, within the time a test may take)."""
    line = _documented("make submit ROUND=1 ADDRESS=http://127.0.0.1:8265")
    assert line.startswith("make submit ROUND=1")
    line = _swap(line, {"make submit ROUND=1": f"make -s -o setup submit ROUND={round_}",
                        "ADDRESS=http://127.0.0.1:8265": f"ADDRESS={head.url}",
                        "RUN_DIR=/tmp/selfplay-runs/arena": f"RUN_DIR={shlex.quote(str(run_dir))} "
                                                            f"ARGS={shlex.quote(shlex.join([*extra, *TINY]))}"})
    keep = {k: os.environ[k] for k in ("SELFPLAY_ASSETS", "HF_HOME") if k in os.environ}
    return _run_documented(head, line, {**head.env, **keep, **env}, timeout=300)


@pytest.fixture(scope="module")
def assets() -> Path:
    """The arena at the documented location (`make assets`), built once; the job must only read it."""
    from selfplay.assets import build_assets
    root = Path(assets_dir()) / "arena"
    build_assets(root)
    return root


@pytest.mark.slow
def test_submit_as_documented_runs_with_the_venv_and_reads_the_built_assets(head, assets, tmp_path, ray_local):
    """docs/cluster.md's walk-through as written: start the head (the fixture), submit, stop the head; with
    token authentication on, and another Ray of the same user (this process's, ray_local) left running."""
    run_dir = tmp_path / "run"
    built = (assets / "manifest.json").stat().st_mtime_ns

    # The doc's token command made the token, this user's alone; the head refuses requests without it.
    assert stat.S_IMODE(head.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(head.token_file.parent.stat().st_mode) == 0o700
    assert _job_post(head.url, None) == 401 and _job_post(head.url, "not-the-token") == 403
    assert os.environ["RAY_AUTH_TOKEN_PATH"] != str(head.token_file)   # this process holds the tests' token:
    assert gcs_answer(f"127.0.0.1:{head.gcs}") == "UNAUTHENTICATED"    # the head's GCS refuses it
    wrong = tmp_path / "wrong_token"
    wrong.write_text("not-the-token")
    wrong.chmod(0o600)
    refused = _make_submit(head, "1", run_dir, RAY_AUTH_TOKEN_PATH=str(wrong))
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Traceback" not in out, out[-4000:]
    assert f"error: the Ray head at {head.url} refused this client (a token it does not accept)" in out
    assert "RAY_AUTH_TOKEN_PATH=<its token file>" in out

    # The head's interpreter and the assets are checked before anything is uploaded.
    t0 = time.monotonic()
    missing = _make_submit(head, "1", run_dir, "--python=/nonexistent/venv/bin/python")
    out = missing.stdout + missing.stderr
    assert missing.returncode != 0, out[-4000:]
    assert "error: /nonexistent/venv/bin/python does not exist (or is not executable) on the Ray head" in out
    assert "ray start --head" in out
    empty = tmp_path / "empty"
    no_assets = _make_submit(head, "1", run_dir, SELFPLAY_ASSETS=str(empty))
    out = no_assets.stdout + no_assets.stderr
    assert no_assets.returncode != 0, out[-4000:]
    assert f"error: the arena assets are not at {empty}/arena" in out and "make assets" in out
    assert not run_dir.exists() and not empty.exists()
    print(f"two refused submissions: {time.monotonic() - t0:.0f}s")

    t0 = time.monotonic()
    done = _make_submit(head, "1", run_dir)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    seconds = time.monotonic() - t0
    assert f"SELFPLAY_ASSETS={assets.parent}" in out and "round 1 complete" in out
    for d in ("generations", "judgments", "preferences", "policy", "eval"):
        assert (run_dir / "round_1" / d / "manifest.json").exists(), d
    metrics = json.loads((run_dir / "round_1/eval/metrics.json").read_text())
    assert metrics["round"] == 1 and 0 <= metrics["winrate_vs_initial"]["mean"] <= 1
    # the assets were read where they were built, not rebuilt anywhere
    logs = out + "".join(f.read_text(errors="replace") for f in run_dir.rglob("*.log"))
    assert "warm start" not in logs                              # the tiny policy's training bar
    assert (assets / "manifest.json").stat().st_mtime_ns == built
    assert not (run_dir / "assets").exists() and not any(p.name == "arena" for p in run_dir.rglob("*"))
    print(f"one round through the job: {seconds:.0f}s; its preflight: "
          + next((ln for ln in out.splitlines() if ln.startswith("preflight on the head")), "?"))

    # A failing job (round 3 needs round 2) comes back as a nonzero exit with the driver's message.
    t0 = time.monotonic()
    failed = _make_submit(head, "3", run_dir)
    assert failed.returncode != 0                                # make's own 2 for a failed recipe
    assert "round 2 is not complete" in failed.stdout + failed.stderr
    print(f"a failing job: {time.monotonic() - t0:.0f}s")

    # The doc's stop line ends this head and nothing else: this process's Ray still runs tasks.
    import ray
    ours = ray.get(ray.remote(lambda: os.getpid()).remote())
    stopped = _run_documented(head, _documented(".venv/bin/python -m pipelines.reaper stop"), head.env, timeout=60)
    assert stopped.returncode == 0 and f"processes of the Ray in {head.temp_dir}" in stopped.stdout, stopped
    assert _processes_mentioning(head.temp_dir) == [], "the documented stop left processes of the head"
    assert _job_post(head.url, None) is None, "the head's dashboard still answers"
    assert ray.get(ray.remote(lambda: os.getpid()).remote()) > 0 and _alive(ours), "the stop ended another Ray"
