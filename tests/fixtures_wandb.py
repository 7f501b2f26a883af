"""Readers for offline wandb runs (RUN_DIR/wandb/offline-run-*/run-*.wandb), without wandb's sync."""
from __future__ import annotations

import json
import struct
from pathlib import Path


def wandb_records(path: Path):
    """Records of a .wandb file: a 7-byte header, then LevelDB-log blocks of 32 KiB whose records
    (crc32, length, type) are FULL=1 or split FIRST=2 / MIDDLE=3 / LAST=4."""
    from wandb.proto import wandb_internal_pb2 as pb
    data, pos, buf, block = path.read_bytes(), 7, b"", 32768
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            pos += block - pos % block if pos % block else 0
            continue
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def offline_runs(wandb_dir: Path) -> list[Path]:
    """The offline run files under a wandb dir, oldest first (the directory names start with a timestamp)."""
    return [next(d.glob("run-*.wandb")) for d in sorted(Path(wandb_dir).glob("offline-run-*"))]


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def history(wandb_dir: Path) -> list[dict]:
    """Every history row of every offline run under wandb_dir, in logging order."""
    rows = []
    for f in offline_runs(wandb_dir):
        for rec in wandb_records(f):
            if rec.WhichOneof("record_type") == "history":
                rows.append(_items(rec.history.item))
    return rows


def config(wandb_dir: Path) -> dict:
    """The run's config as the offline files carry it (the run record, then config updates), values unwrapped."""
    out: dict = {}
    for f in offline_runs(wandb_dir):
        for rec in wandb_records(f):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                out |= _items(rec.run.config.update)
            elif kind == "config":
                out |= _items(rec.config.update)
    return {k: v["value"] if isinstance(v, dict) and set(v) >= {"value"} else v
            for k, v in out.items() if not k.startswith("_")}


def run_facts(wandb_dir: Path) -> list[dict]:
    """id, display name and group of each offline run file's run record."""
    return [{"id": rec.run.run_id, "name": rec.run.display_name, "group": rec.run.run_group}
            for f in offline_runs(wandb_dir) for rec in wandb_records(f) if rec.WhichOneof("record_type") == "run"]


def metric_axes(wandb_dir: Path) -> dict[str, str]:
    """define_metric records: metric name (or glob) -> its step metric."""
    out = {}
    for f in offline_runs(wandb_dir):
        for rec in wandb_records(f):
            if rec.WhichOneof("record_type") == "metric":
                m = rec.metric
                out[m.name or m.glob_name] = m.step_metric
    return out
