"""The one registry of round algorithms, found from this folder. `algorithm: <name>` in the config picks one.

Every module here is one algorithm: `selfplay/algorithms/<name>.py` defines `ALGORITHM` (a
selfplay.algorithm.Algorithm) and is the algorithm `<name>`. Adding one is its module, its config and nothing
else: the tests iterate this registry. A module that fails to import, or defines no ALGORITHM, is an error
naming it (never silently left out). The record types live in selfplay/algorithm.py.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil

from selfplay.algorithm import (FULL_MATRIX, Algorithm, Comparisons, Pair, PairContext, PairTensors,  # noqa: F401
                                all_pairs)


class RegistryError(ImportError):
    """An algorithm module that cannot be registered."""


def _registry() -> dict[str, Algorithm]:
    found = {}
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.ispkg):
        try:
            module = importlib.import_module(f"{__name__}.{mod}")
        except Exception as e:   # any failure: name the module rather than let its algorithm vanish
            raise RegistryError(f"selfplay/algorithms/{mod}.py failed to import: {type(e).__name__}: {e}") from e
        algo = getattr(module, "ALGORITHM", None)
        if not isinstance(algo, Algorithm):
            raise RegistryError(f"selfplay/algorithms/{mod}.py defines no ALGORITHM (a selfplay.algorithm.Algorithm); "
                                "every module of selfplay/algorithms/ is one algorithm")
        if algo.reference is None:
            raise RegistryError(f"selfplay/algorithms/{mod}.py: its ALGORITHM has no `reference` (the paper's formula "
                                "of its loss, which the test suite holds its loss against)")
        found[mod] = dataclasses.replace(algo, name=mod)
    return found


ALGORITHMS: dict[str, Algorithm] = _registry()


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]
