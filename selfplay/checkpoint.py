"""Saving a checkpoint's tokenizer as the model takes it, wherever a policy is saved (round 0's init stage,
every trainer)."""
from __future__ import annotations

import json
from pathlib import Path


def write_tokenizer(tok, out: Path, model_config) -> None:
    """tok saved into `out` as the model takes it: model_max_length is the model's positions (not the 1e30
    "unknown" a tokenizer built from a file carries), and no flag of the machine that loaded it
    (local_files_only, a hub cache path) is written along."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        tok.model_max_length = positions
    tok.save_pretrained(out)
    path = Path(out) / "tokenizer_config.json"
    saved = json.loads(path.read_text())
    for key in MACHINE_LOCAL:
        saved.pop(key, None)
    path.write_text(json.dumps(saved, indent=2, ensure_ascii=False) + "\n")


# Loading options transformers copies into tokenizer_config.json that belong to the machine that loaded it.
MACHINE_LOCAL = ("local_files_only", "cache_dir", "token", "use_auth_token", "_commit_hash", "trust_remote_code")
