"""The one registry of generation backends, found from this folder. `generation.backend: <name>` (and
`judge.backend`) pick one.

Every module here is one backend: `selfplay/backends/<name>.py` defines `BACKEND` (a
selfplay.sampling.BackendSpec) and is the backend `<name>`; its engine is imported only when it is built.
`auto` is not a module: it is the usable backend with the highest preference (vLLM where it runs, else HF).
A module that fails to import, or defines no BACKEND, is an error naming it.
"""
from __future__ import annotations

import importlib
import pkgutil

from selfplay.sampling import Backend, BackendSpec

AUTO = "auto"


class RegistryError(ImportError):
    """A backend module that cannot be registered."""


def _registry() -> dict[str, BackendSpec]:
    found = {}
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.ispkg):
        try:
            module = importlib.import_module(f"{__name__}.{mod}")
        except Exception as e:   # name the module rather than let the backend vanish
            raise RegistryError(f"selfplay/backends/{mod}.py failed to import: {type(e).__name__}: {e}") from e
        spec = getattr(module, "BACKEND", None)
        if not isinstance(spec, BackendSpec):
            raise RegistryError(f"selfplay/backends/{mod}.py defines no BACKEND (a selfplay.sampling.BackendSpec)")
        found[mod] = spec
    return found


_FOUND = _registry()
# The names a config may give: every backend, and auto.
BACKENDS: dict[str, BackendSpec | None] = {**_FOUND, AUTO: None}


def resolve(name: str) -> str:
    """The backend `name` stands for here: itself, or for auto the usable one with the highest preference."""
    if name not in BACKENDS:
        raise ValueError(f"unknown generation backend {name!r}; choose one of {sorted(BACKENDS)}")
    if name != AUTO:
        return name
    usable = [n for n, s in _FOUND.items() if s.usable()]
    return max(usable, key=lambda n: (_FOUND[n].preference, n))


def planned(name: str) -> BackendSpec:
    """The backend a plan made away from the machine budgets for: `auto` as the most preferred backend (it
    runs wherever it can), the others as themselves."""
    if name == AUTO:
        return max(_FOUND.values(), key=lambda s: s.preference)
    return _FOUND[resolve(name)]


def build_backend(name: str, path: str, **kw) -> Backend:
    return _FOUND[resolve(name)].build(path, **kw)
