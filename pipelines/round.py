"""The round driver: `python -m pipelines.round --round N [--config F] [key.sub=value ...]`.

Round n reads round n−1's policy and runs generate → judge → preferences → train → evaluate.
Every stage runs in a Ray actor, writes its artifact atomically with a manifest, and is skipped
when its manifest matches (same config section, seeds and inputs), so a re-run resumes.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from functools import cache
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from pipelines.layout import round_paths
from selfplay.artifacts import (MANIFEST, ArtifactError, Manifest, atomic_dir, hash_dir, load_manifest,
                                 read_manifest, remember_verified, stable_hash, verify_artifact)
from selfplay.config import Config

log = logging.getLogger("selfplay")


class RoundError(RuntimeError):
    """A round cannot run (missing earlier round, failed stage); earlier rounds are untouched."""


def run_stage(name: str, out: Path, cfg_part, inputs: dict[str, Path], role: str, resources,
              fn: Callable, *args, round_: int, **kwargs) -> Manifest:
    """Skip `name` if its manifest key matches, else run fn(*args, out=tmp) in an actor and commit.
    The actor's output goes to stage_log(round_, name), unless -v streams it. An actor that dies (its
    process killed, as the OOM killer does) is retried from the stage's start, _SETTINGS.retries times."""
    global _RUNNING
    input_hashes = {k: verified_input(p) for k, p in inputs.items()}   # checked against their manifests
    key = stage_key(name, round_, cfg_part, input_hashes)
    done = read_manifest(out)
    if done is not None and done.key == key:
        log.info("round %d %-11s skipped (manifest matches)", round_, name)
        return done
    _RUNNING = (round_, name)
    log_file, tries = stage_log(round_, name), _SETTINGS.retries + 1
    for attempt in range(1, tries + 1):
        try:
            m = _attempt(name, out, key, cfg_part, input_hashes, role, resources, fn, args, kwargs, round_, log_file)
            break
        except _ActorDied as e:
            if attempt == tries:
                raise RoundError(f"round {round_} stage {name} failed: its Ray actor died in each of {tries} "
                                 f"attempt(s); its process was killed, most often by the out-of-memory killer (see "
                                 f"`dmesg`): lower the batch sizes or give the stage more memory. Ray said: {e}"
                                 f"{_log_tail(log_file)}") from None
            log.warning("round %d %-11s its actor died (%s); running the stage again from its start (attempt %d of %d)",
                        round_, name, str(e)[:200], attempt + 1, tries)
    _RUNNING = None
    remember_verified(out, m.output_hash)   # just hashed: its consumers need not read it again
    log.info("round %d %-11s done in %6.1fs  %s", round_, name, m.seconds, _brief(m.extra))
    return m


class _ActorDied(Exception):
    """A stage's actor (or one it started) died with its process: worth one more try from the start."""


def _attempt(name: str, out: Path, key: str, cfg_part, input_hashes: dict, role: str, resources, fn: Callable,
             args: tuple, kwargs: dict, round_: int, log_file: Path | None) -> Manifest:
    """One run of a stage into a fresh temp dir, committed as `out` with its manifest."""
    from ray.exceptions import RayActorError

    from pipelines.actors import run_in_actor
    from selfplay.progress import live_bar
    t0 = time.time()
    with atomic_dir(out) as tmp:
        try:
            with live_bar(f"round {round_} {name}"):
                info, mem = run_in_actor(role, resources, fn, *args, out=tmp, log_file=log_file and str(log_file),
                                         stall_s=_SETTINGS.stall_s, on_stall=_stall_reporter(round_, name, log_file),
                                         **kwargs)
        except Exception as e:  # surface the stage's own error, not Ray's wrapper
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, RayActorError):
                said = str(cause).strip()
                raise _ActorDied(said.splitlines()[0] if said else type(cause).__name__) from None
            raise RoundError(f"round {round_} stage {name} failed: {type(cause).__name__}: {cause}"
                             f"{_log_tail(log_file)}") from None
        m = Manifest(stage=name, key=key, config_hash=stable_hash(cfg_part), inputs=input_hashes,
                     seeds={"seed": _seed(cfg_part)}, output_hash=hash_dir(tmp), seconds=round(time.time() - t0, 2),
                     extra={**info, **mem})
        m.write(tmp)
    return m


def _stall_reporter(round_: int, name: str, log_file: Path | None) -> Callable[[float], None]:
    def report(idle_s: float) -> None:
        log.warning("round %d %-11s no progress for %.0fs: its log has not grown (resources.stall_report_s)%s",
                    round_, name, idle_s, _log_tail(log_file, 10) or
                    " and has no line yet: its actor may still wait for the resources it asked for")
    return report


def verified_input(path: Path) -> str:
    """An input artifact's output_hash once its files match it; RoundError naming the file and the fix otherwise."""
    try:
        return verify_artifact(path)
    except ArtifactError as e:
        raise RoundError(f"{e}. Regenerate it: delete {path} and run the command again") from None


@dataclass(frozen=True)
class StageSettings:
    """How run_stage runs stages, set for an invocation by run_rounds. The defaults (a caller that is not
    a round driver, e.g. a test) leave the actors' output to Ray, retry nothing and report no stall."""
    log_root: Path | None = None   # RUN_DIR/logs; None (-v) leaves the output to Ray, which streams it
    retries: int = 0               # resources.stage_retries
    stall_s: float = 0.0           # resources.stall_report_s


def stage_settings(cfg: Config, log_root: Path | None) -> StageSettings:
    return StageSettings(log_root, cfg.resources.stage_retries, cfg.resources.stall_report_s)


_SETTINGS = StageSettings()
_RUNNING: tuple[int, str] | None = None   # (round, stage) in progress: what an interrupted run reports


def stage_log(round_: int, name: str) -> Path | None:
    root = _SETTINGS.log_root
    return root / f"round_{round_}" / f"{name}.log" if root is not None else None


def _log_tail(path: Path | None, lines: int = 20) -> str:
    """The end of a failed stage's log, each line as a terminal would show it (the last state of a
    bar redrawn with carriage returns)."""
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").rstrip("\n").split("\n")
    shown = [([seg for seg in ln.split("\r") if seg.strip()] or [""])[-1] for ln in text][-lines:]
    return f"\n--- last {len(shown)} lines of {path} ---\n" + "\n".join(shown)


def _seed(part) -> int:
    return part.get("seed", 0) if isinstance(part, dict) else 0


def _brief(extra: dict) -> str:
    keys = ("samples", "pairs", "pairs_per_s", "train_loss", "winrate_vs_initial", "winrate_vs_previous", "peak_rss_mb", "peak_gpu_mb")
    return " ".join(f"{k}={extra[k]:.3g}" if isinstance(extra[k], float) else f"{k}={extra[k]}"
                    for k in keys if k in extra)


def generation_resources(cfg: Config):
    """With several engines the stage's own actor only coordinates: the engines hold the devices."""
    from selfplay.config import ActorResources
    return ActorResources(num_cpus=0, num_gpus=0) if cfg.generation.num_engines > 1 else cfg.resources.generation


def judge_resources(cfg: Config):
    """With several judge actors the stage's own actor only coordinates."""
    from selfplay.config import ActorResources
    return ActorResources(num_cpus=0, num_gpus=0) if cfg.judge.num_actors > 1 else cfg.resources.judge


def trainer_resources(cfg: Config):
    """Ray Train workers each take resources.trainer; the stage actor that starts them holds nothing."""
    from selfplay.config import ActorResources
    from selfplay.dist_spec import needs_worker_group
    return ActorResources(num_cpus=0, num_gpus=0) if needs_worker_group(cfg) else cfg.resources.trainer


@dataclass(frozen=True)
class StageSpec:
    """What decides whether a stage reruns: its output dir, its config part and its input artifacts."""
    name: str
    out: Path
    part: dict
    inputs: dict[str, Path]


def stage_key(name: str, round_: int, part, input_hashes: dict[str, str]) -> str:
    return stable_hash({"stage": name, "round": round_, "config": part, "inputs": input_hashes})


def round_zero_parts(c: dict) -> dict[str, dict]:
    """Round 0's stages' config parts, from the config as a dict (dataclasses.asdict)."""
    # the init key holds what its files depend on: the source, and the sampling settings its generation_config records
    parts = {"init": {"policy": c["model"]["policy"],
                      "sampling": {k: c["generation"][k] for k in ("temperature", "top_p", "top_k", "max_new_tokens")}}}
    if c["init"]["sft_data"]:
        parts["sft"] = {"seed": c["seed"], "init": c["init"], "train": c["train"],
                        "model": {k: c["model"][k] for k in ("policy", "dtype", "max_length")}}
    parts["evaluate"] = _eval_part(c)
    return parts


def round_zero_stages(cfg: Config) -> list[StageSpec]:
    """Round 0 is the initial policy plus its eval generations (reused by every later round). With
    init.sft_data the initial policy is the SFT model, and model.policy itself is kept as round_0/base."""
    rp, parts = round_paths(cfg.run_dir, 0), round_zero_parts(asdict(cfg))
    specs = [StageSpec("init", base_path(cfg), parts["init"], {})]
    if "sft" in parts:
        specs.append(StageSpec("sft", rp.policy, parts["sft"], {"base": base_path(cfg)}))
    return specs + [StageSpec("evaluate", rp.eval, parts["evaluate"], {"policy": rp.policy})]


def ensure_round_zero(cfg: Config) -> None:
    from pipelines import stages
    s = {spec.name: spec for spec in round_zero_stages(cfg)}
    run_stage("init", s["init"].out, s["init"].part, s["init"].inputs, "trainer", cfg.resources.trainer,
              stages.init_policy, cfg.model.policy, cfg=cfg, round_=0)
    if "sft" in s:
        run_stage("sft", s["sft"].out, s["sft"].part, s["sft"].inputs, "trainer", trainer_resources(cfg),
                  stages.sft, str(base_path(cfg)), cfg, round_=0)
    run_stage("evaluate", s["evaluate"].out, s["evaluate"].part, s["evaluate"].inputs, "generation",
              generation_resources(cfg), stages.eval_generations, str(s["evaluate"].inputs["policy"]), cfg, 0, round_=0)


def base_path(cfg: Config) -> Path:
    """Where model.policy itself is saved: round_0/policy, or round_0/base when an SFT stage follows."""
    rp = round_paths(cfg.run_dir, 0)
    return rp.root / "base" if cfg.init.sft_data else rp.policy


def _eval_part(c: dict) -> dict:
    return {"seed": c["seed"], "data": c["data"], "eval": c["eval"], "max_new_tokens": c["generation"]["max_new_tokens"],
            "backend": c["generation"]["backend"], "judge": c["eval_judge"],
            "arena": c["arena"]}


def check_previous(cfg: Config, n: int) -> None:
    if n < 1:
        raise RoundError(f"ROUND must be >= 1 (round 0 is the initial policy), got {n}")
    if n == 1:
        return
    prev = round_paths(cfg.run_dir, n - 1)
    missing = [d for d in ("policy", "eval") if not (prev.root / d / MANIFEST).exists()]
    for d in set(("policy", "eval")) - set(missing):
        load_manifest(prev.root / d)   # present but corrupt: ArtifactError naming the file
    if missing:
        raise RoundError(f"round {n - 1} is not complete in {cfg.run_dir} (missing {', '.join(missing)}); "
                         f"run ROUND={n - 1} first")


def judge_context(cfg: Config, n: int):
    """The judge stage's context; its device comes from resources.judge (the evaluate stage swaps in
    the device of the actor its eval judge runs in), checked again inside that actor."""
    from judges.registry import JudgeContext, planned_device
    r = lambda k: str(round_paths(cfg.run_dir, max(k, 0)).policy)  # noqa: E731
    # With an SFT stage, round 1's previous model is the base M0 and M0 is the reward's reference (CREAM §8.1).
    base = str(base_path(cfg))
    return JudgeContext(policy=r(n - 1), previous_policy=base if n == 1 else r(n - 2), reference_policy=base,
                        device=planned_device(cfg.resources.judge), seed=cfg.seed, arena=cfg.arena)


def reference_paths(cfg: Config, n: int, names: tuple[str, ...]) -> dict[str, Path]:
    r = {"previous": n - 1, "initial": 0, "previous2": max(n - 2, 0)}
    return {k: round_paths(cfg.run_dir, r[k]).policy for k in names}


def judge_part(cfg: Config, c: dict) -> dict:
    """What the judge stage's output depends on: the judge, the arena, and which comparisons the algorithm
    asks for (absent for the full matrix, which serves every algorithm: run dirs judged before algorithms
    declared their comparisons keep their key)."""
    from selfplay.algorithms import get_algorithm
    asked = get_algorithm(cfg.algorithm).comparisons.name
    part = {"seed": cfg.seed, "judge": c["judge"], "arena": c["arena"]}
    return {**part, "comparisons": asked} if asked != "matrix" else part


def run_round(cfg: Config, n: int) -> dict:
    """One round, as the list of stages it runs."""
    from pipelines import stages
    from pipelines.evaluate import evaluate
    from selfplay.algorithms import get_algorithm

    check_previous(cfg, n)
    rp, prev, c = round_paths(cfg.run_dir, n), round_paths(cfg.run_dir, n - 1), asdict(cfg)
    res, ctx = cfg.resources, judge_context(cfg, n)
    refs = reference_paths(cfg, n, get_algorithm(cfg.algorithm).references)
    gen_part = {"seed": cfg.seed, "data": c["data"], "generation": c["generation"]}
    algo_part = {"seed": cfg.seed, "algorithm": cfg.algorithm, "loss": c["loss"]}
    # model.num_parameters / hidden_size / num_layers only size the plan: not part of what training makes
    model_part = {k: c["model"][k] for k in ("policy", "dtype", "max_length")}
    train_part = {**algo_part, "train": c["train"], "model": model_part}
    if n == 1:
        ensure_round_zero(cfg)
    m_gen = run_stage("generate", rp.stage("generate"), gen_part, {"policy": prev.policy}, "generation",
                      generation_resources(cfg), stages.generate, str(prev.policy), cfg, n, round_=n)
    m_judge = run_stage("judge", rp.stage("judge"), judge_part(cfg, c), {"generations": rp.stage("generate")},
                        "judge", judge_resources(cfg), stages.judge, rp.stage("generate"), cfg, ctx, round_=n)
    earlier = [round_paths(cfg.run_dir, k).stage("preferences") for k in range(1, n)]
    m_pref = run_stage("preferences", rp.stage("preferences"), algo_part,
                       {"judgments": rp.stage("judge"), **{f"pairs_{i + 1}": p for i, p in enumerate(earlier)}},
                       "judge", res.judge, stages.preferences, rp.stage("judge"), cfg, n, earlier, round_=n)
    m_train = run_stage("train", rp.policy, train_part, {"preferences": rp.stage("preferences"), **refs},
                        "trainer", trainer_resources(cfg), stages.train, str(prev.policy), {k: str(v) for k, v in refs.items()},
                        rp.stage("preferences"), cfg, n, ctx, round_=n)
    done = {"generate": m_gen, "judge": m_judge, "preferences": m_pref, "train": m_train}
    info = {"train_loss": m_train.extra.get("train_loss"), "loss_curve": m_train.extra.get("loss_curve", []),
            # sorted, so a judge stage that ran and one read back from its manifest give the same metrics.json
            "judge": {k: v for k, v in sorted(m_judge.extra.items()) if not k.startswith("peak")},
            "stage_seconds": {k: m.seconds for k, m in done.items()}}
    evals = {f"eval_{k}": round_paths(cfg.run_dir, k).eval for k in range(n)}
    m_eval = run_stage("evaluate", rp.eval, _eval_part(c), {"policy": rp.policy, **evals}, "generation",
                       generation_resources(cfg), evaluate, cfg.run_dir, n, cfg, ctx, info, round_=n)
    return m_eval.extra


def parse_rounds(spec: str) -> list[int]:
    """'3' → [3]; '1-3' → [1, 2, 3]; anything else (-1, abc, 3-1, 0) is a RoundError saying what is expected."""
    import re
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", spec)
    lo, hi = (int(m[1]), int(m[2] or m[1])) if m else (0, -1)
    if not m or lo < 1 or hi < lo:
        raise RoundError(f"--round / ROUND: expected a round number n >= 1 or a range a-b with 1 <= a <= b, got "
                         f"{spec!r} (round 0, the initial policy, is made by round 1)")
    return list(range(lo, hi + 1))


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from selfplay.config import ConfigError, load_config, to_yaml

    ap = _parser()
    args = ap.parse_intermixed_args(argv)   # -v may come after some overrides
    if args.print_config:
        try:
            print(to_yaml(load_config(args.config, args.overrides)), end="")
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.round is None:
        ap.error("--round is required (a round number n, or a range a-b)")
    if not args.keep_ray >= 0:
        ap.error(f"--keep-ray: seconds >= 0 (0: no kept Ray), got {args.keep_ray}")
    if args.keep_ray and os.environ.get("RAY_ADDRESS"):
        ap.error(f"--keep-ray {args.keep_ray:g} keeps a local Ray, but RAY_ADDRESS={os.environ['RAY_ADDRESS']} "
                 "names a cluster to run on: unset one of them")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from pipelines import round as imported   # under `python -m` this file is __main__, and the checks
    from pipelines.preflight import preflight  # raise the RoundError of the imported copy
    try:   # every check before Ray starts or anything is written (pipelines/preflight.py)
        cfg = load_config(args.config, args.overrides)
        rounds = parse_rounds(args.round)
        moved = preflight(cfg, rounds, force=args.force, invocation=["--config", args.config, *args.overrides])
    except (ArtifactError, ConfigError, RoundError, imported.RoundError, ValueError, OSError) as e:  # DataError: ValueError
        if args.verbose:
            import traceback
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, ArtifactError) else 2   # a corrupt earlier artifact is a failure, not a bad invocation
    for path in moved:
        log.info("--force: the replaced artifact is kept as %s", path)
    from pipelines.actors import ray_session
    from pipelines.kept_ray import KeptRayError
    write_run_config(cfg)
    try:
        session = ray_session(needed_cpus(cfg), verbose=args.verbose, run_dir=cfg.run_dir, keep_s=args.keep_ray)
        with _signals_handled(), session:
            _on_signals(_interrupt)   # again: ray.init installs a SIGTERM handler of its own
            run_rounds(cfg, rounds, verbose=args.verbose)
    except (RoundError, KeptRayError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted) as e:   # Ray's session has ended on the way out
        code = 128 + (e.signum if isinstance(e, Interrupted) else signal.SIGINT)
        print(_interrupted_line(), file=sys.stderr)
        return code
    finally:
        wait_dashboard()   # the last refresh ran while Ray's session ended
    return 0


class Interrupted(BaseException):
    """SIGTERM, raised in the main thread as KeyboardInterrupt is for SIGINT (BaseException: no `except
    Exception` on the way out may swallow it), so every `finally` runs: the stage's actor is killed, its temp
    dir removed, Ray shut down."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame) -> None:
    """The first SIGINT/SIGTERM unwinds the run; a second one, while that cleanup runs, ends the process at
    once (the Ray session's watchdog, pipelines/reaper.py, then ends what is left of it)."""
    from pipelines.actors import stop_waiting
    _on_signals(_exit_now)
    exc = KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)
    if not stop_waiting(exc):   # inside a stage's wait, that raises it (Ray's C code would garble it)
        raise exc


def _exit_now(signum: int, frame) -> None:
    import sys
    print(_interrupted_line(), file=sys.stderr)
    os._exit(128 + signum)


@contextmanager
def _signals_handled() -> Iterator[None]:
    """SIGINT and SIGTERM unwind the run (see _interrupt) until Ray has shut down; then the handlers the
    caller had (a test runner's) are back."""
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _on_signals(_interrupt)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _on_signals(handler) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _interrupted_line() -> str:
    where = f"in round {_RUNNING[0]} stage {_RUNNING[1]}" if _RUNNING else "between stages"
    return f"interrupted {where}; finished stages are kept — re-run the same command to resume"


def write_run_config(cfg: Config) -> None:
    """RUN_DIR/config.yaml: what the last invocation ran with."""
    from selfplay.config import to_yaml
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.run_dir) / "config.yaml").write_text(to_yaml(cfg))


def needed_cpus(cfg: Config) -> float:
    return max(r.num_cpus for r in (cfg.resources.generation, cfg.resources.judge, cfg.resources.trainer))


def run_rounds(cfg: Config, rounds: list[int], verbose: bool = False) -> None:
    """`rounds` of cfg inside the current Ray session, each logged to wandb and followed by a dashboard
    refresh (the last one may still run on return: wait_dashboard()); stage logs under RUN_DIR/logs unless
    verbose. The league (pipelines/league.py) calls it per run."""
    from pipelines.evaluate import read_metrics   # metrics.json with its timings (stage_seconds, pairs/s)
    from pipelines.submit import check_shared_run_dir
    from pipelines.tracking import log_round
    logs = None if verbose else Path(cfg.run_dir).resolve() / "logs"   # absolute: actors may run elsewhere
    check_shared_run_dir(cfg.run_dir)   # on a cluster, every node must see the run directory
    _background().submit(_warm_dashboard)   # plotly's imports, while the driver waits on the first stage
    with _stage_settings(stage_settings(cfg, logs)):
        for n in rounds:
            t0 = time.time()
            run_round(cfg, n)
            initial = round_paths(cfg.run_dir, 0).eval   # on the arena: its exploitability
            if n == 1 and (initial / "metrics.json").exists():
                log_round(cfg, read_metrics(initial))
            metrics = read_metrics(round_paths(cfg.run_dir, n).eval)
            log_round(cfg, metrics)
            _refresh_dashboard(cfg)
            w = metrics["winrate_vs_initial"]
            log.info("round %d complete in %.0fs: win rate vs initial %.3f [%.3f, %.3f]", n, time.time() - t0,
                     w["mean"], w["ci_low"], w["ci_high"])


@contextmanager
def _stage_settings(settings: StageSettings) -> Iterator[None]:
    global _SETTINGS, _RUNNING
    _SETTINGS, _RUNNING = settings, None
    try:
        yield
    finally:
        _SETTINGS = StageSettings()


def _parser():
    """`--help` lists the plug-ins from their registries, so it never goes stale."""
    import argparse

    from judges.registry import JUDGES
    from selfplay.algorithms import ALGORITHMS
    from selfplay.generation import BACKENDS

    epilog = (f"algorithms: {', '.join(sorted(ALGORITHMS))}\n"
              f"judges:     {', '.join(sorted(JUDGES))}\n"
              f"backends:   {', '.join(sorted(BACKENDS))}  (generation.backend, judge.backend)\n\n"
              "overrides: section.key=value, e.g. train.lr=1e-4 judge.name=pairrm data.train_prompts=[a.jsonl,b.jsonl]\n"
              "Every key with its default and meaning: selfplay/config.py. See the resolved config (file plus\n"
              "overrides) with --print-config; see what a round would run, where and in how much memory with\n"
              "`make plan CONFIG=...`.")
    ap = argparse.ArgumentParser(prog="python -m pipelines.round", description="Run self-play rounds: generate, "
                                 "judge, preferences, train, evaluate.", epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--round", help="round number n, or a range a-b (round 0 is the initial policy)")
    ap.add_argument("--config", default="configs/arena_sppo.yaml", help="YAML config (default: %(default)s)")
    ap.add_argument("--force", action="store_true", help="run even where a changed config would make a finished "
                    "earlier artifact again (round 0's); the old one is kept beside it as <name>.replaced-<time>")
    ap.add_argument("--keep-ray", type=float, default=0, metavar="SECONDS", help="join the local Ray kept between "
                    "invocations, starting it if there is none; it ends after SECONDS unused (`make iterate` passes "
                    "KEEP_RAY=600; `make ray-stop` ends it now). Default 0: a Ray of this run's own (RAY_ADDRESS: "
                    "that cluster's)")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="stream every actor's output and progress bars "
                    "to the console (default: one line per stage, the rest in RUN_DIR/logs/round_<n>/<stage>.log)")
    ap.add_argument("overrides", nargs="*", help="section.key=value overrides")
    return ap


_DASHBOARD: Future | None = None   # the last refresh started, in the driver's background thread


def _refresh_dashboard(cfg: Config) -> None:
    """Rebuild RUN_DIR/dashboard.html in a thread of the driver, where it overlaps what the driver only waits
    on: the next round's stages, or the end of the Ray session. wait_dashboard() waits for it."""
    global _DASHBOARD
    wait_dashboard()   # one at a time, and a failed one is not lost
    _DASHBOARD = _background().submit(_build_dashboard, Path(cfg.run_dir))


def wait_dashboard() -> None:
    """Wait for the refresh in progress; its error, if it failed, is raised here."""
    global _DASHBOARD
    pending, _DASHBOARD = _DASHBOARD, None
    if pending is not None:
        pending.result()


def _build_dashboard(run_dir: Path) -> None:
    try:
        from pipelines.dashboard import build_dashboard
    except ImportError:
        return
    log.info("dashboard: %s", build_dashboard(run_dir))


def _warm_dashboard() -> None:
    with suppress(ImportError):
        from pipelines.dashboard import warm_up
        warm_up()


@cache
def _background() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard")


if __name__ == "__main__":
    code = main()
    # Everything is written and Ray's session has ended: the interpreter's last collection at exit would walk
    # every object the libraries made for nothing (0.2 s of a 10 s round here). Not in main(): a test
    # process that calls it many times must still collect its garbage.
    gc.freeze()
    raise SystemExit(code)
