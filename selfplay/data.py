"""Prompt loading: a hub dataset, a local `datasets` directory, a jsonl/json/parquet file, or the
arena's builtin sets. Every source becomes a list of `PromptRow`, with a clear error otherwise."""
from __future__ import annotations

import os
from pathlib import Path

from selfplay.config import Config, DataConfig
from selfplay.records import PromptRow


class DataError(ValueError):
    pass


def assets_root() -> Path:
    """$SELFPLAY_ASSETS/arena, `assets/arena` of the current directory (the repository under make) by
    default. With SELFPLAY_ASSETS_BUILD=0 (set for jobs by `make submit`), assets that are missing or
    stale are an error naming `make assets`, never built here: a job's cwd is a temporary copy."""
    root = Path(os.environ.get("SELFPLAY_ASSETS", "assets")) / "arena"
    if os.environ.get("SELFPLAY_ASSETS_BUILD", "1") == "0":
        import json
        import socket
        from dataclasses import asdict

        from selfplay.artifacts import stable_hash
        from selfplay.assets import AssetSpec
        try:
            ok = json.loads((root / "manifest.json").read_text()).get("key") == stable_hash(asdict(AssetSpec()))
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise DataError(
                f"the arena assets are missing or stale at {root.absolute()} on {socket.gethostname()}, and "
                "SELFPLAY_ASSETS_BUILD=0 (make submit) does not build them in the job. Build them there: "
                "`make assets` in the repository (its assets/ is the default SELFPLAY_ASSETS), or "
                f"`python -m selfplay.assets --out {root.absolute()}` on shared storage; see docs/cluster.md.")
    return root


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
    if name == "arena/sft":
        return str(_arena_sft(root))
    if name == "arena/topical":   # the Nash arena's initial policy
        from selfplay.assets import build_topical, topical_ready
        if os.environ.get("SELFPLAY_ASSETS_BUILD", "1") == "0" and not topical_ready(root):   # a job never trains it
            raise DataError(f"the arena's topical policy is missing or stale at {(root / 'topical').absolute()}, "
                            "and SELFPLAY_ASSETS_BUILD=0 does not build it in the job: run `make assets` there first")
        return str(build_topical(root))
    raise DataError(f"unknown builtin asset {src!r} (builtin:arena, builtin:arena/train, builtin:arena/eval, "
                    "builtin:arena/sft, builtin:arena/topical)")


def architecture_source(src: str) -> str:
    """A directory whose config.json describes the model `src` names, without training anything that takes
    minutes: builtin:arena/topical is builtin:arena's model trained further (selfplay.assets.build_topical),
    so until it is built a plan reads the base policy's config, which is the same architecture."""
    if src == "builtin:arena/topical" and not (assets_root() / "topical" / "manifest.json").exists():
        return resolve_builtin("builtin:arena")
    return resolve_builtin(src)


def _arena_sft(root: Path) -> Path:
    """The arena's SFT set (prompt/response jsonl over the train prompts), written once, atomically."""
    import json
    import random

    from selfplay.arena import sft_answer
    from selfplay.assets import arena_prompts
    out = root / "sft.jsonl"
    if not out.exists():
        rng = random.Random("arena-sft")
        rows = [{"prompt_id": r["prompt_id"], "prompt": r["prompt"], "response": sft_answer(rng, r["prompt"])}
                for r in arena_prompts("train")]
        tmp = out.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(out)
    return out


def open_dataset(src: str, split: str = "train", what: str = "prompts"):
    """The `datasets.Dataset` behind a source: a local `datasets` directory, a jsonl/json/parquet/csv
    file, the arena's builtin sets, or a hub dataset (needs network or a local HF cache). One
    DataError naming `what` and the source otherwise."""
    import datasets

    src = resolve_builtin(src)
    p = Path(src)
    try:
        if p.is_dir() and (p / "dataset_info.json").exists():
            ds = datasets.load_from_disk(str(p))
        elif p.is_file():
            fmt = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(p.suffix)
            if fmt is None:
                raise DataError(f"{src}: unsupported file type {p.suffix!r} for {what}")
            _check_file(p, what)
            datasets.disable_progress_bars()   # a local file loads in a blink: no bar on the console
            ds = datasets.load_dataset(fmt, data_files=str(p), split="train")
        else:
            ds = datasets.load_dataset(src, split=split)
    except DataError:
        raise
    except Exception as e:  # the datasets library raises many types; the user needs one message
        raise DataError(f"cannot load {what} from {src!r}: {type(e).__name__}: {e}") from None
    return ds[split] if isinstance(ds, datasets.DatasetDict) else ds


def _check_file(p: Path, what: str) -> None:
    """An empty file, or a JSON/JSONL file that does not parse, named with its first bad line (the datasets
    library would say StopIteration or "An error occurred while generating the dataset")."""
    import json
    if p.suffix != ".parquet":
        _check_utf8(p)
    if p.stat().st_size == 0 or (p.suffix != ".parquet" and not p.read_text().strip()):
        raise DataError(f"{p}: the file is empty (no {what})")
    if p.suffix not in (".json", ".jsonl"):
        return
    text = p.read_text()
    if p.suffix == ".json":
        try:
            json.loads(text)
            return
        except ValueError:
            pass   # JSON lines under a .json name: checked line by line below
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DataError(f"{p}: line {i} is not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise DataError(f"{p}: line {i} is a JSON {type(row).__name__}, not an object with named columns")


def _check_utf8(p: Path) -> None:
    """A text file that is not UTF-8, named with the line and byte where it stops being so."""
    data = p.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{p}: line {line} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        "save the file as UTF-8") from None


def load_prompts(src: str, *, split: str = "train", prompt_column: str = "prompt", id_column: str = "prompt_id",
                 single_turn: bool = False, max_chars: int = 0) -> list[PromptRow]:
    """The source's prompts. single_turn: the column holds chat-message lists, and only one-message rows are
    kept (that message's text); max_chars > 0: only prompts shorter than that. Ids are the id column's, else
    the row index in the whole source, so a filter never renumbers the prompts it keeps."""
    ds = open_dataset(src, split, "prompts")
    src = resolve_builtin(src)
    if prompt_column not in ds.column_names:
        raise DataError(f"{src}: no column {prompt_column!r} (columns: {ds.column_names})")
    ids = ds[id_column] if id_column in ds.column_names else [str(i) for i in range(len(ds))]
    texts = ds[prompt_column]
    if single_turn:
        ids, texts = _single_turn(ids, texts, src, prompt_column)
    for k, (i, t) in enumerate(zip(ids, texts), 1):   # a null or a number would become the text "None" or "3"
        if not isinstance(t, str):
            kind = "null" if t is None else f"a {type(t).__name__}, not text"
            hint = " (chat messages: set data.single_turn: true)" if isinstance(t, list) else ""
            raise DataError(f"{src}: the {prompt_column!r} of row {k} (id {str(i)!r}) is {kind}{hint}")
    rows = [PromptRow(str(i), t) for i, t in zip(ids, texts) if not max_chars or len(t) < max_chars]
    if not rows and texts:
        raise DataError(f"{src}: none of its {len(texts)} prompts is shorter than data.max_prompt_chars={max_chars}")
    bad = [r.prompt_id for r in rows if not r.prompt.strip()]
    if bad:
        raise DataError(f"{src}: {len(bad)} empty prompt(s), first id {bad[0]!r}")
    if len({r.prompt_id for r in rows}) != len(rows):
        raise DataError(f"{src}: duplicate values in id column {id_column!r}")
    return rows


def _single_turn(ids: list, texts: list, src: str, column: str) -> tuple[list, list]:
    """(ids, texts) of the rows whose chat-message list holds one message (EGPO's lms/utils.py keeps those)."""
    first = next((t for t in texts if t is not None), None)
    if not isinstance(first, list):
        raise DataError(f"{src}: data.single_turn keeps one-message chats, but column {column!r} holds "
                        f"{type(first).__name__}, not chat-message lists; remove data.single_turn")
    kept = [(i, t[0].get("content") if isinstance(t[0], dict) else t[0])
            for i, t in zip(ids, texts) if isinstance(t, list) and len(t) == 1]
    if not kept:
        raise DataError(f"{src}: data.single_turn: none of its {len(texts)} chats in {column!r} has a single message")
    return [i for i, _ in kept], [t for _, t in kept]


def source_prompts(src: str, d: DataConfig, limit: int = 0) -> list[PromptRow]:
    """A source's prompts under the data section's column and filter settings, the first `limit` (0 = all)."""
    rows = load_prompts(src, split=d.split, prompt_column=d.prompt_column, id_column=d.id_column,
                        single_turn=d.single_turn, max_chars=d.max_prompt_chars)
    return rows[:limit or None]


def eval_rows(d: DataConfig) -> list[PromptRow]:
    """The evaluation prompts: data.eval_prompts, filtered as the training sources, the first data.eval_limit."""
    return source_prompts(d.eval_prompts, d, d.eval_limit)


# ---------------------------------------------------------------- per-round training prompts
# Two forms (DataConfig.train_prompts): a string is one pool cut into disjoint slices of
# prompts_per_round (round n takes pool[(n-1)*per : n*per]); a list gives each round its own source
# (round n reads source n-1, up to its first prompts_per_round prompts). Past the end, a round is
# refused unless data.reuse_prompts, because silently wrapping around would train rounds 2-3 on
# round 1's prompts. A pool's partial last slice is refused too: rounds would differ in size, and
# the fix (a smaller prompts_per_round) is the user's call. A per-round source shorter than
# prompts_per_round is used whole: it is that round's own set (SPPO's iteration sets hold ~20k each).


def round_source(d: DataConfig, round_: int) -> str:
    """The source round n reads: the pool, or the list's (n-1)th entry (cycling with reuse_prompts)."""
    if isinstance(d.train_prompts, str):
        return d.train_prompts
    k = len(d.train_prompts)
    if round_ > k and not d.reuse_prompts:
        raise DataError(f"data.train_prompts: a list of {k} per-round sources covers {_rounds(k)}; round {round_} "
                        f"has no source of its own. Add a source to the list, or set data.reuse_prompts: true "
                        f"to cycle through it")
    return d.train_prompts[(round_ - 1) % k]


def round_span(d: DataConfig, round_: int, size: int) -> tuple[int, int]:
    """(first index, count) of round n's prompts in its source of `size` rows; indices wrap past the end."""
    src = round_source(d, round_)
    per = d.prompts_per_round
    if size == 0:
        raise DataError(f"data.train_prompts: {src!r} has no prompts (round {round_})")
    if not isinstance(d.train_prompts, str):
        return 0, min(per, size)
    start = (round_ - 1) * per
    if start + per > size and not d.reuse_prompts:
        covered, left = size // per, max(size - start, 0)
        short = f"would get only {left} fresh prompts of {per}" if left else "has no fresh prompts"
        raise DataError(f"data.train_prompts: a pool of {size} prompts at data.prompts_per_round={per} covers "
                        f"{_rounds(covered)}; round {round_} {short}. Use a larger pool or a list of per-round "
                        f"sources, lower data.prompts_per_round, or set data.reuse_prompts: true to wrap around")
    return start % size, min(per, size)


def _rounds(k: int) -> str:
    return "no full round" if k == 0 else "round 1" if k == 1 else f"rounds 1-{k}"


def round_prompts(d: DataConfig, round_: int) -> list[PromptRow]:
    """Round n's training prompts (a source's first data.max_prompts, when set, make its pool)."""
    rows = source_prompts(round_source(d, round_), d, d.max_prompts)
    start, count = round_span(d, round_, len(rows))
    return [rows[(start + i) % len(rows)] for i in range(count)]


def check_rounds(cfg: Config, rounds: list[int]) -> None:
    """Raise round_prompts' DataError for the first round without fresh prompts, before any stage runs.
    Only counts: each needed source is loaded once."""
    d, sizes = cfg.data, {}
    for n in rounds:
        src = round_source(d, n)
        if src not in sizes:
            sizes[src] = _source_size(src, d)
        round_span(d, n, sizes[src])


def _source_size(src: str, d: DataConfig) -> int:
    # The builtin arena prompts are generated in code: counting them here avoids building the assets
    # (which trains the tiny policy) in the driver; round 0's init stage builds them in an actor.
    unfiltered = not (d.single_turn or d.max_prompt_chars or d.max_prompts)
    if src in ("builtin:arena/train", "builtin:arena/eval") and unfiltered:
        from selfplay.assets import arena_prompts
        return len(arena_prompts(src.split("/")[1]))
    return len(source_prompts(src, d, d.max_prompts))


# ---------------------------------------------------------------- prompt lengths
# A training prompt that takes model.max_length tokens or more (chat template included) is refused,
# not truncated: the trainer keeps the first max_length tokens of prompt + response, so such a pair would
# contribute no response token (a pair that only dilutes the loss), and cutting the prompt instead would
# train the policy on a different question from the one the judge judged. Shorter prompts leave the
# response max_length − prompt tokens, as TRL's max_length does. With model.max_prompt_length set the
# trainer does cut prompts (SPPO's rule, selfplay/logprobs.py encode), so none is refused.

def prompt_token_counts(tok, prompts: list[str]) -> list[int]:
    """Tokens of each prompt as the trainer sees it: the chat template with the generation prompt."""
    heads = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    return [len(ids) for ids in tok(heads, add_special_tokens=False).input_ids] if heads else []


def check_prompt_lengths(rows: list[PromptRow], tok, max_length: int, source: str, max_prompt_length: int = 0) -> None:
    if max_prompt_length:
        return   # the trainer keeps such a prompt's last max_prompt_length tokens: room is left for the response
    counts = prompt_token_counts(tok, [r.prompt for r in rows])
    long = [(r.prompt_id, n) for r, n in zip(rows, counts) if n >= max_length]
    if long:
        raise DataError(f"{source}: {len(long)} of {len(rows)} prompts take model.max_length={max_length} tokens or "
                        f"more with the chat template (first: id {long[0][0]!r}, {long[0][1]} tokens), which leaves the "
                        "trainer no response token to learn from. Raise model.max_length or drop those prompts")


def check_round_prompt_lengths(cfg: Config, rounds: list[int], tokenizer_dir: str) -> None:
    """check_prompt_lengths for each round's training prompts, with the tokenizer the rounds start from.
    The builtin arena prompts are skipped: they are short by construction and counting them would build the assets."""
    tok = None
    for n in rounds:
        src = round_source(cfg.data, n)
        if src.startswith("builtin:"):
            continue
        if tok is None:   # imported here: transformers takes 4-6 s to import, which builtin prompts never need
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)   # never asks to run code
        check_prompt_lengths(round_prompts(cfg.data, n), tok, cfg.model.max_length, f"round {n}'s prompts ({src})",
                             cfg.model.max_prompt_length)


def model_positions(checkpoint: str) -> int | None:
    """The positions a local checkpoint's model has (config.json's max_position_embeddings), None if unknown."""
    import json
    try:
        c = json.loads((Path(checkpoint) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    n = c.get("max_position_embeddings") or (c.get("text_config") or {}).get("max_position_embeddings")
    return int(n) if isinstance(n, int) and n > 0 else None


def check_positions(cfg: Config, rounds: list[int], checkpoint: str) -> None:
    """What the model has room for, against the checkpoint the rounds start from: model.max_length, and every
    prompt (eval and each round's training prompts, builtin arena sets excepted: short by construction) with
    generation.max_new_tokens after it. Past its positions a model answers garbage, at a cost in memory."""
    positions = model_positions(checkpoint)
    if positions is None:
        return
    if cfg.model.max_length > positions:
        raise DataError(f"model.max_length={cfg.model.max_length} is more than the {positions} positions the policy "
                        f"has ({checkpoint}/config.json max_position_embeddings); set model.max_length <= {positions}")
    d = cfg.data
    sources = [(d.eval_prompts, lambda: eval_rows(d))]
    sources += [(round_source(d, n), lambda n=n: round_prompts(d, n)) for n in rounds]
    tok = None
    for src, rows in sources:
        if src.startswith("builtin:"):
            continue
        if tok is None:
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=False)
        check_room(rows(), tok, positions, cfg.generation.max_new_tokens, src)


def check_room(rows: list[PromptRow], tok, positions: int | None, max_new_tokens: int, source: str) -> None:
    """Every prompt (with the chat template) plus max_new_tokens fits the model's positions."""
    if positions is None:
        return
    counts = prompt_token_counts(tok, [r.prompt for r in rows])
    long = [(r.prompt_id, n) for r, n in zip(rows, counts) if n + max_new_tokens > positions]
    if long:
        raise DataError(f"{source}: {len(long)} of {len(rows)} prompts leave no room for generation.max_new_tokens="
                        f"{max_new_tokens} in the policy's {positions} positions (first: id {long[0][0]!r}, "
                        f"{long[0][1]} tokens with the chat template). Drop or shorten them, or lower "
                        "generation.max_new_tokens")


def check_eval_prompts(cfg: Config) -> None:
    """Load data.eval_prompts once before any stage runs (round 0's evaluate would otherwise find a bad file)."""
    d = cfg.data
    if not d.eval_prompts.startswith("builtin:") or d.single_turn or d.max_prompt_chars:
        eval_rows(d)
