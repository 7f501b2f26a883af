"""The round driver: `python -m pipelines.round --round N [--config F] [key.sub=value ...]`.

Round n reads round n-1's policy and runs the stages pipelines/graph.py declares: generate -> judge ->
preferences -> train -> evaluate (round 1 makes round 0 first). Every stage runs in a Ray actor, writes its
artifact atomically with a manifest, and is skipped when its manifest matches (same config slice, seeds and
inputs), so a re-run resumes.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from pipelines.graph import RoundError, check_previous, parse_rounds, stages
from pipelines.layout import round_paths
from selfplay.artifacts import ArtifactError
from selfplay.config import Config

log = logging.getLogger("selfplay")


def run_round(runner, cfg: Config, n: int) -> None:
    """One round, as the list of stages it runs (round 1 makes round 0, the initial policy, first)."""
    check_previous(cfg, n)
    for stage in (stages(cfg, 0) if n == 1 else []) + stages(cfg, n):
        runner.run(stage, cfg)


def run_rounds(cfg: Config, rounds: list[int], runner, dashboard) -> None:
    """`rounds` of cfg in the runner's Ray session, each logged to wandb and followed by a dashboard refresh
    (`dashboard`: a DashboardRefresher; its last refresh may still run on return). The league
    (pipelines/league.py) calls it per run."""
    from pipelines.evaluate import read_metrics   # metrics.json with its timings (stage_seconds, pairs/s)
    from pipelines.submit import check_shared_run_dir
    from pipelines.tracking import log_round
    check_shared_run_dir(cfg.run_dir)   # on a cluster, every node must see the run directory
    dashboard.warm_up()   # plotly's imports, while the driver waits on the first stage
    for n in rounds:
        t0 = time.time()
        run_round(runner, cfg, n)
        initial = round_paths(cfg.run_dir, 0).eval   # on the arena: its exploitability
        if n == 1 and (initial / "metrics.json").exists():
            log_round(cfg, read_metrics(initial))
        metrics = read_metrics(round_paths(cfg.run_dir, n).eval)
        log_round(cfg, metrics)
        dashboard.refresh(Path(cfg.run_dir))
        w = metrics["winrate_vs_initial"]
        log.info("round %d complete in %.0fs: win rate vs initial %.3f [%.3f, %.3f]", n, time.time() - t0,
                 w["mean"], w["ci_low"], w["ci_high"])


@contextmanager
def round_session(cfg: Config, verbose: bool, keep_s: float, max_cpus: float | None = None,
                  run_dir: str | None = None, invocation: tuple[str, ...] = ()) -> Iterator[tuple]:
    """The invocation's Ray session with its stage runner and dashboard refresher; SIGINT and SIGTERM unwind
    it (see Interrupted) until Ray has shut down, and the dashboard's last refresh is waited for on the way out."""
    from pipelines.dashboard_refresh import DashboardRefresher
    from pipelines.ray_session import ray_session
    from pipelines.runner import StageRunner, StageSettings
    logs = None if verbose else Path(cfg.run_dir).resolve() / "logs"   # absolute: actors may run elsewhere
    dashboard, runner = DashboardRefresher(), StageRunner(None, StageSettings.of(cfg, logs, invocation))
    session = ray_session(max_cpus or needed_cpus(cfg), verbose=verbose, run_dir=run_dir or cfg.run_dir, keep_s=keep_s)
    try:
        with _signals_handled(runner) as handler, session as actors:
            runner.actors = actors
            _on_signals(handler)   # again: ray.init installs a SIGTERM handler of its own
            yield runner, dashboard
    finally:
        dashboard.close()   # its last refresh ran while Ray's session ended


def main(argv: list[str] | None = None) -> int:
    from selfplay.config import ConfigError, to_yaml
    from pipelines.config import load_config

    ap = _parser()
    args = ap.parse_intermixed_args(argv)   # -v may come after some overrides
    if args.print_config:
        try:
            print(to_yaml(load_config(args.config, args.overrides)), end="")
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    _check_args(ap, args)
    from pipelines import graph   # under `python -m` this file is __main__: the checks raise graph's RoundError
    from pipelines.preflight import preflight
    from pipelines.run_lock import RunDirBusy, holding
    invocation = ["--config", args.config, *args.overrides]
    with ExitStack() as held:
        held.enter_context(console_log())
        try:   # every check before Ray starts or anything is written (pipelines/preflight.py)
            cfg = load_config(args.config, args.overrides)
            rounds = parse_rounds(args.round)
            command = " ".join(["--round", args.round, *invocation])
            moved = preflight(cfg, rounds, force=args.force, invocation=invocation,   # one writer per run dir:
                              hold=lambda: held.enter_context(holding(cfg.run_dir, command)))
        except (ArtifactError, ConfigError, graph.RoundError, RunDirBusy, ValueError, OSError) as e:  # DataError: ValueError
            if args.verbose:
                import traceback
                traceback.print_exc()
            print(f"error: {e}", file=sys.stderr)
            return 1 if isinstance(e, ArtifactError) else 2   # a corrupt earlier artifact is a failure, not a bad invocation
        for path in moved:
            log.info("--force: the replaced artifact is kept as %s", path)
        return _run(cfg, rounds, args)


@contextmanager
def console_log() -> Iterator[None]:
    """The driver's INFO lines on this call's stderr, for this call. (logging.basicConfig would not do: it does
    nothing where the root logger has a handler already, a test runner's for one, and it binds the stderr of
    the first call in the process.)"""
    root, handler = logging.getLogger(), logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _check_args(ap, args) -> None:
    if args.round is None:
        ap.error("--round is required (a round number n, or a range a-b)")
    if not args.keep_ray >= 0:
        ap.error(f"--keep-ray: seconds >= 0 (0: no kept Ray), got {args.keep_ray}")
    if args.keep_ray and os.environ.get("RAY_ADDRESS"):
        ap.error(f"--keep-ray {args.keep_ray:g} keeps a local Ray, but RAY_ADDRESS={os.environ['RAY_ADDRESS']} "
                 "names a cluster to run on: unset one of them")


def _run(cfg: Config, rounds: list[int], args) -> int:
    from pipelines.ray_env import RaySetupError
    write_run_config(cfg)
    runner = None
    try:
        invocation = ("--config", args.config, *args.overrides)
        with round_session(cfg, args.verbose, args.keep_ray, invocation=invocation) as (runner, dashboard):
            run_rounds(cfg, rounds, runner, dashboard)
    except (RoundError, RaySetupError) as e:   # a stage that failed; a Ray that could not be started or joined
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted) as e:   # Ray's session has ended on the way out
        print(_interrupted_line(runner), file=sys.stderr)
        return 128 + (e.signum if isinstance(e, Interrupted) else signal.SIGINT)
    return 0


# ------------------------------------------------------------------------------------------ signals

class Interrupted(BaseException):
    """SIGTERM, raised in the main thread as KeyboardInterrupt is for SIGINT (BaseException: no `except
    Exception` on the way out may swallow it), so every `finally` runs: the stage's actor is killed, its temp
    dir removed, Ray shut down."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals_handled(runner) -> Iterator:
    """The first SIGINT/SIGTERM unwinds the run; a second one, while that cleanup runs, ends the process at
    once (the Ray session's watchdog, pipelines/reaper.py, then ends what is left of it). The handlers the
    caller had (a test runner's) are back on the way out."""
    def exit_now(signum: int, frame) -> None:
        print(_interrupted_line(runner), file=sys.stderr)
        os._exit(128 + signum)

    def interrupt(signum: int, frame) -> None:
        _on_signals(exit_now)
        exc = KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)
        # inside a stage's wait, the wait raises it (from Ray's C code it would come out garbled)
        if runner.actors is None or not runner.actors.stop_waiting(exc):
            raise exc

    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _on_signals(interrupt)
    try:
        yield interrupt
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _on_signals(handler) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _interrupted_line(runner) -> str:
    running = runner.running if runner is not None else None
    where = f"in round {running[0]} stage {running[1]}" if running else "between stages"
    return f"interrupted {where}; finished stages are kept — re-run the same command to resume"


# ------------------------------------------------------------------------------------------ helpers

def write_run_config(cfg: Config) -> None:
    """RUN_DIR/config.yaml: what the last invocation ran with."""
    from selfplay.config import to_yaml
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.run_dir) / "config.yaml").write_text(to_yaml(cfg))


def needed_cpus(cfg: Config) -> float:
    return max(r.num_cpus for r in (cfg.resources.generation, cfg.resources.judge, cfg.resources.trainer))


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


if __name__ == "__main__":
    code = main()
    # Everything is written and Ray's session has ended: the interpreter's last collection at exit would walk
    # every object the libraries made for nothing (0.2 s of a 10 s round here). Not in main(): a test
    # process that calls it many times must still collect its garbage.
    gc.freeze()
    raise SystemExit(code)
