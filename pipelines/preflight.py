"""Checks a round invocation makes before it starts Ray or writes anything.

Each failure is one message naming the key or file, raised as RoundError (exit 2: the invocation cannot
run as asked) or ArtifactError (exit 1: an earlier artifact is corrupt); nothing in the run dir changes.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from pipelines.graph import RoundError, Stage, check_previous, round_parts, stages
from pipelines.layout import round_paths
from selfplay.artifacts import MANIFEST, ArtifactError, read_manifest, verify_artifact
from selfplay.config import Config, to_dict


def preflight(cfg: Config, rounds: list[int], *, force: bool, invocation: list[str],
              hold: Callable[[], object] = lambda: None) -> list[Path]:
    """Every check, in order; returns the artifacts --force moved aside (kept as <name>.replaced-<time>).
    `invocation`: --config and the overrides, to name the command that regenerates a corrupt artifact.
    Nothing is written before `hold()` (which takes the run dir for this invocation: pipelines/run_lock.py),
    called once every read-only check has passed and before the history check, which --force lets move
    replaced artifacts aside."""
    from selfplay.data import check_eval_prompts, check_positions, check_round_prompt_lengths, check_rounds

    check_run_dir(cfg, rounds)
    check_previous(cfg, rounds[0])
    verify_earlier_rounds(cfg, rounds[0], invocation)
    check_rounds(cfg, rounds)   # a round without fresh prompts fails here, before Ray and any generation
    check_eval_prompts(cfg)
    tokenizer = starting_tokenizer(cfg, rounds[0])
    if tokenizer:
        check_round_prompt_lengths(cfg, rounds, tokenizer)
        check_positions(cfg, rounds, tokenizer)
    hold()
    return check_history(cfg, rounds, force)


# ---------------------------------------------------------------- the run directory

def check_run_dir(cfg: Config, rounds: list[int]) -> None:
    """The run dir, its logs and every round dir this invocation writes are directories it can write in
    (a file in their place, an immutable or read-only directory, or a full disk is named here)."""
    run = Path(cfg.run_dir)
    written = ([0] if rounds[0] == 1 else []) + rounds
    dirs = [run, run / "logs", *(round_paths(run, n).root for n in written)]
    for d in dirs:
        if d.exists() and not d.is_dir():
            raise RoundError(f"{d} is a file, not a directory: move it away, or choose another run_dir")
    parent = run
    while not parent.exists():   # a run dir still to be made: its nearest existing parent must take it
        parent = parent.parent
    if not parent.is_dir():
        raise RoundError(f"run_dir {run}: {parent} is a file, not a directory")
    for d in [x for x in dirs if x.is_dir()] or [parent]:
        _probe_write(d)


def _probe_write(d: Path) -> None:
    """Write and sync a small file in d: permission, immutability, a read-only mount and a full disk all fail here."""
    try:
        fd, name = tempfile.mkstemp(prefix=".write-probe-", dir=d)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as e:
        raise RoundError(f"cannot write in {d}: {e.strerror} (errno {e.errno}); the round needs to write "
                         "there. Free space or fix the permissions, or choose another run_dir") from None


# ---------------------------------------------------------------- earlier artifacts

def verify_earlier_rounds(cfg: Config, first: int, invocation: list[str]) -> None:
    """Every finished artifact of the rounds before `first` (which this invocation reads) matches its
    manifest; otherwise ArtifactError naming the file and the command that regenerates it."""
    run = Path(cfg.run_dir)
    for k in range(first):
        root = round_paths(run, k).root
        for d in sorted(p for p in root.iterdir() if (p / MANIFEST).exists()) if root.is_dir() else []:
            try:
                verify_artifact(d)
            except ArtifactError as e:
                again = " ".join(["python -m pipelines.round --round", str(max(k, 1)), *invocation])
                raise ArtifactError(f"{e}. Regenerate it: delete {d} and run `{again}`") from None


# ---------------------------------------------------------------- one history per run dir
# A finished stage is never made again by a config that differs from the one that made it: round 0 (the
# initial policy and its eval samples, the base every later round is compared with) and every finished
# round the invocation would run. Such a run is refused, naming the keys and the rounds they touch, unless
# --force: then the old artifacts are kept beside the new ones. Resuming after a crash is untouched: an
# unfinished stage is not "made again", and a finished one with the same settings is skipped. The same
# check refuses rounds > 1 of a config that is not this run dir's (round 0 differs) and a changed algorithm.

def check_history(cfg: Config, rounds: list[int], force: bool) -> list[Path]:
    changed = rewritten_stages(stages(cfg, 0) + [s for n in rounds for s in stages(cfg, n)])
    old = previous_config(cfg)
    algo = old.get("algorithm") if old else None
    other_algo = rounds[0] > 1 and algo not in (None, cfg.algorithm)
    if not changed and not other_algo:
        return []
    if not force:
        raise RoundError(_refusal(cfg, rounds, changed, old, algo if other_algo else None))
    remade = [s for s in changed if s.round > 0 or rounds[0] == 1]   # round 0 is made only by round 1
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for s in remade:
        dest = s.out.with_name(f"{s.out.name}.replaced-{stamp}")
        s.out.rename(dest)
        moved.append(dest)
    return moved


def rewritten_stages(specs: list[Stage]) -> list[Stage]:
    """The finished stages among `specs` (in order) that this config would make again: their key changes,
    or an input they use is itself made again. An unfinished input is not counted: remade with the same
    settings, it gives the same content."""
    changed: list[Stage] = []
    for s in specs:
        done = read_manifest(s.out)
        if done is None:
            continue
        if any(p == c.out for p in s.inputs.values() for c in changed):
            changed.append(s)
            continue
        inputs = {k: read_manifest(p) for k, p in s.inputs.items()}
        if any(m is None for m in inputs.values()):
            continue
        if s.key({k: m.output_hash for k, m in inputs.items()}) != done.key:
            changed.append(s)
    return changed


def previous_config(cfg: Config) -> dict | None:
    """RUN_DIR/config.yaml: the config of the last invocation that ran here (None if absent or unreadable)."""
    import yaml
    try:
        data = yaml.safe_load((Path(cfg.run_dir) / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def changed_keys(cfg: Config, old: dict | None, stages_: list[Stage]) -> list[str]:
    """'key: old → new' for each key that differs from the previous config and that one of `stages_` depends
    on (setting it back changes that stage's config slice)."""
    if not old:
        return []
    new = json.loads(json.dumps(to_dict(cfg)))
    was, now = _flat(old), _flat(new)
    out = []
    for key in sorted(k for k in now if k in was and was[k] != now[k]):
        trial = copy.deepcopy(new)
        *path, last = key.split(".")
        node = trial
        for p in path:
            node = node[p]
        node[last] = was[key]
        if any(_part(trial, s) != _part(new, s) for s in stages_):
            out.append(f"{key}: {was[key]!r} → {now[key]!r}")
    return out


def _part(c: dict, s: Stage) -> dict | None:
    try:
        return round_parts(c, s.round).get(s.name)
    except ValueError:   # an algorithm the old config names that is no longer registered
        return None


def part_changes(s: Stage) -> list[str]:
    """What differs between the config slice s's finished artifact was made with (its manifest) and s's own,
    as 'path: old → new' in the slice's terms: for manifests whose config.yaml no longer says."""
    done = read_manifest(s.out)
    if done is None or not done.config:
        return []
    was, now = _flat(done.config), _flat(json.loads(json.dumps(s.part)))
    return [f"{s.name} {k}: {was.get(k)!r} → {now.get(k)!r}" for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _refusal(cfg: Config, rounds: list[int], changed: list[Stage], old: dict | None, algo: str | None) -> str:
    run = Path(cfg.run_dir)
    keys = changed_keys(cfg, old, changed) or [c for s in changed for c in part_changes(s)]
    if algo:
        keys.append(f"algorithm: {algo!r} → {cfg.algorithm!r}")
    what = "; ".join(keys) if keys else ("settings they depend on changed (the previous " +
                                         ("config.yaml does not say which)" if old else "config.yaml is missing)"))
    zero = [s for s in changed if s.round == 0]
    later = [s for s in changed if s.round > 0]
    made = ", ".join(f"{s.name} ({s.out})" for s in zero)
    redo = "pass --force to redo them (the old ones are kept beside them as <name>.replaced-<time>)"
    if later:
        touched = sorted({s.round for s in later})
        head = (f"this config would make finished round{'s' if len(touched) > 1 else ''} "
                f"{', '.join(map(str, touched))} again ({', '.join(f'round {s.round} {s.name}' for s in later)}"
                + (f"; and round 0's {made}" if zero else "") + "), which an earlier run made with other settings")
        fix = redo
    elif rounds[0] == 1:
        head = f"round 1 with this config would make round 0's {made} again, which an earlier run made with other settings"
        fix = redo
    else:
        head = (f"{run} holds rounds made with another config" + (f" (round 0's {made} differ)" if made else "")
                + f"; round {rounds[0]} would mix the two")
        fix = "pass --force to go on in this run dir anyway"
    return (f"{head}: {what}. A run dir holds one history: use a new run_dir (run_dir={run}-2 ...), or {fix}")


# ---------------------------------------------------------------- the tokenizer for prompt lengths

def starting_tokenizer(cfg: Config, first: int) -> str | None:
    """A local directory with the tokenizer round `first` starts from, when there is one without building or
    downloading anything (otherwise the generate stage checks the lengths with the policy it loads)."""
    if first > 1:
        return str(round_paths(cfg.run_dir, first - 1).policy)
    src = cfg.model.policy
    if src.startswith("builtin:"):
        from selfplay.data import DataError, assets_root
        try:
            src = str(assets_root() / "policy")
        except DataError:
            return None
    return src if (Path(src) / "tokenizer_config.json").exists() else None
