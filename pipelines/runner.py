"""Running one declared stage (pipelines/graph.py): skip it when its manifest matches, else run its work in an
actor into a temp dir, retry it when the actor dies, and commit the artifact with its manifest.

A StageRunner serves one invocation's Ray session: it holds how stages run (their logs, retries, stall
reports), the session's actors, and which stage is running (what an interrupted run reports).
"""
from __future__ import annotations

import functools
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipelines.graph import RoundError, Stage
from selfplay.artifacts import (MANIFEST, ArtifactError, Manifest, atomic_dir, hash_dir, read_manifest,
                                 remember_verified, stable_hash, verify_artifact)
from selfplay.config import Config

log = logging.getLogger("selfplay")


@dataclass(frozen=True)
class StageSettings:
    """How stages run. The defaults (a caller that is not a round driver, e.g. a test) leave the actors' output
    to Ray, retry nothing and report no stall."""
    log_root: Path | None = None   # RUN_DIR/logs; None (-v) leaves the output to Ray, which streams it
    retries: int = 0               # resources.stage_retries
    stall_s: float = 0.0           # resources.stall_report_s
    invocation: tuple[str, ...] = ()   # --config and overrides: the advice that regenerates an input names them

    @staticmethod
    def of(cfg: Config, log_root: Path | None, invocation: tuple[str, ...] = ()) -> "StageSettings":
        return StageSettings(log_root, cfg.resources.stage_retries, cfg.resources.stall_report_s, tuple(invocation))

    def log_file(self, round_: int, name: str) -> Path | None:
        return self.log_root / f"round_{round_}" / f"{name}.log" if self.log_root is not None else None


class _ActorDied(Exception):
    """A stage's actor (or one it started) died with its process: worth one more try from the start."""


class StageRunner:
    """Runs declared stages in a session's actors. A class because the stage in progress is state that the
    invocation's signal handler reads (`running`)."""

    def __init__(self, actors, settings: StageSettings = StageSettings()) -> None:
        self.actors = actors                     # pipelines.actors.Actors of the session
        self.settings = settings
        self.running: tuple[int, str] | None = None

    def run(self, stage: Stage, cfg: Config) -> Manifest:
        """Skip `stage` if its manifest key matches, else run its work in an actor and commit its artifact. An
        actor that dies (its process killed, as the OOM killer does) is retried from the stage's start,
        settings.retries times."""
        input_hashes = {k: verified_input(p, stage.round, self.settings.invocation)   # checked against their manifests
                        for k, p in stage.inputs.items()}
        key = stage.key(input_hashes)
        done = read_manifest(stage.out)
        if done is not None and done.key == key:
            log.info("round %d %-11s skipped (manifest matches)", stage.round, stage.name)
            return done
        if done is None and (stage.out / MANIFEST).exists():   # say why a finished-looking stage runs again
            log.warning("round %d %-11s its manifest %s is unreadable (a run killed while writing it?): running "
                        "the stage again", stage.round, stage.name, stage.out / MANIFEST)
        self.running = (stage.round, stage.name)
        log_file, tries = self.settings.log_file(stage.round, stage.name), self.settings.retries + 1
        for attempt in range(1, tries + 1):
            try:
                m = self._attempt(stage, cfg, key, input_hashes, log_file)
                break
            except _ActorDied as e:
                if attempt == tries:
                    raise RoundError(f"round {stage.round} stage {stage.name} failed: its Ray actor died in each of "
                                     f"{tries} attempt(s); its process was killed, most often by the out-of-memory "
                                     f"killer (see `dmesg`): lower the batch sizes or give the stage more memory. Ray "
                                     f"said: {e}{log_tail(log_file)}") from None
                log.warning("round %d %-11s its actor died (%s); running the stage again from its start (attempt %d "
                            "of %d)", stage.round, stage.name, str(e)[:200], attempt + 1, tries)
        self.running = None
        remember_verified(stage.out, m.output_hash)   # just hashed: its consumers need not read it again
        log.info("round %d %-11s done in %6.1fs  %s", stage.round, stage.name, m.seconds, _brief(m.extra))
        return m

    def _attempt(self, stage: Stage, cfg: Config, key: str, input_hashes: dict, log_file: Path | None) -> Manifest:
        """One run of a stage into a fresh temp dir, committed as stage.out with its manifest."""
        from ray.exceptions import RayActorError

        from pipelines.actors import map_in_actors
        from selfplay.progress import live_bar
        t0 = time.time()
        fan_out = functools.partial(map_in_actors, retries=self.settings.retries)
        with atomic_dir(stage.out) as tmp:
            try:
                with live_bar(f"round {stage.round} {stage.name}"):
                    info, mem = self.actors.run_in_actor(
                        stage.role, stage.resources, stage.work, stage.job(cfg, tmp, fan_out),
                        log_file=log_file and str(log_file), stall_s=self.settings.stall_s,
                        on_stall=_stall_reporter(stage, log_file))
            except Exception as e:  # surface the stage's own error, not Ray's wrapper
                cause = getattr(e, "cause", None) or e
                if isinstance(cause, RayActorError):
                    said = str(cause).strip()
                    raise _ActorDied(said.splitlines()[0] if said else type(cause).__name__) from None
                raise RoundError(f"round {stage.round} stage {stage.name} failed: {type(cause).__name__}: {cause}"
                                 f"{log_tail(log_file)}") from None
            m = Manifest(stage=stage.name, key=key, config_hash=stable_hash(stage.part), inputs=input_hashes,
                         seeds={"seed": stage.part.get("seed", 0)}, output_hash=hash_dir(tmp),
                         seconds=round(time.time() - t0, 2), extra={**info, **mem}, config=stage.part)
            m.write(tmp)
        return m


def _stall_reporter(stage: Stage, log_file: Path | None) -> Callable[[float], None]:
    def report(idle_s: float) -> None:
        log.warning("round %d %-11s no progress for %.0fs: its log has not grown (resources.stall_report_s)%s",
                    stage.round, stage.name, idle_s, log_tail(log_file, 10) or
                    " and has no line yet: its actor may still wait for the resources it asked for")
    return report


def verified_input(path: Path, round_: int = 0, invocation: tuple[str, ...] = ()) -> str:
    """An input artifact's output_hash once its files match it; RoundError naming the file and the fix otherwise:
    the command that makes it again, the same one for this round's own artifacts (and round 0's, which round 1
    makes), else the earlier round that made it."""
    try:
        return verify_artifact(path)
    except ArtifactError as e:
        owner = re.fullmatch(r"round_(\d+)", Path(path).parent.name)
        k = max(int(owner[1]), 1) if owner else round_
        again = ("run the command again" if k >= round_ else
                 f"run `{' '.join(['python -m pipelines.round --round', str(k), *invocation])}`, then this command again")
        raise RoundError(f"{e}. Regenerate it: delete {path} and {again}") from None


def log_tail(path: Path | None, lines: int = 20) -> str:
    """The end of a failed stage's log, each line as a terminal would show it (the last state of a
    bar redrawn with carriage returns)."""
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").rstrip("\n").split("\n")
    shown = [([seg for seg in ln.split("\r") if seg.strip()] or [""])[-1] for ln in text][-lines:]
    return f"\n--- last {len(shown)} lines of {path} ---\n" + "\n".join(shown)


def _brief(extra: dict) -> str:
    keys = ("samples", "pairs", "pairs_per_s", "train_loss", "winrate_vs_initial", "winrate_vs_previous",
            "peak_rss_mb", "peak_gpu_mb")
    return " ".join(f"{k}={extra[k]:.3g}" if isinstance(extra[k], float) else f"{k}={extra[k]}"
                    for k in keys if k in extra)
