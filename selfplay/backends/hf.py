"""HF `generate`: runs wherever torch does, on the device its actor holds (selfplay/hf_backend.py)."""
from __future__ import annotations

from selfplay.sampling import Backend, BackendSpec


def _build(path: str, **kw) -> Backend:
    from selfplay.hf_backend import HFBackend
    return HFBackend(path, **kw)


BACKEND = BackendSpec(build=_build, usable=lambda: True, preference=0)
