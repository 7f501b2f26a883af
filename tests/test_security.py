"""Security defaults: Ray listens on loopback only and refuses anyone without this user's token, no
checkpoint's own code is ever run, and API keys in the environment never reach anything a round writes."""
import ipaddress
import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_round import ROOT, SECRETS, finished_round

# The driver's own Ray start-up, one task run so that worker processes exist too; prints every listening
# socket of the driver's process tree (Ray's GCS, raylet, agents and workers are its descendants).
LISTENERS = """
import json, os, sys, ray
sys.path.insert(0, "tests")
from pipelines.ray_session import ray_session
from test_security import listening_sockets
with ray_session(1):
    ray.get(ray.remote(lambda: os.getpid()).remote())
    print(json.dumps(listening_sockets()))
"""


def listening_sockets(pid: int | None = None) -> list[list]:
    """[process name, address, port] of every TCP listener and bound UDP socket of pid (default: this
    process) and its descendants."""
    import psutil
    me = psutil.Process(pid)
    out = []
    for p in [me, *me.children(recursive=True)]:
        try:
            name, conns = p.name(), p.net_connections(kind="inet")
        except psutil.Error:   # a process that ended meanwhile
            continue
        out += [[name, c.laddr.ip, c.laddr.port] for c in conns
                if c.laddr and (c.status == psutil.CONN_LISTEN or c.type == socket.SOCK_DGRAM)]
    return out


def exposed(listeners: list[list]) -> list[list]:
    """The listeners reachable from another machine: any address but loopback."""
    def loopback(ip: str) -> bool:
        a = ipaddress.ip_address(ip.split("%")[0])
        return a.is_loopback or (a.version == 6 and a.ipv4_mapped is not None and a.ipv4_mapped.is_loopback)
    return [x for x in listeners if not loopback(x[1])]


def test_the_exposure_check_catches_an_open_listener():
    with socket.socket() as open_, socket.socket() as local:
        open_.bind(("0.0.0.0", 0))
        local.bind(("127.0.0.1", 0))
        for s in (open_, local):
            s.listen()
        found = [x[1:] for x in exposed(listening_sockets())]
        assert ["0.0.0.0", open_.getsockname()[1]] in found
        assert ["127.0.0.1", local.getsockname()[1]] not in found


@pytest.mark.slow
def test_ray_listens_on_loopback_only():
    p = subprocess.run([sys.executable, "-c", LISTENERS], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    listeners = json.loads(p.stdout.strip().splitlines()[-1])
    names = {n for n, _, _ in listeners}
    assert len(listeners) >= 3 and any("gcs_server" in n for n in names) and any("raylet" in n for n in names), listeners
    assert exposed(listeners) == [], listeners


# ---------------------------------------------------------------- another local user and the kept Ray

# Another local user's view of a kept Ray. Run as root, it imports what it needs, then becomes uid/gid 65534
# (nobody) before touching the Ray. For every listening port: a job submission to Ray's job API
# (POST /api/jobs/, as in the curl) and one call of each Ray gRPC service (an empty request, no
# token): what each answers. Then the files: the Ray's temp dir, its raylet socket, the token file.
STRANGER = """
import encodings.idna, http.client, json, os, socket, sys
import grpc, grpc._channel   # loaded before the switch: the other user cannot read this Python's files
ports, temp_dir, token_file = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
if os.getuid() == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
METHODS = ["/ray.rpc.NodeInfoGcsService/GetAllNodeInfo", "/ray.rpc.InternalKVGcsService/InternalKVKeys",
           "/ray.rpc.NodeManagerService/GetNodeStats", "/ray.rpc.ObjectManagerService/Pull",
           "/ray.rpc.ReporterService/HealthCheck", "/ray.rpc.RayletDriver/ClusterInfo",
           "/ray.rpc.CoreWorkerService/NumPendingTasks", "/ray.rpc.events.EventAggregatorService/AddEvents"]
def job(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("POST", "/api/jobs/", body=json.dumps({"entrypoint": "id > /tmp/owned"}),
                  headers={"Content-Type": "application/json"})
        return c.getresponse().status
    except Exception as e:
        return type(e).__name__
def calls(port):
    out = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        for m in METHODS:
            try:
                ch.unary_unary(m, request_serializer=bytes, response_deserializer=bytes)(b"", timeout=5)
                out[m] = "OK"
            except grpc.RpcError as e:
                out[m] = e.code().name
    return out
def tried(fn):
    try:
        fn()
        return "allowed"
    except OSError as e:
        return type(e).__name__
def raylet():
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(os.path.join(temp_dir, "session_latest", "sockets", "raylet"))
files = {"temp dir": tried(lambda: os.listdir(temp_dir)), "raylet socket": tried(raylet),
         "token": tried(lambda: open(token_file).read())}
print(json.dumps({"uid": os.getuid(), "files": files, "ports": {p: [job(p), calls(p)] for p in ports}}))
"""


@pytest.fixture
def kept_session(tmp_path, monkeypatch):
    from pipelines import kept_ray
    where = tmp_path / "kept"
    monkeypatch.setenv("SELFPLAY_KEPT_RAY_DIR", str(where))
    kept_ray.join(2, 60, where=where)
    kept_ray.leave(where)
    yield kept_ray.read(where)
    kept_ray.stop(where)


@pytest.mark.slow
def test_another_local_user_gets_nothing_from_a_kept_ray(kept_session):
    """The issue: a second local user posted a job to the kept Ray on 127.0.0.1 and it ran as the owner, and
    moved the raylet's socket out of its 0777 temp dir. Now every listening port of the kept Ray refuses
    them (HTTP 401, or 405 on the read-only metrics ports; gRPC UNAUTHENTICATED), and they cannot enter
    its temp dir or read the token. As a user who cannot switch to another uid, the probe runs as itself
    without the token (the ports answer by token, not by uid) and the file checks are skipped."""
    from pipelines.reaper import session_processes
    from pipelines.ray_env import temp_root
    s = kept_session
    listeners = {port: name for pid in session_processes(s.temp_dir) for name, _, port in listening_sockets(pid)}
    gcs = int(s.address.rsplit(":", 1)[1])
    assert gcs in listeners and len(listeners) >= 6, listeners
    token = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    p = subprocess.run([sys.executable, "-c", STRANGER, json.dumps(sorted(listeners)), s.temp_dir, str(token)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    seen = json.loads(p.stdout.strip().splitlines()[-1])
    report = {listeners[int(port)] + f":{port}": answer for port, answer in seen["ports"].items()}
    print(json.dumps(report, indent=1))
    for port, (job, calls) in seen["ports"].items():
        name = listeners[int(port)]
        assert "OK" not in calls.values() and job not in (200, 201), (name, port, job, calls)
        refused_grpc = "UNAUTHENTICATED" in calls.values()
        assert job in (401, 403) or refused_grpc or job == 405, (name, port, job, calls)
        if job == 405:   # a Prometheus exporter: GET /metrics only, read-only counters
            assert name != "gcs_server" and not refused_grpc
    answered = {listeners[int(port)]: calls for port, (job, calls) in seen["ports"].items()}
    assert answered["gcs_server"]["/ray.rpc.NodeInfoGcsService/GetAllNodeInfo"] == "UNAUTHENTICATED"
    raylet = [calls for port, (job, calls) in seen["ports"].items() if listeners[int(port)] == "raylet"]
    assert sorted(c["/ray.rpc.NodeManagerService/GetNodeStats"] for c in raylet) == ["UNAUTHENTICATED", "UNIMPLEMENTED"]
    assert sorted(c["/ray.rpc.ObjectManagerService/Pull"] for c in raylet) == ["UNAUTHENTICATED", "UNIMPLEMENTED"]
    http_refused = [port for port, (job, _) in seen["ports"].items() if job == 401]
    assert len(http_refused) >= 2   # the dashboard agent's and the runtime env agent's HTTP servers
    # the files, as root sees their modes, and as the other user tries them
    root = temp_root()
    assert Path(s.temp_dir).parent == root and stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    if os.getuid() != 0:
        pytest.skip(f"the file checks need a second local user; this test runs as uid {os.getuid()}, which "
                    "cannot switch to uid 65534 (the ports were probed without the token)")
    assert seen["uid"] == 65534
    assert seen["files"] == {"temp dir": "PermissionError", "raylet socket": "PermissionError",
                             "token": "PermissionError"}


# ---------------------------------------------------------------- trust_remote_code

def test_no_code_passes_trust_remote_code():
    """No config key enables trust_remote_code, so no loader may pass it as anything but False."""
    hits = []
    for f in sorted(p for d in ("selfplay", "judges", "pipelines", "scripts") for p in (ROOT / d).rglob("*.py")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if "trust_remote_code" in line and not re.search(r"trust_remote_code\s*=\s*False\b", line):
                hits.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert hits == []


def test_a_checkpoint_with_its_own_code_is_refused_and_the_code_never_runs(tmp_path, monkeypatch):
    """A local checkpoint of an unknown model type whose config maps it to a module inside it (auto_map):
    loading it as the initial policy fails, naming trust_remote_code, without asking on the terminal (the
    default None would ask, and a user could type y), and the module is never imported."""
    import builtins

    from fixtures_policy import build_tiny_policy
    from pipelines.stages import init_policy
    ckpt = Path(build_tiny_policy(tmp_path / "ckpt"))
    marker = tmp_path / "code-ran"
    (ckpt / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                  "from transformers import Qwen2Config as EvilConfig, Qwen2ForCausalLM as EvilModel\n")
    config = json.loads((ckpt / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"})
    (ckpt / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail("asked whether to run the checkpoint's code"))
    with pytest.raises(ValueError, match="trust_remote_code"):
        init_policy(str(ckpt), tmp_path / "out")
    assert not marker.exists()


# ---------------------------------------------------------------- secrets

@pytest.fixture(scope="module")
def done(tmp_path_factory):
    return finished_round(tmp_path_factory.mktemp("finished"))


@pytest.mark.slow
def test_api_keys_in_the_environment_reach_nothing_the_round_writes(done):
    """The round ran with fake OPENAI_API_KEY, HF_TOKEN and WANDB_API_KEY (tests/fixtures_round.py): none
    of them is in the run dir (manifests, metrics, logs, config, dashboard), its offline wandb files, Ray's
    session logs, or what the round printed."""
    files = [f for root in (done.run_dir, done.ray_dir) for f in root.rglob("*") if f.is_file()]
    wandb_runs = list(done.run_dir.glob("wandb/**/run-*.wandb"))
    ray_logs = [f for f in files if done.ray_dir in f.parents and "logs" in f.parts]
    assert wandb_runs and len(ray_logs) >= 5 and (done.run_dir / "round_1/eval/metrics.json") in files
    found = [(name, str(f)) for f in files for name, value in SECRETS.items() if value.encode() in f.read_bytes()]
    found += [(name, "console") for name, value in SECRETS.items() if value in done.output]
    assert found == []
