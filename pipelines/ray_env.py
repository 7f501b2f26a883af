"""Ray's environment for every process of the project that imports Ray: set before `import ray`.

Without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, Ray binds every listener to all interfaces even on a
single machine (measured: the GCS on *:port and the agents on 0.0.0.0).
"""
import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # else in-process Ray writes a token under ~/.ray
