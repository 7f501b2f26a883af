"""Prompt loading: a hub dataset, a local `datasets` directory, a jsonl/json/parquet file, or the
arena's builtin sets. Every source becomes a list of `PromptRow`, with a clear error otherwise."""
from __future__ import annotations

import os
from pathlib import Path

from selfplay.records import PromptRow


class DataError(ValueError):
    pass


def assets_root() -> Path:
    return Path(os.environ.get("SELFPLAY_ASSETS", "assets")) / "arena"


def resolve_builtin(src: str) -> str:
    """builtin:arena → the assets dir (built on first use); builtin:arena/<split> → its prompts."""
    if not src.startswith("builtin:"):
        return src
    from selfplay.assets import build_assets
    root = build_assets(assets_root())
    name = src[len("builtin:"):]
    if name == "arena":
        return str(root / "policy")
    if name in ("arena/train", "arena/eval"):
        return str(root / "prompts" / name.split("/")[1])
    raise DataError(f"unknown builtin asset {src!r} (builtin:arena, builtin:arena/train, builtin:arena/eval)")


def load_prompts(src: str, *, split: str = "train", prompt_column: str = "prompt",
                 id_column: str = "prompt_id") -> list[PromptRow]:
    import datasets

    src = resolve_builtin(src)
    p = Path(src)
    try:
        if p.is_dir() and (p / "dataset_info.json").exists():
            ds = datasets.load_from_disk(str(p))
        elif p.is_file():
            fmt = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(p.suffix)
            if fmt is None:
                raise DataError(f"{src}: unsupported prompt file type {p.suffix!r}")
            ds = datasets.load_dataset(fmt, data_files=str(p), split="train")
        else:
            ds = datasets.load_dataset(src, split=split)  # hub name: needs network or a local HF cache
    except DataError:
        raise
    except Exception as e:  # the datasets library raises many types; the user needs one message
        raise DataError(f"cannot load prompts from {src!r}: {type(e).__name__}: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[split]
    if prompt_column not in ds.column_names:
        raise DataError(f"{src}: no column {prompt_column!r} (columns: {ds.column_names})")
    ids = ds[id_column] if id_column in ds.column_names else [str(i) for i in range(len(ds))]
    rows = [PromptRow(str(i), str(t)) for i, t in zip(ids, ds[prompt_column])]
    bad = [r.prompt_id for r in rows if not r.prompt.strip()]
    if bad:
        raise DataError(f"{src}: {len(bad)} empty prompt(s), first id {bad[0]!r}")
    if len({r.prompt_id for r in rows}) != len(rows):
        raise DataError(f"{src}: duplicate values in id column {id_column!r}")
    return rows


def round_slice(rows: list[PromptRow], round_: int, per_round: int) -> list[PromptRow]:
    """Round n's prompts: a disjoint slice while the pool lasts, then wrapping around."""
    if not rows:
        raise DataError("the prompt set is empty")
    start = (round_ - 1) * per_round
    return [rows[(start + i) % len(rows)] for i in range(min(per_round, len(rows)))]
