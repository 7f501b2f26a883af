"""The round as one declaration: every stage once, with what it reads, writes, holds and does.

Round n (n >= 1) runs generate -> judge -> preferences -> train -> evaluate on round n-1's policy.
Round 0, which round 1 makes first, is the initial policy (init; with init.sft_data the SFT stage turns
model.policy, kept as round_0/base, into round_0/policy) and its eval samples, which every later round is
compared with.

`stages(cfg, n)` resolves round n's stages for a config: each stage's output directory, its input
artifacts (hashed into its key), the config slice its key depends on, the actor role and resources that
run it, and its work. The round driver (pipelines/round.py) runs that list, `make plan`
(pipelines/plan.py) sizes it, the preflight (pipelines/preflight.py) holds it against what the run dir
already has, and the league (pipelines/league.py) compares entrants' round 0 with it. No other module
names a stage's directory or builds its key.

A stage's work runs inside its actor and gets a StageJob; it writes its artifact into job.out (a temp dir
that the driver renames into place) and returns the diagnostics its manifest keeps.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipelines.layout import round_paths
from pipelines.stages import run_here
from selfplay.artifacts import stable_hash
from selfplay.config import ActorResources, Config

IDLE = ActorResources(num_cpus=0, num_gpus=0)   # a stage actor that only coordinates the actors it starts


class RoundError(RuntimeError):
    """A round cannot run (missing earlier round, failed stage); earlier rounds are untouched."""


@dataclass(frozen=True)
class Fan:
    """A stage that fans its work out over `count` actors, each holding `each`; its own actor then holds
    nothing (IDLE) and only coordinates."""
    count: int
    each: ActorResources


@dataclass(frozen=True)
class StageJob:
    """What a stage's work gets, inside its actor."""
    cfg: Config
    round: int
    inputs: dict[str, Path]             # the stage's hashed input artifacts, by name
    reads: dict[str, Path]              # artifacts it reads that its inputs already depend on (not hashed)
    out: Path                           # the temp dir it writes its artifact into
    fan_out: Callable = run_here        # (role, resources, fn, calls) -> results: the driver's actors


@dataclass(frozen=True)
class Stage:
    name: str                           # as the console, the logs and the manifest name it
    round: int
    role: str                           # the actor role (pipelines/actors.py): generation | judge | trainer
    out: Path                           # its artifact directory
    inputs: dict[str, Path]             # hashed into its key; each must be a finished artifact
    part: dict                          # the config slice its key depends on
    resources: ActorResources           # what its own actor holds
    work: Callable[[StageJob], dict]
    fan: Fan | None = None              # the actors it fans out over, if any
    reads: dict[str, Path] = field(default_factory=dict)

    def key(self, input_hashes: dict[str, str]) -> str:
        """What decides whether a finished artifact is this stage's: the same key skips the stage."""
        return stage_key(self.name, self.round, self.part, input_hashes)

    def job(self, cfg: Config, out: Path, fan_out: Callable = run_here) -> StageJob:
        return StageJob(cfg, self.round, dict(self.inputs), dict(self.reads), out, fan_out)


def stage_key(name: str, round_: int, part: Any, input_hashes: dict[str, str]) -> str:
    return stable_hash({"stage": name, "round": round_, "config": part, "inputs": input_hashes})


# ---------------------------------------------------------------------------------------- the rounds

def stages(cfg: Config, n: int) -> list[Stage]:
    """Round n's stages in the order they run (round 0: the initial policy and its eval samples)."""
    return _round_zero(cfg) if n == 0 else _round(cfg, n)


def invocation(cfg: Config, n: int) -> list[Stage]:
    """What `--round n` runs: round 1 makes round 0 first."""
    return (stages(cfg, 0) if n == 1 else []) + stages(cfg, n)


def _round_zero(cfg: Config) -> list[Stage]:
    rp, base, parts = round_paths(cfg.run_dir, 0), base_path(cfg), round_parts(asdict(cfg), 0)
    out = [Stage("init", 0, "trainer", base, {}, parts["init"], cfg.resources.trainer, _init)]
    if cfg.init.sft_data:
        fan = _train_fan(cfg)
        out.append(Stage("sft", 0, "trainer", rp.policy, {"base": base}, parts["sft"],
                         IDLE if fan else cfg.resources.trainer, _sft, fan))
    return out + [_evaluate(cfg, 0, parts["evaluate"])]


def _round(cfg: Config, n: int) -> list[Stage]:
    rp, prev, parts = round_paths(cfg.run_dir, n), round_paths(cfg.run_dir, n - 1), round_parts(asdict(cfg), n)
    gen_fan = _fan(cfg.generation.num_engines, cfg.resources.generation)
    judge_fan = _fan(cfg.judge.num_actors, cfg.resources.judge)
    train_fan = _train_fan(cfg)
    earlier = {f"pairs_{k}": round_paths(cfg.run_dir, k).stage("preferences") for k in range(1, n)}
    return [
        Stage("generate", n, "generation", rp.stage("generate"), {"policy": prev.policy}, parts["generate"],
              IDLE if gen_fan else cfg.resources.generation, _generate, gen_fan),
        Stage("judge", n, "judge", rp.stage("judge"), {"generations": rp.stage("generate")}, parts["judge"],
              IDLE if judge_fan else cfg.resources.judge, _judge, judge_fan),
        # the pair rule loads no model: it runs in a judge actor (the warm one, after judging)
        Stage("preferences", n, "judge", rp.stage("preferences"), {"judgments": rp.stage("judge"), **earlier},
              parts["preferences"], cfg.resources.judge, _preferences),
        Stage("train", n, "trainer", rp.policy, {"preferences": rp.stage("preferences"), **references(cfg, n)},
              parts["train"], IDLE if train_fan else cfg.resources.trainer, _train, train_fan,
              reads={"start": prev.policy}),
        _evaluate(cfg, n, parts["evaluate"]),
    ]


def _evaluate(cfg: Config, n: int, part: dict) -> Stage:
    """Round n's eval samples and (n >= 1) their win rates against every earlier round's."""
    rp, fan = round_paths(cfg.run_dir, n), _fan(cfg.generation.num_engines, cfg.resources.generation)
    inputs = {"policy": rp.policy, **{f"eval_{k}": round_paths(cfg.run_dir, k).eval for k in range(n)}}
    # the round's other stages: their diagnostics go into metrics.json (all upstream of the policy)
    reads = {s: rp.stage(s) for s in ("generate", "judge", "preferences")} if n else {}
    return Stage("evaluate", n, "generation", rp.eval, inputs, part, IDLE if fan else cfg.resources.generation,
                 _evaluate_work, fan, reads)


def _fan(count: int, each: ActorResources) -> Fan | None:
    return Fan(count, each) if count > 1 else None


def _train_fan(cfg: Config) -> Fan | None:
    """Ray Train workers each take resources.trainer; the stage actor that starts them holds nothing."""
    from selfplay.dist_spec import needs_worker_group
    return Fan(cfg.train.workers, cfg.resources.trainer) if needs_worker_group(cfg) else None


def base_path(cfg: Config) -> Path:
    """Where model.policy itself is saved: round_0/policy, or round_0/base when an SFT stage follows."""
    rp = round_paths(cfg.run_dir, 0)
    return rp.root / "base" if cfg.init.sft_data else rp.policy


def references(cfg: Config, n: int) -> dict[str, Path]:
    """The frozen policies the algorithm's loss scores (previous = pi_t, initial = pi_ref, previous2 = pi_{t-1})."""
    from selfplay.algorithms import get_algorithm
    rounds = {"previous": n - 1, "initial": 0, "previous2": max(n - 2, 0)}
    return {k: round_paths(cfg.run_dir, rounds[k]).policy for k in get_algorithm(cfg.algorithm).references}


# ------------------------------------------------------------------- the config slices keys depend on
# From the config as a dict (dataclasses.asdict), so the preflight can ask what a changed key touches.

def round_parts(c: dict, n: int) -> dict[str, dict]:
    """The config slice each of round n's stages keys on, by stage name."""
    if n == 0:   # what makes two runs' round 0 the same (the league shares it between entrants)
        return {"init": init_part(c), **({"sft": sft_part(c)} if c["init"]["sft_data"] else {}),
                "evaluate": eval_part(c)}
    return {"generate": {"seed": c["seed"], "data": c["data"], "generation": c["generation"]},
            "judge": judge_part(c), "preferences": algorithm_part(c), "train": train_part(c),
            "evaluate": eval_part(c)}


def init_part(c: dict) -> dict:
    # the init key holds what its files depend on: the source, and the sampling settings its generation_config records
    return {"policy": c["model"]["policy"],
            "sampling": {k: c["generation"][k] for k in ("temperature", "top_p", "top_k", "max_new_tokens")}}


def sft_part(c: dict) -> dict:
    return {"seed": c["seed"], "init": c["init"], "train": c["train"], "model": model_part(c)}


def eval_part(c: dict) -> dict:
    return {"seed": c["seed"], "data": c["data"], "eval": c["eval"], "max_new_tokens": c["generation"]["max_new_tokens"],
            "backend": c["generation"]["backend"], "judge": c["eval_judge"], "arena": c["arena"]}


def model_part(c: dict) -> dict:
    # model.num_parameters / hidden_size / num_layers only size the plan: not part of what training makes
    return {k: c["model"][k] for k in ("policy", "dtype", "max_length")}


def algorithm_part(c: dict) -> dict:
    return {"seed": c["seed"], "algorithm": c["algorithm"], "loss": c["loss"]}


def train_part(c: dict) -> dict:
    return {**algorithm_part(c), "train": c["train"], "model": model_part(c)}


def judge_part(c: dict) -> dict:
    """What the judge stage's output depends on: the judge, the arena, and which comparisons the algorithm
    asks for (absent for the full matrix, which serves every algorithm: run dirs judged before algorithms
    declared their comparisons keep their key)."""
    from selfplay.algorithms import get_algorithm
    asked = get_algorithm(c["algorithm"]).comparisons.name
    part = {"seed": c["seed"], "judge": c["judge"], "arena": c["arena"]}
    return {**part, "comparisons": asked} if asked != "matrix" else part


# ------------------------------------------------------------------------------- the stages' work
# Each maps its job onto the plain stage function (pipelines/stages.py, pipelines/evaluate.py), which
# tests call directly. Imported here, inside, so that the driver never loads what only actors run.

def _init(job: StageJob) -> dict:
    from pipelines.stages import init_policy
    return init_policy(job.cfg.model.policy, job.out, cfg=job.cfg)


def _sft(job: StageJob) -> dict:
    from pipelines.stages import sft
    return sft(str(job.inputs["base"]), job.cfg, job.out)


def _generate(job: StageJob) -> dict:
    from pipelines.stages import generate
    return generate(str(job.inputs["policy"]), job.cfg, job.round, job.out, fan_out=job.fan_out)


def _judge(job: StageJob) -> dict:
    from pipelines.stages import judge
    return judge(job.inputs["generations"], job.cfg, judge_context(job.cfg, job.round), job.out, fan_out=job.fan_out)


def _preferences(job: StageJob) -> dict:
    from pipelines.stages import preferences
    earlier = [p for name, p in sorted(job.inputs.items(), key=lambda kv: _pairs_round(kv[0])) if name.startswith("pairs_")]
    return preferences(job.inputs["judgments"], job.cfg, job.round, earlier, job.out)


def _pairs_round(name: str) -> int:
    return int(name.removeprefix("pairs_")) if name.startswith("pairs_") else 0


def _train(job: StageJob) -> dict:
    from pipelines.stages import train
    refs = {k: str(v) for k, v in job.inputs.items() if k != "preferences"}
    return train(str(job.reads["start"]), refs, job.inputs["preferences"], job.cfg, job.round,
                 judge_context(job.cfg, job.round), job.out)


def _evaluate_work(job: StageJob) -> dict:
    from pipelines.evaluate import eval_generations, evaluate, round_info
    if job.round == 0:
        return eval_generations(str(job.inputs["policy"]), job.cfg, 0, job.out)
    earlier = [job.inputs[f"eval_{k}"] for k in range(job.round)]
    info = round_info({**job.reads, "train": job.inputs["policy"]})
    return evaluate(job.inputs["policy"], earlier, job.cfg, job.round, judge_context(job.cfg, job.round), info,
                    job.out, fan_out=job.fan_out)


def judge_context(cfg: Config, n: int):
    """The judge stage's context; its device comes from resources.judge (the evaluate stage swaps in
    the device of the actor its eval judge runs in), checked again inside that actor."""
    from judges.registry import JudgeContext, planned_device
    policy = lambda k: str(round_paths(cfg.run_dir, max(k, 0)).policy)  # noqa: E731
    # With an SFT stage, round 1's previous model is the base M0 and M0 is the reward's reference (CREAM §8.1).
    base = str(base_path(cfg))
    return JudgeContext(policy=policy(n - 1), previous_policy=base if n == 1 else policy(n - 2), reference_policy=base,
                        device=planned_device(cfg.resources.judge), seed=cfg.seed, arena=cfg.arena)


# ------------------------------------------------------------------------------- between rounds

def check_previous(cfg: Config, n: int) -> None:
    """Round n can start: n >= 1, and round n-1 has its policy and its eval (corrupt ones: ArtifactError)."""
    from selfplay.artifacts import MANIFEST, load_manifest
    if n < 1:
        raise RoundError(f"ROUND must be >= 1 (round 0 is the initial policy), got {n}")
    if n == 1:
        return
    prev = round_paths(cfg.run_dir, n - 1)
    missing = [d for d in ("policy", "eval") if not (prev.root / d / MANIFEST).exists()]
    for d in {"policy", "eval"} - set(missing):
        load_manifest(prev.root / d)   # present but corrupt: ArtifactError naming the file
    if missing:
        raise RoundError(f"round {n - 1} is not complete in {cfg.run_dir} (missing {', '.join(missing)}); "
                         f"run ROUND={n - 1} first")


def parse_rounds(spec: str) -> list[int]:
    """'3' -> [3]; '1-3' -> [1, 2, 3]; anything else (-1, abc, 3-1, 0) is a RoundError saying what is expected."""
    import re
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", spec)
    lo, hi = (int(m[1]), int(m[2] or m[1])) if m else (0, -1)
    if not m or lo < 1 or hi < lo:
        raise RoundError(f"--round / ROUND: expected a round number n >= 1 or a range a-b with 1 <= a <= b, got "
                         f"{spec!r} (round 0, the initial policy, is made by round 1)")
    if hi - lo + 1 > MAX_ROUNDS:   # every round's stages are declared and checked up front
        raise RoundError(f"--round / ROUND: {spec!r} asks for {hi - lo + 1} rounds in one invocation; at most "
                         f"{MAX_ROUNDS} at a time (run the rest in later invocations: they resume where this one ends)")
    return list(range(lo, hi + 1))


MAX_ROUNDS = 1000   # papers run 3-10; an invocation checks every round it will run before the first starts
