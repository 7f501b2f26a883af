"""Test environment: no hub, no network, wandb off, Ray on loopback only."""
import os

# Set before anything imports transformers/datasets/ray/wandb.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # else Ray listens on every interface
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tempfile

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session, bound to loopback; the driver reuses an initialised Ray."""
    import ray
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield
    ray.shutdown()
