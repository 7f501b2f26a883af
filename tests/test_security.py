"""Security defaults: Ray listens on loopback only, no checkpoint's own code is ever run, and API keys in the
environment never reach anything a round writes."""
import ipaddress
import json
import re
import socket
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
