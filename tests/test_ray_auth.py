"""Ray's token authentication and private temp dirs (pipelines/ray_env.py), the job's files (only what git
tracks) and the one-line answers to what a head refuses (pipelines/submit.py), the documented stop of one
Ray (pipelines/reaper.py). No Ray is started here: tests/test_security.py, test_kept_ray.py and
test_submit.py start real ones."""
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import ray_env
from pipelines.ray_env import RaySetupError, new_temp_dir, private_dir, temp_root, token_digest, token_file, use_token
from pipelines.submit import head_error, tracked_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """No token named: the project's token file under a config dir of this test; HOME elsewhere."""
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    return tmp_path


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_the_token_is_made_once_for_this_user_alone_and_never_in_dot_ray(fresh):
    path = use_token()
    assert path == fresh / "config/selfplay/ray_auth_token" == token_file()
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(path) and os.environ["RAY_AUTH_MODE"] == "token"
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700 and path.stat().st_uid == os.getuid()
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0 and ray_env.read_token() == token
    os.environ.pop("RAY_AUTH_TOKEN_PATH")
    assert use_token() == path and path.read_text() == token          # the next start reuses it
    assert token_digest() == __import__("hashlib").sha256(token.encode()).hexdigest()[:16]
    assert not (fresh / "home/.ray").exists()                         # Ray's default place, never written
    assert sorted(p.name for p in path.parent.iterdir()) == ["ray_auth_token"]   # no temp file left


def test_a_named_token_wins_and_a_joining_client_never_makes_one(fresh, monkeypatch):
    with pytest.raises(RaySetupError, match=r"no Ray token at .*ray_auth_token: copy the token file"):
        use_token(create=False)
    assert not token_file().exists()
    ray_default = fresh / "home/.ray/auth_token"   # a Ray started with Ray's own default token
    ray_default.parent.mkdir(parents=True)
    ray_default.write_text("theirs")
    ray_default.chmod(0o600)
    assert use_token(create=False) == ray_default and ray_env.read_token() == "theirs"
    mine = fresh / "mine"
    mine.write_text("named\n")
    mine.chmod(0o600)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(mine))
    assert use_token() == mine and ray_env.read_token() == "named" and not token_file().exists()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert use_token() is None and ray_env.read_token() == "from-env"


@pytest.mark.parametrize("case, said", [
    ("disabled", "RAY_AUTH_MODE=disabled: this project runs Ray with token authentication only"),
    ("readable", "is readable or writable by others (owner uid"),
    ("empty", "is empty: remove it"),
    ("missing", "cannot read the Ray token file"),
    ("open dir", "is not a directory of this user's alone"),
])
def test_a_token_that_would_not_protect_or_not_load_is_refused_in_one_line(fresh, monkeypatch, case, said):
    named = fresh / "token"
    if case == "disabled":
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    elif case == "open dir":
        (fresh / "config/selfplay").mkdir(parents=True, mode=0o755)
        (fresh / "config/selfplay").chmod(0o755)
    else:
        if case != "missing":
            named.write_text("" if case == "empty" else "tok")
            named.chmod(0o644 if case == "readable" else 0o600)
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    with pytest.raises(RaySetupError, match=re.escape(said)) as e:
        use_token()
    assert "\n" not in str(e.value)
    if case == "open dir":
        assert not token_file().exists()


def test_the_token_command_prints_the_file_and_refuses_a_disabled_mode(fresh):
    env = {**os.environ}
    p = subprocess.run([sys.executable, "-m", "pipelines.ray_env", "token"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == str(token_file()) and _mode(token_file()) == 0o600, p.stderr
    p = subprocess.run([sys.executable, "-m", "pipelines.ray_env", "token"], cwd=ROOT, capture_output=True, text=True,
                       env={**env, "RAY_AUTH_MODE": "disabled"}, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("error: RAY_AUTH_MODE=disabled") and "Traceback" not in p.stderr


def test_ray_temp_dirs_sit_in_a_directory_only_this_user_can_enter(tmp_path):
    root = temp_root()
    assert root == Path(f"/tmp/selfplay-ray-{os.getuid()}") and _mode(root) == 0o700
    d = Path(new_temp_dir())
    assert d.parent == root and len(str(d)) <= ray_env.MAX_TEMP_DIR   # room for Ray's socket paths (< 108 bytes)
    d.rmdir()
    p = subprocess.run([sys.executable, "-m", "pipelines.ray_env", "temp-dir", "head"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == str(root / "head")
    long = "h" * (ray_env.MAX_TEMP_DIR - len(str(root)))   # one character over
    p = subprocess.run([sys.executable, "-m", "pipelines.ray_env", "temp-dir", long], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "is too long for a Ray temp dir" in p.stderr and not p.stdout
    open_ = tmp_path / "open"
    open_.mkdir(mode=0o777)
    open_.chmod(0o1777)
    with pytest.raises(RaySetupError, match=r"open is not a directory of this user's alone .*mode 1777\); fix it"):
        private_dir(open_, "fix it")


def test_the_documented_stop_names_a_wrong_directory_and_ends_nothing_else(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pipelines.reaper", "stop", str(tmp_path / "nope")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "is not a directory: name the --temp-dir the Ray was started with" in p.stderr
    p = subprocess.run([sys.executable, "-m", "pipelines.reaper", "stop", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == f"no Ray process uses {tmp_path}"


def test_the_ray_client_server_is_found_by_its_temp_dir(tmp_path):
    """The Ray Client server runs as `python -m ray.util.client.server`, naming no temp dir on its command
    line: it is found by the log it holds open (the reaper missed it, and it outlived every stop)."""
    from pipelines.reaper import end_processes, session_processes
    log = tmp_path / "logs" / "ray_client_server.out"
    log.parent.mkdir()
    code = f"import sys, time; f = open({str(log)!r}, 'w'); print('up', flush=True); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code, "-m", "ray.util.client.server"], stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "up"
        assert session_processes(str(tmp_path)) == [p.pid]
        assert end_processes(str(tmp_path), grace_s=5) == [p.pid] and p.wait(timeout=10) == -15
    finally:
        p.kill()


def test_the_job_ships_only_what_git_tracks(tmp_path):
    untracked = ROOT / "configs" / f"untracked-{os.getpid()}.yaml"
    untracked.write_text("seed: 1\n")
    try:
        dest = Path(tracked_files(ROOT, tmp_path / "job", "configs/arena_sppo.yaml"))
        with pytest.raises(ValueError, match=rf"{untracked.name} is not tracked by git, and the job ships only"):
            tracked_files(ROOT, tmp_path / "job2", f"configs/{untracked.name}")
    finally:
        untracked.unlink()
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True).stdout
    shipped = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() or p.is_symlink())
    assert shipped == sorted(n for n in listed.splitlines() if (ROOT / n).exists())
    assert (dest / "pipelines/submit.py").read_bytes() == (ROOT / "pipelines/submit.py").read_bytes()
    assert not (dest / ".venv").exists() and not (dest / ".git").exists() and not (dest / untracked.name).exists()


def test_what_a_head_refuses_is_one_line_with_its_fix():
    from ray.exceptions import AuthenticationError
    url = "http://127.0.0.1:8265"
    no_token = head_error(AuthenticationError("Authentication required: Unauthorized\n\nToken ..."), url)
    assert no_token.startswith(f"the Ray head at {url} refused this client (no token)")
    assert "a token it does not accept" in head_error(AuthenticationError("Authentication failed: Forbidden"), url)
    big = head_error(RuntimeError("Request failed with status code 413: Maximum request body size exceeded."), url)
    assert "too large (413)" in big and "files git tracks" in big
    agent = head_error(RuntimeError("Request failed with status code 500: No available agent to submit job."), url)
    assert "no job agent" in agent and "--dashboard-agent-listen-port=0" in agent
    other = head_error(RuntimeError("Request failed with status code 502: Bad Gateway\n<html>..."), url)
    assert other == f"the Ray head at {url} failed the request: Request failed with status code 502: Bad Gateway"
    assert all("\n" not in m for m in (no_token, big, agent, other))
