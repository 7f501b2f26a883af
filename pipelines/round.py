"""The round driver: `python -m pipelines.round --round N [--config F] [key.sub=value ...]`.

Round n reads round n−1's policy and runs generate → judge → preferences → train → evaluate.
Every stage runs in a Ray actor, writes its artifact atomically with a manifest, and is skipped
when its manifest matches (same config section, seeds and inputs), so a re-run resumes.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

from pipelines.layout import round_paths
from selfplay.artifacts import Manifest, atomic_dir, hash_dir, read_manifest, stable_hash
from selfplay.config import Config

log = logging.getLogger("selfplay")


class RoundError(RuntimeError):
    """A round cannot run (missing earlier round, failed stage); earlier rounds are untouched."""


def run_stage(name: str, out: Path, cfg_part, inputs: dict[str, Path], role: str, resources,
              fn: Callable, *args, round_: int, **kwargs) -> Manifest:
    """Skip `name` if its manifest key matches, else run fn(*args, out=tmp) in an actor and commit.
    The actor's output goes to stage_log(round_, name), unless -v streams it."""
    from pipelines.actors import run_in_actor
    from selfplay.progress import live_bar

    input_hashes = {k: read_manifest(p).output_hash for k, p in inputs.items()}
    key = stable_hash({"stage": name, "round": round_, "config": cfg_part, "inputs": input_hashes})
    done = read_manifest(out)
    if done is not None and done.key == key:
        log.info("round %d %-11s skipped (manifest matches)", round_, name)
        return done
    t0, log_file = time.time(), stage_log(round_, name)
    with atomic_dir(out) as tmp:
        try:
            with live_bar(f"round {round_} {name}"):
                info, mem = run_in_actor(role, resources, fn, *args, out=tmp,
                                         log_file=log_file and str(log_file), **kwargs)
        except Exception as e:  # surface the stage's own error, not Ray's wrapper
            cause = getattr(e, "cause", None) or e
            raise RoundError(f"round {round_} stage {name} failed: {type(cause).__name__}: {cause}"
                             f"{_log_tail(log_file)}") from None
        m = Manifest(stage=name, key=key, config_hash=stable_hash(cfg_part), inputs=input_hashes,
                     seeds={"seed": _seed(cfg_part)}, output_hash=hash_dir(tmp), seconds=round(time.time() - t0, 2),
                     extra={**info, **mem})
        m.write(tmp)
    log.info("round %d %-11s done in %6.1fs  %s", round_, name, m.seconds, _brief(m.extra))
    return m


# Where stage logs go: RUN_DIR/logs, set by main(); None (-v, or a caller that is not main) leaves the
# actors' output to Ray, which streams it to the console.
_LOG_ROOT: Path | None = None


def stage_log(round_: int, name: str) -> Path | None:
    return _LOG_ROOT / f"round_{round_}" / f"{name}.log" if _LOG_ROOT is not None else None


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
    from selfplay.distributed import needs_worker_group
    return ActorResources(num_cpus=0, num_gpus=0) if needs_worker_group(cfg) else cfg.resources.trainer


def ensure_round_zero(cfg: Config) -> None:
    """Round 0 is the initial policy plus its eval generations (reused by every later round). With
    init.sft_data the initial policy is the SFT model, and model.policy itself is kept as round_0/base."""
    from pipelines import stages
    rp, c = round_paths(cfg.run_dir, 0), asdict(cfg)
    sft = bool(cfg.init.sft_data)
    # the init key holds what its files depend on: the source, and the sampling settings its generation_config records
    init_part = {"policy": cfg.model.policy, "sampling": {k: c["generation"][k] for k in ("temperature", "top_p",
                                                                                          "top_k", "max_new_tokens")}}
    run_stage("init", base_path(cfg), init_part, {}, "trainer", cfg.resources.trainer,
              stages.init_policy, cfg.model.policy, cfg=cfg, round_=0)
    if sft:
        part = {"seed": cfg.seed, "init": c["init"], "train": c["train"],
                "model": {k: c["model"][k] for k in ("policy", "dtype", "max_length")}}
        run_stage("sft", rp.policy, part, {"base": base_path(cfg)}, "trainer", trainer_resources(cfg),
                  stages.sft, str(base_path(cfg)), cfg, round_=0)
    run_stage("evaluate", rp.eval, _eval_part(c), {"policy": rp.policy}, "generation", generation_resources(cfg),
              stages.eval_generations, str(rp.policy), cfg, 0, round_=0)


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
    missing = [d for d in ("policy", "eval") if read_manifest(prev.root / d) is None]
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
    m_judge = run_stage("judge", rp.stage("judge"), {"seed": cfg.seed, "judge": c["judge"], "arena": c["arena"]},
                        {"generations": rp.stage("generate")}, "judge", judge_resources(cfg),
                        stages.judge, rp.stage("generate"), cfg, ctx, round_=n)
    earlier = [round_paths(cfg.run_dir, k).stage("preferences") for k in range(1, n)]
    m_pref = run_stage("preferences", rp.stage("preferences"), algo_part,
                       {"judgments": rp.stage("judge"), **{f"pairs_{i + 1}": p for i, p in enumerate(earlier)}},
                       "judge", res.judge, stages.preferences, rp.stage("judge"), cfg, n, earlier, round_=n)
    m_train = run_stage("train", rp.policy, train_part, {"preferences": rp.stage("preferences"), **refs},
                        "trainer", trainer_resources(cfg), stages.train, str(prev.policy), {k: str(v) for k, v in refs.items()},
                        rp.stage("preferences"), cfg, n, ctx, round_=n)
    done = {"generate": m_gen, "judge": m_judge, "preferences": m_pref, "train": m_train}
    info = {"train_loss": m_train.extra.get("train_loss"), "loss_curve": m_train.extra.get("loss_curve", []),
            "judge": {k: v for k, v in m_judge.extra.items() if not k.startswith("peak")},
            "stage_seconds": {k: m.seconds for k, m in done.items()}}
    evals = {f"eval_{k}": round_paths(cfg.run_dir, k).eval for k in range(n)}
    m_eval = run_stage("evaluate", rp.eval, _eval_part(c), {"policy": rp.policy, **evals}, "generation",
                       generation_resources(cfg), evaluate, cfg.run_dir, n, cfg, ctx, info, round_=n)
    return m_eval.extra


def parse_rounds(spec: str) -> list[int]:
    """'3' → [3]; '1-3' → [1, 2, 3]."""
    a, _, b = spec.partition("-")
    lo, hi = int(a), int(b or a)
    if hi < lo:
        raise RoundError(f"bad round range {spec!r}")
    return list(range(lo, hi + 1))


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = load_config(args.config, args.overrides)
        rounds = parse_rounds(args.round)
        check_previous(cfg, rounds[0])
        from selfplay.data import check_rounds
        check_rounds(cfg, rounds)   # a round without fresh prompts fails here, before Ray and any generation
    except (ConfigError, RoundError, ValueError) as e:  # DataError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    from pipelines.actors import ray_session
    from pipelines.tracking import log_round
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.run_dir) / "config.yaml").write_text(to_yaml(cfg))   # what the last invocation ran with
    need = max(r.num_cpus for r in (cfg.resources.generation, cfg.resources.judge, cfg.resources.trainer))
    logs = None if args.verbose else Path(cfg.run_dir).resolve() / "logs"   # absolute: actors may run elsewhere
    try:
        with _stage_logs_under(logs), ray_session(need, verbose=args.verbose):
            from pipelines.submit import check_shared_run_dir
            check_shared_run_dir(cfg.run_dir)   # on a cluster, every node must see the run directory
            for n in rounds:
                t0 = time.time()
                run_round(cfg, n)
                metrics = json.loads((round_paths(cfg.run_dir, n).eval / "metrics.json").read_text())
                log_round(cfg, metrics)
                _refresh_dashboard(cfg)
                w = metrics["winrate_vs_initial"]
                log.info("round %d complete in %.0fs: win rate vs initial %.3f [%.3f, %.3f]", n, time.time() - t0,
                         w["mean"], w["ci_low"], w["ci_high"])
    except RoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


@contextmanager
def _stage_logs_under(root: Path | None) -> Iterator[None]:
    global _LOG_ROOT
    _LOG_ROOT = root
    try:
        yield
    finally:
        _LOG_ROOT = None


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
    ap.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="stream every actor's output and progress bars "
                    "to the console (default: one line per stage, the rest in RUN_DIR/logs/round_<n>/<stage>.log)")
    ap.add_argument("overrides", nargs="*", help="section.key=value overrides")
    return ap


def _refresh_dashboard(cfg: Config) -> None:
    try:
        from pipelines.dashboard import build_dashboard
    except ImportError:
        return
    path = build_dashboard(Path(cfg.run_dir))
    log.info("dashboard: %s", path)


if __name__ == "__main__":
    raise SystemExit(main())
