"""`make league ALGOS=sppo,egpo ROUNDS=n RUN_DIR=dir [ARGS="k=v egpo:k=v ..."]`, or `python -m pipelines.league`:
every algorithm from the same initial policy and seed, each in its own ordinary run dir RUN_DIR/<algo>, then
what the arena's oracle says about all of them, in RUN_DIR/league.json and RUN_DIR/league.html.

An entrant <name> is configs/arena_<name>.yaml, run with run_dir=RUN_DIR/<name> and every ARGS override
(`<name>:key=value` applies to that entrant only: train.steps_per_round exists only for egpo, for instance),
through the round driver's own run_rounds, all in one Ray session; a re-run resumes as `make iterate` does
(finished stages skip by manifest).

Round 0 depends only on the initial policy, the sampling and the eval settings (its stages' config parts,
pipelines.graph.round_parts(c, 0), name no algorithm), so the first entrant generates it and every entrant
whose parts are equal gets a copy, manifests included, which the round driver then skips as finished; an
entrant whose parts differ (an SFT start, other eval settings) makes its own. A copied round 0 is a byte
copy: its model card and metrics.json name the entrant that generated it.

Cross-play: the final policies (round n of each entrant) and the initial policy (the first entrant's round
0) are played against each other on the eval samples the runs already wrote: the oracle's P(a ≻ b | x) for
every pair of samples at a prompt, averaged per prompt; the mean over prompts with a 95% bootstrap
interval over prompts (pipelines.stats.winrate_summary), as the evaluate stage computes win rates.
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipelines.layout import round_paths
from pipelines.league_records import CrossPlay, EntrantRecord, Estimate, League, RoundRecord
from selfplay.arena import ArenaRules, assess, verdict_probability
from selfplay.artifacts import read_manifest
from selfplay.config import Config

log = logging.getLogger("selfplay")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_ALGOS = "sppo,inpo,dno,egpo,apo,dpo,ipo"
INITIAL = "initial"


class LeagueError(ValueError):
    """A league that cannot start as asked (exit 2)."""


# ------------------------------------------------------------------------------------------- set-up

def known_entrants(configs: Path | None = None) -> list[str]:
    if configs:
        return sorted(p.stem for p in Path(configs).glob("*.yaml"))
    return sorted(p.stem.removeprefix("arena_") for p in CONFIGS.glob("arena_*.yaml"))


def split_overrides(args: list[str], names: list[str]) -> dict[str, list[str]]:
    """ARGS per entrant: `key=value` for all, `<name>:key=value` for <name> only."""
    per: dict[str, list[str]] = {n: [] for n in names}
    for a in args:
        key = a.partition("=")[0]
        scope, _, rest = a.partition(":") if ":" in key else ("", "", a)
        if scope and scope not in per:
            raise LeagueError(f"{a}: {scope!r} is not in ALGOS ({', '.join(names)})")
        if rest.partition("=")[0].strip() == "run_dir":
            raise LeagueError(f"{a}: the league sets run_dir (RUN_DIR/<algo>); set RUN_DIR instead")
        for n in ([scope] if scope else names):
            per[n].append(rest)
    return per


def load_entrants(names: list[str], rounds: int, run_dir: str, args: list[str], force: bool = False,
                  configs: Path | None = None, held: ExitStack | None = None) -> list[tuple[str, Config]]:
    """Every entrant's resolved config, checked as the round driver checks an invocation (pipelines/preflight.py),
    or LeagueError naming the first problem, before Ray starts or anything is written. With `held`, each
    entrant's run dir is held (pipelines/run_lock.py) from before its checks until `held` closes."""
    from judges.registry import uses_arena
    from pipelines.config import load_config
    from pipelines.graph import RoundError
    from pipelines.preflight import preflight
    from pipelines.run_lock import RunDirBusy, holding
    from selfplay.config import ConfigError

    known = known_entrants(configs)
    bad = [n for n in names if n not in known]
    if not names or bad or len(set(names)) < len(names) or rounds < 1:
        raise LeagueError(_setup_problem(names, bad, rounds, known, configs))
    per, out = split_overrides(args, names), []
    for n in names:
        overrides = [*per[n], f"run_dir={Path(run_dir) / n}"]
        try:
            cfg = load_config(config_path(n, configs), overrides)
        except ConfigError as e:
            raise LeagueError(f"{n}: {e}") from None
        if not uses_arena(cfg):
            raise LeagueError(f"{n}: {_shown(config_path(n, configs))} (with ARGS) does not play the arena (no oracle "
                              "judge, eval prompts not builtin:arena/...): the league's exploitability and cross-play need it")
        out.append((n, cfg))
    check_comparable(out)
    for n, cfg in out:   # run dir, earlier artifacts, one history per run dir, fresh prompts for every round
        invocation = ["--config", _shown(config_path(n, configs)), *per[n], f"run_dir={cfg.run_dir}"]
        def hold(run_dir=cfg.run_dir, command=" ".join(["league", *invocation])) -> None:
            if held is not None:
                held.enter_context(holding(run_dir, command))
        try:
            for moved in preflight(cfg, list(range(1, rounds + 1)), force=force, invocation=invocation, hold=hold):
                log.info("--force: the replaced artifact is kept as %s", moved)
        except (RoundError, RunDirBusy, ValueError, OSError) as e:   # ConfigError and DataError are ValueErrors
            raise LeagueError(f"{n}: {e}") from None
    return out


def config_path(name: str, configs: Path | None = None) -> Path:
    """Entrant <name>'s config: CONFIGS/<name>.yaml with --configs, else configs/arena_<name>.yaml."""
    return Path(configs) / f"{name}.yaml" if configs else CONFIGS / f"arena_{name}.yaml"


def _shown(path: Path) -> str:
    """A config's path as a command line would give it: relative to the repository when it is inside."""
    try:
        return str(Path(path).resolve().relative_to(CONFIGS.parent))
    except ValueError:
        return str(path)


def _setup_problem(names: list[str], bad: list[str], rounds: int, known: list[str], configs: Path | None) -> str:
    if not names:
        return f"ALGOS is empty (choose from {', '.join(known)})"
    if bad:
        return f"unknown algorithm {bad[0]!r}: no {_shown(config_path(bad[0], configs))} (choose from {', '.join(known)})"
    if len(set(names)) < len(names):
        return f"ALGOS names an algorithm twice: {','.join(names)}"
    return f"ROUNDS must be >= 1, got {rounds}"


def check_comparable(entrants: list[tuple[str, Config]]) -> None:
    """One game for all: the same seed, oracle rules and eval prompts, or the league compares nothing."""
    fields = {"seed": lambda c: c.seed, "arena": lambda c: c.arena, "data.eval_prompts": lambda c: c.data.eval_prompts,
              "data.eval_limit": lambda c: c.data.eval_limit}
    for key, get in fields.items():
        values = {n: get(c) for n, c in entrants}
        if len({repr(v) for v in values.values()}) > 1:
            raise LeagueError(f"the configs disagree on {key} ({', '.join(f'{n}: {v}' for n, v in values.items())}); "
                              "a league plays one game from one seed: set it in ARGS")


# ------------------------------------------------------------------------------------------- running

def share_round_zero(source: Config, cfg: Config) -> bool:
    """Copy source's complete round 0 into cfg's run dir when cfg has none yet and would make the same one
    (equal config parts for every round-0 stage): atomically, hidden caches and temp dirs left out. The round
    driver then finds its manifests' keys matching. Returns whether a copy was made."""
    from pipelines.graph import round_parts
    src, dst = round_paths(source.run_dir, 0), round_paths(cfg.run_dir, 0)
    if dst.root.exists() or read_manifest(src.eval) is None:
        return False
    if round_parts(asdict(source), 0) != round_parts(asdict(cfg), 0):
        return False
    tmp = dst.root.with_name(f".{dst.root.name}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src.root, tmp, ignore=shutil.ignore_patterns(".*"))
    tmp.rename(dst.root)
    return True


def same_round_zero(a: Config, b: Config) -> bool:
    """Whether two runs' round 0 eval stages have the same key and the same output bytes."""
    ma, mb = (read_manifest(round_paths(c.run_dir, 0).eval) for c in (a, b))
    return ma is not None and mb is not None and (ma.key, ma.output_hash) == (mb.key, mb.output_hash)


def run_league(entrants: list[tuple[str, Config]], rounds: int, run_dir: str, verbose: bool = False) -> None:
    """Rounds 1..n of every entrant in turn, one Ray session for all."""
    from pipelines.round import needed_cpus, round_session, run_rounds, write_run_config
    from pipelines.runner import StageSettings

    first_name, first = entrants[0]
    cpus = max(needed_cpus(c) for _, c in entrants)
    with round_session(first, verbose, 0, max_cpus=cpus, run_dir=run_dir) as (runner, dashboard):
        for i, (name, cfg) in enumerate(entrants):
            write_run_config(cfg)
            if i > 0 and share_round_zero(first, cfg):
                log.info("league: round 0 of %s copied from %s (same initial policy, sampling and eval settings)",
                         name, first_name)
            log.info("league: %s (%d/%d), rounds 1-%d in %s", name, i + 1, len(entrants), rounds, cfg.run_dir)
            runner.settings = StageSettings.of(cfg, None if verbose else Path(cfg.run_dir).resolve() / "logs")
            run_rounds(cfg, list(range(1, rounds + 1)), runner, dashboard)


# ------------------------------------------------------------------------------------------- report

def _metrics(cfg: Config, n: int) -> dict:
    return json.loads((round_paths(cfg.run_dir, n).eval / "metrics.json").read_text())


def round_record(m: dict) -> RoundRecord:
    e = m["exploitability"]
    w = m.get("winrate_vs_initial")
    return RoundRecord(round=m["round"], exploitability=Estimate.of(e), quality_part=e["quality_part"],
                       style_part=e["style_part"], winrate_vs_initial=Estimate.of(w) if w else None,
                       style_mix=m["style_mix"], mean_quality=m["mean_quality"], plugin=e.get("plugin"),
                       floor=e.get("floor"))


def _verdicts(generations: Path) -> dict[str, list]:
    """Per eval prompt id, the arena verdict of each sample (quality and style are all the oracle reads)."""
    from pipelines.stages import group_generations
    return {pid: [assess(p, r["response"]) for r in rs] for pid, p, rs in group_generations(generations)}


def play(a: dict[str, list], b: dict[str, list], rules: ArenaRules) -> Estimate:
    """P(a ≻ b): every sample pair at a prompt, a mean per prompt, bootstrap interval over prompts."""
    from pipelines.stats import winrate_summary
    ids = [i for i in a if i in b]
    if not ids:
        raise LeagueError("two runs of the league share no eval prompt")
    per_prompt = np.array([np.mean([verdict_probability(x, y, rules) for x in a[i] for y in b[i]]) for i in ids])
    s = winrate_summary(per_prompt)
    return Estimate(s.mean, s.ci_low, s.ci_high, s.n)


def cross_play(entrants: list[tuple[str, Config]], rounds: int) -> CrossPlay:
    first = entrants[0][1]
    dirs = [(INITIAL, round_paths(first.run_dir, 0).eval_generations)]
    dirs += [(f"{n}/round_{rounds}", round_paths(c.run_dir, rounds).eval_generations) for n, c in entrants]
    verdicts = [_verdicts(d) for _, d in dirs]
    return CrossPlay([p for p, _ in dirs], [[play(a, b, first.arena) for b in verdicts] for a in verdicts])


def league_report(entrants: list[tuple[str, Config]], rounds: int) -> League:
    xp = cross_play(entrants, rounds)
    first_name, first = entrants[0]
    records = []
    for i, (name, cfg) in enumerate(entrants, start=1):   # row i of the cross-play; row 0 is the initial policy
        others = [w.mean for j, w in enumerate(xp.winrate[i]) if j != i]
        records.append(EntrantRecord(name, cfg.algorithm, cfg.run_dir, first_name if same_round_zero(first, cfg) else name,
                                     [round_record(_metrics(cfg, n)) for n in range(rounds + 1)],
                                     float(np.mean(others))))
    by_e = sorted(records, key=lambda r: (r.rounds[-1].exploitability.mean, r.name))
    by_x = sorted(records, key=lambda r: (-r.mean_crossplay, r.name))
    return League(rounds, first.seed, first.arena, records, xp, [r.name for r in by_e], [r.name for r in by_x])


def write_league(league: League, run_dir: Path) -> tuple[Path, Path]:
    from pipelines.evaluate import finite_json
    from pipelines.league_page import build_league_page
    out = Path(run_dir) / "league.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(finite_json(asdict(league)), indent=1, allow_nan=False))
    tmp.replace(out)
    return out, build_league_page(league, Path(run_dir) / "league.html")


# ------------------------------------------------------------------------------------------- CLI

def _parser(configs: Path | None = None):
    """`--help` lists the entrants of --configs DIR when it is given (DIR/<name>.yaml), else configs/arena_*."""
    import argparse
    listed = (f"entrants ({_shown(Path(configs))}/<name>.yaml): {', '.join(known_entrants(configs))}" if configs else
              f"entrants (configs/arena_<name>.yaml): {', '.join(known_entrants())}\n"
              "with --configs DIR: DIR/<name>.yaml (configs/nash: the Nash arena's)")
    ap = argparse.ArgumentParser(prog="python -m pipelines.league", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=listed)
    ap.add_argument("--algos", default=DEFAULT_ALGOS, help="comma-separated entrants (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds 1..n of every entrant (default: %(default)s)")
    ap.add_argument("--run-dir", default="runs/league", help="RUN_DIR: entrant <name> runs in RUN_DIR/<name>")
    ap.add_argument("--configs", type=Path, default=None, metavar="DIR", help="entrant <name> is DIR/<name>.yaml "
                    "(default: configs/arena_<name>.yaml)")
    ap.add_argument("--force", action="store_true", help="as make iterate --force: redo round 0 or go on in a "
                    "run dir whose earlier rounds another config made (the replaced artifacts are kept)")
    ap.add_argument("-v", "--verbose", action="store_true", help="stream every actor's output (as make iterate -v)")
    ap.add_argument("overrides", nargs="*", help="key=value for every entrant, <name>:key=value for one")
    return ap


def main(argv: list[str] | None = None) -> int:
    from selfplay.artifacts import ArtifactError

    import argparse
    first = argparse.ArgumentParser(add_help=False)   # --configs first: --help lists that folder's entrants
    first.add_argument("--configs", type=Path, default=None)
    args = _parser(first.parse_known_args(argv)[0].configs).parse_intermixed_args(argv)
    from pipelines.round import console_log
    names = [a.strip() for a in args.algos.split(",") if a.strip()]
    with ExitStack() as held:   # every entrant's run dir, held from its checks to the end (one writer each)
        held.enter_context(console_log())   # the round driver's log lines, on this call's stderr
        try:
            entrants = load_entrants(names, args.rounds, args.run_dir, args.overrides, args.force, args.configs, held)
        except (LeagueError, ArtifactError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1 if isinstance(e, ArtifactError) else 2   # a corrupt earlier artifact is a failure, not a bad invocation
        return _play(entrants, args)


def _play(entrants: list[tuple[str, Config]], args) -> int:
    from pipelines.graph import RoundError
    from pipelines.round import Interrupted
    t0 = time.time()
    try:
        run_league(entrants, args.rounds, args.run_dir, args.verbose)
    except RoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):   # Ray's session has ended on the way out; every stage is atomic
        print("interrupted; finished stages are kept — re-run the same command to resume", file=sys.stderr)
        return 130
    league = league_report(entrants, args.rounds)
    paths = write_league(league, Path(args.run_dir))
    log.info("league of %d complete in %.0fs: %s", len(entrants), time.time() - t0, "  ".join(map(str, paths)))
    log.info("lowest final exploitability first: %s", ", ".join(
        f"{n} {next(r for r in league.entrants if r.name == n).rounds[-1].exploitability.mean:.3f}"
        for n in league.by_exploitability))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
