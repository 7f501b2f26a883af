"""Test environment: no hub, no network, wandb off, Ray on loopback only and with token authentication."""
import os

# Set before anything imports transformers/datasets/ray/wandb.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # else Ray listens on every interface
os.environ.setdefault("RAY_AUTH_MODE", "token")   # as every Ray of the project (pipelines/ray_env.py)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pipelines.ray_env import new_temp_dir, use_token  # noqa: E402

use_token()   # the project's token file (made on first use); exported, so the drivers the tests start use it

import json
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")   # seconds per test file, from `make test-durations`


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session, bound to loopback; the driver reuses an initialised Ray."""
    import ray
    if not ray.is_initialized():
        temp_dir = new_temp_dir()   # under /tmp/selfplay-ray-<uid>/, which only this user can enter
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir)
    yield
    ray.shutdown()


def pytest_configure(config):
    """Under `make test`'s workers, each worker's torch gets its share of the cores: two workers with two
    OpenMP threads each ran a 25 s test in 248 s here. That holds for the worker's own torch (the driver,
    in-process tests, asset builds) and, through OMP_NUM_THREADS (which pipelines/actors.torch_threads
    honours, as it would a user's), for its stage actors and the drivers it starts: the arena configs give
    each actor 2 CPUs of the worker's own Ray, and two such actors at once are four threads on two cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1 and os.environ.get("PYTEST_XDIST_WORKER"):
        import torch
        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(share)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))


def pytest_addoption(parser):
    parser.addoption("--store-durations", action="store_true",
                     help=f"write each test file's total seconds to {DURATIONS.name} (orders the files, longest first)")


def pytest_collection_modifyitems(config, items):
    """Longest files first, by tests/durations.json: `make test`'s workers take whole files in this order,
    so a long file handed out last cannot leave the other worker idle for minutes. A stale or missing
    entry changes only the order, never what runs."""
    try:
        seconds = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 0.0))   # stable: in-file order kept


_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    _SECONDS[path] = _SECONDS.get(path, 0.0) + report.duration


def pytest_sessionfinish(session):
    # Under xdist the controller sees every worker's reports; a worker (workerinput set) writes nothing.
    if session.config.getoption("store_durations") and not hasattr(session.config, "workerinput"):
        DURATIONS.write_text(json.dumps({k: round(v, 1) for k, v in sorted(_SECONDS.items())}, indent=1) + "\n")
