"""Ray's environment for every process of the project that imports Ray: imported before `import ray`.

Loopback: without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, Ray binds every listener to all interfaces even on a
single machine (measured: the GCS on *:port and the agents on 0.0.0.0).

Token authentication, always (RAY_AUTH_MODE=token): without it any local user could submit a job to a
Ray of ours on 127.0.0.1 and run code as us. Every Ray the project starts and every client it runs
(ray.init, the job client, kept_ray's health check) uses the token use_token() names:
  1. RAY_AUTH_TOKEN, when set (Ray reads it before any file);
  2. else the file RAY_AUTH_TOKEN_PATH names, when set: it must be this user's, readable by nobody else;
  3. else the project's token file, `$XDG_CONFIG_HOME/selfplay/ray_auth_token` (~/.config/... by default):
     0600 in a 0700 directory, created on first use by a command that starts Ray. Not Ray's own default,
     ~/.ray/auth_token, which ray.init would write without saying so (a client joining a Ray someone
     started reads it when the project's file does not exist).
use_token() exports RAY_AUTH_TOKEN_PATH, so the Ray daemons, its workers and the clients read that one file.

Ray's temp dirs live under /tmp/selfplay-ray-<uid>/ (0700, this user's alone): Ray makes its temp dir and
its sockets/, logs/ and runtime_resources/ 0777, and chmods the temp dir 0777 again whenever a worker
starts, so a parent only we can traverse is what keeps another local user from moving the raylet's
socket or reading the logs. /tmp, not $TMPDIR: AF_UNIX paths must stay under 108 bytes.

`python -m pipelines.ray_env token` prints the token file's path (creating it); `... temp-dir NAME`
prints /tmp/selfplay-ray-<uid>/NAME, its parent made private. docs/cluster.md starts a head with both.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import stat
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")   # read by Ray when it loads: before `import ray`


class RaySetupError(RuntimeError):
    """Ray cannot be started or joined as this project requires; the message names the fix."""


def token_file() -> Path:
    """The project's token file (used when neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is set)."""
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "selfplay" / "ray_auth_token"


def use_token(create: bool = True) -> Path | None:
    """Turn token authentication on for this process and the Rays and clients it starts; the token file
    in use (None: RAY_AUTH_TOKEN). Without `create` (joining a Ray someone started), a missing project
    token is an error instead of a new token that Ray would refuse."""
    mode = os.environ.get("RAY_AUTH_MODE", "token")
    if mode != "token":
        raise RaySetupError(f"RAY_AUTH_MODE={mode}: this project runs Ray with token authentication only "
                            "(without it any local user can run code as you); unset RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(named) if named else token_file()
    if not named and not path.exists():
        ray_default = Path.home() / ".ray" / "auth_token"   # Ray's own default: read, never written
        if not create and ray_default.exists():   # joining a Ray started with it
            path = ray_default
        elif not create:
            raise RaySetupError(f"no Ray token at {path}: copy the token file the Ray was started with there "
                                "(or set RAY_AUTH_TOKEN_PATH to it); see docs/cluster.md, section 2")
        else:
            _create_token(path)
    _check_token_file(path)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    return path


def read_token() -> str:
    """The token use_token() chose (call it first)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    return Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text().strip()


def token_digest() -> str:
    """A short digest of the token in use: what a record may hold instead of the token."""
    return hashlib.sha256(read_token().encode()).hexdigest()[:16]


def gcs_answer(address: str) -> str:
    """What the GCS at host:port answers a client with this process's token: "OK", "UNAUTHENTICATED" (it
    refuses the token), or another gRPC status name (e.g. UNAVAILABLE: nothing answers). One call,
    GetClusterId, the first one every driver makes."""
    import grpc
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId",
                                   request_serializer=bytes, response_deserializer=bytes)
        try:
            call(b"", timeout=5, metadata=[("authorization", f"Bearer {read_token()}")])
        except grpc.RpcError as e:
            return e.code().name
    return "OK"


def _create_token(path: Path) -> None:
    """A new random token, written whole: a file that appears holds the token (Ray treats an empty
    token file as fatal), and of two processes creating it at once, the first one's is kept."""
    private_dir(path.parent, f"remove it or `chmod 700 {path.parent}`, or set RAY_AUTH_TOKEN_PATH to a file of yours")
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def _check_token_file(path: Path) -> None:
    try:
        st = os.stat(path)
        empty = not path.read_text().strip()
    except OSError as e:
        raise RaySetupError(f"cannot read the Ray token file {path} ({e.strerror}); "
                            "set RAY_AUTH_TOKEN_PATH to a readable token file") from None
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RaySetupError(f"the Ray token file {path} is readable or writable by others (owner uid {st.st_uid}, "
                            f"mode {stat.S_IMODE(st.st_mode):o}): `chmod 600 {path}` if it is yours, else remove it")
    if empty:
        raise RaySetupError(f"the Ray token file {path} is empty: remove it (a new one is made on the next start)")


def private_dir(where: Path, fix: str) -> Path:
    """where, made this user's alone (0700) if new; refused if it is not: a directory another user made
    could hold their files where ours are expected."""
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(where)
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or not stat.S_ISDIR(st.st_mode):
        raise RaySetupError(f"{where} is not a directory of this user's alone (owner uid {st.st_uid}, mode "
                            f"{stat.S_IMODE(st.st_mode):o}); {fix}")
    return where


# The longest Ray temp dir: Ray puts session_<date>_<time>_<us>_<pid>/sockets/dash_MetricsHead under it,
# and an AF_UNIX path has at most 107 bytes (a longer one fails a dashboard module, not `ray start`).
MAX_TEMP_DIR = 107 - len("/session_2026-01-01_00-00-00_000000_4194304/sockets/dash_MetricsHead")


def temp_root() -> Path:
    """The parent of every Ray temp dir of the project for this user, private."""
    root = Path("/tmp") / f"selfplay-ray-{os.getuid()}"
    return private_dir(root, "remove it (another user may have made it), then run again")


def new_temp_dir() -> str:
    """A fresh temp dir for a Ray, under temp_root()."""
    return tempfile.mkdtemp(prefix="r", dir=temp_root())


def main(argv: list[str]) -> int:
    try:
        if argv == ["token"]:
            path = use_token(create=True)
            if path is None:
                raise RaySetupError("RAY_AUTH_TOKEN is set: Ray uses it, and no token file; unset it to use one")
            print(path)
            return 0
        if len(argv) == 2 and argv[0] == "temp-dir" and "/" not in argv[1]:
            path = temp_root() / argv[1]
            if len(str(path)) > MAX_TEMP_DIR:
                raise RaySetupError(f"{path} is too long for a Ray temp dir (Ray's socket paths under it would pass "
                                    f"107 bytes): name one of at most {MAX_TEMP_DIR} characters")
            print(path)
            return 0
    except RaySetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("usage: python -m pipelines.ray_env token | temp-dir NAME", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
