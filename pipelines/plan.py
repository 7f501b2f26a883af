"""`make plan CONFIG=... [ROUND=n] [ARGS="key=value ..."]`: what round n of a config would run, where,
and whether it fits, before renting anything.

    python -m pipelines.plan --config configs/paper/sppo_mistral7b_pairrm.yaml --round 2 train.workers=4

Resolves the config into one record per stage (the actor role and its resources, device, dtypes,
the prompts, judge and references it takes, its estimated memory per GPU from selfplay/memory.py)
and prints them as a table. Loads no model and never looks at this machine's GPUs: devices follow
the resources (selfplay.devices.device_for) and memory is budgeted against resources.gpu_memory_gb.
Exit 0 when the round can be honoured, 2 with the reasons when it cannot (or the config is invalid).
Imports neither Ray nor vLLM.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from selfplay.config import ActorResources, Config
from selfplay.memory import GIB, ModelFacts

ANY_GPUS = 1 << 20   # device_for's view of "a machine with GPUs", so the plan never asks torch


@dataclass(frozen=True)
class Memory:
    """A stage's estimate on its device: per GPU on cuda (checked against `limit`), per actor on the CPU."""
    bytes: float | None = 0.0     # None = cannot be sized
    limit: float | None = None    # the most it may use on its GPU; None on the CPU (nothing to check)
    host: float = 0.0             # what it keeps in host RAM instead (fsdp_offload)

    @property
    def fits(self) -> bool:
        return self.limit is None or self.bytes is None or self.bytes <= self.limit


@dataclass(frozen=True)
class StagePlan:
    """One stage of the round as it would run."""
    stage: str                    # init | eval r0 | generate | judge | preferences | train | evaluate | eval judge
    role: str                     # the actor role (pipelines.actors): generation | judge | trainer
    actors: int                   # engines, judge actors or train workers, each holding `resources`
    resources: ActorResources     # per actor
    device: str                   # cpu | cuda
    dtype: str = "—"              # compute dtype, and for training where the fp32 state is
    memory: Memory = Memory()
    prompts: str = ""             # source and count
    judge: str = ""               # the judge it runs and on which device
    references: tuple[str, ...] = ()   # frozen policies it scores, as name=round
    training: str = ""            # strategy, workers, LoRA rank, optimizer
    problem: str = ""             # why it cannot run as configured ("" = it can)


@dataclass(frozen=True)
class Plan:
    config: str
    round: int
    cfg: Config
    model: ModelFacts
    gpu_bytes: float              # the GPU size budgeted against
    stages: list[StagePlan]
    footer: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # everything that cannot be honoured


# ---------------------------------------------------------------- building the plan

def build_plan(cfg: Config, n: int, config: str = "") -> Plan:
    """Round n of `cfg` as stage records, one per stage pipelines/graph.py declares for the invocation (round 1
    also makes round 0), plus the eval judge inside each evaluate; nothing is loaded (the arena's tiny assets
    may be built, not its topic-reading policy: see architecture_source)."""
    from pipelines.graph import invocation
    from selfplay.data import architecture_source
    from selfplay.memory import model_facts

    facts = model_facts(architecture_source(cfg.model.policy), cfg.model)
    gpu = cfg.resources.gpu_memory_gb * GIB
    planned = []
    for stage in invocation(cfg, n):
        planned += _PLANNERS[stage.name](stage, cfg, facts, gpu)
    return Plan(config, n, cfg, facts, gpu, planned, _footer(cfg, facts, n), [s.problem for s in planned if s.problem])


def _plan_init(stage, cfg: Config, facts: ModelFacts, gpu: float) -> list[StagePlan]:
    return [_init_stage(cfg)]


def _plan_sft(stage, cfg: Config, facts: ModelFacts, gpu: float) -> list[StagePlan]:
    # the SFT stage trains like a round's train stage: same trainer, same memory
    import dataclasses
    sft = _train_stage(stage, cfg, facts, gpu, 1)
    return [dataclasses.replace(sft, stage="sft", references=(),
                                prompts=f"{cfg.init.sft_data} ×{cfg.init.epochs} epochs, lr {cfg.init.lr:g}")]


def _plan_generate(stage, cfg: Config, facts: ModelFacts, gpu: float) -> list[StagePlan]:
    prompts, data_problem = _train_prompts(cfg, stage.round)
    gen = _generation_stage("generate", stage, cfg, facts, gpu, prompts)
    return [gen if not data_problem else _with_problem(gen, data_problem)]


def _plan_judge(stage, cfg: Config, facts: ModelFacts, gpu: float) -> list[StagePlan]:
    actors, res = _holders(stage)
    return [_with_judge(StagePlan("judge", stage.role, actors, res, _device(res)), cfg, "judge", facts, gpu)]


def _plan_evaluate(stage, cfg: Config, facts: ModelFacts, gpu: float) -> list[StagePlan]:
    if stage.round == 0:
        return [_generation_stage("eval r0", stage, cfg, facts, gpu, _eval_prompts(cfg))]
    return [_generation_stage("evaluate", stage, cfg, facts, gpu, _eval_prompts(cfg)),
            _eval_judge_stage(cfg, facts, gpu, stage.round)]


_PLANNERS = {"init": _plan_init, "sft": _plan_sft, "generate": _plan_generate, "judge": _plan_judge,
             "preferences": lambda stage, cfg, facts, gpu: [_preferences_stage(stage, cfg)],
             "train": lambda stage, cfg, facts, gpu: [_train_stage(stage, cfg, facts, gpu, stage.round)],
             "evaluate": _plan_evaluate}   # every stage pipelines/graph.py declares (tests/test_plan.py checks)


def _with_problem(s: StagePlan, problem: str) -> StagePlan:
    import dataclasses
    return dataclasses.replace(s, problem="; ".join(p for p in (s.problem, problem) if p))


def _device(res: ActorResources) -> str:
    from selfplay.devices import device_for
    return device_for(res, gpu_count=ANY_GPUS)


def _holders(stage) -> tuple[int, ActorResources]:
    """Who holds the devices: the stage's own actor, or the actors it fans out over (its own then only
    coordinates them and holds nothing)."""
    return (stage.fan.count, stage.fan.each) if stage.fan else (1, stage.resources)


def _short(dtype: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[dtype]


def _init_stage(cfg: Config) -> StagePlan:
    # stages.init_policy loads and saves on the host whatever the actor holds: no GPU memory
    where = "round 0 base (M0)" if cfg.init.sft_data else "round 0"
    return StagePlan("init", "trainer", 1, cfg.resources.trainer, "cpu", memory=Memory(0.0),
                     prompts=f"{where} = {cfg.model.policy}")


def _eval_prompts(cfg: Config) -> str:
    d = cfg.data
    return f"{d.eval_prompts} {d.eval_limit or 'all'} ×{cfg.eval.samples_per_prompt}"


def _train_prompts(cfg: Config, n: int) -> tuple[str, str]:
    """(which prompts round n samples, why it cannot) by selfplay.data's per-round rule."""
    from pathlib import Path

    from selfplay.data import DataError, check_rounds, round_source
    d, per = cfg.data, cfg.data.prompts_per_round
    try:
        src = round_source(d, n)
        if src.startswith("builtin:") or Path(src).exists():   # countable here; hub sets are counted at run time
            check_rounds(cfg, [n])
    except DataError as e:
        return f"no prompts for round {n}", f"generate: {e}"
    if isinstance(d.train_prompts, str):   # a disjoint slice
        return f"{src}[{(n - 1) * per}:{n * per}] ×{cfg.generation.k}", ""
    i = (n - 1) % len(d.train_prompts) + 1
    return f"{src} (source {i}/{len(d.train_prompts)}, first {per}) ×{cfg.generation.k}", ""


def _generation_stage(name: str, stage, cfg: Config, facts: ModelFacts, gpu: float, prompts: str) -> StagePlan:
    """generate, and the sampling half of evaluate: num_engines engines, or the stage actor itself."""
    from selfplay.backends import planned
    from selfplay.memory import MemoryBudgetError, check_generation, generation_limit, generation_weights
    g = cfg.generation
    actors, res = _holders(stage)
    device, problem = _device(res), ""
    if device == "cuda":
        try:
            check_generation(facts, cfg, gpu)
        except MemoryBudgetError as e:
            problem = f"{name}: {e}"
        if planned(g.backend).tensor_parallel and g.tensor_parallel_size > res.num_gpus:
            problem = (f"{name}: generation.tensor_parallel_size={g.tensor_parallel_size} needs that many GPUs per "
                       f"engine; set resources.generation.num_gpus={g.tensor_parallel_size}")
    limit = generation_limit(cfg, gpu) if device == "cuda" else None
    tp = f" tp{g.tensor_parallel_size}" if planned(g.backend).tensor_parallel and g.tensor_parallel_size > 1 else ""
    return StagePlan(name, stage.role, actors, res, device, f"{_short(cfg.model.dtype)} {g.backend}{tp}",
                     Memory(generation_weights(facts, cfg), limit), prompts=prompts, problem=problem)


def _eval_judge_stage(cfg: Config, facts: ModelFacts, gpu: float, n: int) -> StagePlan:
    """pipelines.evaluate: with several engines the eval judge gets its own judge actor, else it runs in
    the generation actor once the engine is closed."""
    from pipelines.evaluate import eval_judge_resources
    res = eval_judge_resources(cfg)
    role = "judge" if cfg.generation.num_engines > 1 else "generation"
    earlier = "round 0" if n == 1 else f"rounds 0-{n - 1}"
    s = StagePlan("eval judge", role, 1, res, _device(res), prompts=f"round {n} vs {earlier}")
    return _with_judge(s, cfg, "eval_judge", facts, gpu)


def _with_judge(s: StagePlan, cfg: Config, where: str, facts: ModelFacts, gpu: float) -> StagePlan:
    """Fill in the judge section `where` (judge | eval_judge): its model, dtype, memory and limit."""
    import dataclasses

    from judges.registry import judge_spec
    from selfplay.memory import TRAINER_SHARE
    j = getattr(cfg, where)
    spec = judge_spec(j.name)
    b = spec.budget(j, facts, s.device, cfg.model.dtype)
    on_gpu = s.device == "cuda" and b.bytes != 0
    limit = TRAINER_SHARE * gpu if on_gpu else None
    problem = ""
    if limit is not None and b.bytes is not None and b.bytes > limit:
        problem = (f"{where}: {j.name} ({b.model}) needs {b.bytes / GIB:.1f} GiB of weights but "
                   f"{TRAINER_SHARE:g} × {gpu / GIB:.0f} GiB = {limit / GIB:.1f} GiB is the limit")
    size = "" if b.parameters in (None, 0) else f" ({_count(b.parameters)})"
    unknown = " (not on disk: unsized)" if b.parameters is None else ""
    dtype = spec.dtype_label(j, s.device, cfg.model.dtype)
    return dataclasses.replace(s, dtype=dtype, memory=Memory(b.bytes, limit), problem=problem,
                               judge=f"{j.name}: {b.model}{size}{unknown}")


def _preferences_stage(stage, cfg: Config) -> StagePlan:
    return StagePlan("preferences", stage.role, 1, stage.resources, _device(stage.resources), memory=Memory(0.0),
                     prompts=f"{cfg.algorithm} pair rule")   # it loads no model


def _train_stage(stage, cfg: Config, facts: ModelFacts, gpu: float, n: int) -> StagePlan:
    from selfplay.memory import TRAINER_SHARE, MemoryBudgetError, check_trainer, separate_references, trainer_budget
    t, problem = cfg.train, ""
    actors, res = _holders(stage)
    device, refs = _device(res), separate_references(cfg, n)
    b = trainer_budget(facts, cfg)
    if device == "cuda" and facts.parameters is None:
        problem = problem or "train: the policy's parameter count is unknown (set model.num_parameters)"
    elif device == "cuda":
        try:
            check_trainer(facts, cfg, gpu, refs)
        except MemoryBudgetError as e:
            problem = problem or str(e)
    memory = Memory(b.peak(refs) if b else None, TRAINER_SHARE * gpu if device == "cuda" else None, b.host if b else 0.0)
    c = _short(cfg.model.dtype)
    dtype = f"{c} base + fp32 LoRA" if t.lora_rank else ("fp32" if c == "fp32" else f"fp32 masters, {c} compute")
    return StagePlan("train", "trainer", actors, res, device, dtype, memory, references=_references(cfg, n),
                     training=_training(cfg, b), problem=problem)


def _references(cfg: Config, n: int) -> tuple[str, ...]:
    from selfplay.algorithms import get_algorithm
    from selfplay.memory import reference_round
    out = []
    for name in get_algorithm(cfg.algorithm).references:
        k = reference_round(name, n)
        out.append(f"{name}=r{k}" + (" (the policy)" if k == n - 1 else ""))
    return tuple(out)


def _training(cfg: Config, b) -> str:
    t = cfg.train
    what = "full FT"
    if t.lora_rank:
        size = "?" if b is None else f"{_count(b.adapters)}{'' if b.adapters_exact else ' est.'}"
        on = "" if t.lora_targets == "all-linear" else f", {'+'.join(t.lora_targets)}"
        what = f"LoRA r{t.lora_rank} ({size}{on})"
    return f"{t.strategy}×{t.workers}, {what}, {t.optimizer}"


def _footer(cfg: Config, facts: ModelFacts, n: int) -> list[str]:
    from selfplay.memory import describe_trainer, separate_references, trainer_budget
    b = trainer_budget(facts, cfg)
    lines = []
    if b is not None and cfg.resources.trainer.num_gpus > 0:   # on the CPU the table's total says enough
        refs = separate_references(cfg, n)
        ref = (f"; scoring a frozen reference (one at a time, before training) adds {b.reference / GIB:.1f}"
               f" ({refs or 'none'} this round)" if b.reference else "")
        host = f"; {b.host / GIB:.1f} GiB host RAM per worker" if b.host else ""
        lines.append(f"train per GPU: {describe_trainer(b, cfg)} GiB{ref}{host}")
    lines.append("not counted: activations (train.batch_size × model.max_length), vLLM's KV cache. Limits: "
                 "trainer/judge 0.9 × GPU, vLLM weights 0.8 × gpu_memory_utilization × GPU")
    return lines


# ---------------------------------------------------------------- rendering

def render(p: Plan) -> str:
    """The plan as ~15 lines: a header, one row per stage, the trainer's breakdown, the verdict."""
    m, c = p.model, p.cfg
    size = "unknown (set model.num_parameters)" if m.parameters is None else f"{_count(m.parameters)} parameters"
    shape = f", {m.num_layers} layers × {m.hidden_size} hidden" if m.num_layers and m.hidden_size else ""
    head = [f"plan {p.config or '(defaults)'}: round {p.round}, {c.algorithm}, run_dir {c.run_dir}",
            f"policy {c.model.policy}: {size}{shape} ({m.source if m.parameters else 'no local checkpoint'})",
            f"GPU assumed: {c.resources.gpu_memory_gb:g} GiB (resources.gpu_memory_gb); memory is per GPU, "
            f"host RAM on cpu"]
    rows = [("stage", "role", "actors×cpu/gpu", "device", "dtype", "memory GiB", "takes")]
    rows += [_row(s) for s in p.stages]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    verdict = ([f"✗ cannot run: {len(p.problems)} problem(s), below"] if p.problems
               else [f"✓ round {p.round} can run as configured"])
    return "\n".join(head + [""] + table + [""] + p.footer + verdict)


def _row(s: StagePlan) -> tuple[str, ...]:
    r = s.resources
    takes = "; ".join(x for x in (s.prompts, s.judge, s.training, ", ".join(s.references)) if x)
    return (s.stage, s.role, f"{s.actors}×{r.num_cpus:g}/{r.num_gpus:g}", s.device, s.dtype, _memory(s.memory), takes)


def _memory(m: Memory) -> str:
    if m.bytes is None:
        return "unknown"
    if m.limit is None:
        return "—" if m.bytes == 0 else f"{_size(m.bytes)} host"
    host = f" +{m.host / GIB:.1f} host" if m.host else ""
    return f"{m.bytes / GIB:.1f}/{m.limit / GIB:.1f} {'✓' if m.fits else '✗'}{host}"


def _count(n: float) -> str:
    """7.24e9 → '7.24B', 2.37e8 → '237M', 756224 → '756k'."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def _size(b: float) -> str:
    return f"{b / GIB:.1f}" if b >= 0.1 * GIB else f"{b / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    import argparse

    from selfplay.config import ConfigError
    from pipelines.config import load_config
    ap = argparse.ArgumentParser(description="What a round would run, where, and whether it fits; loads no model.",
                                 epilog="overrides: key.sub=value ...")
    ap.add_argument("--config", default="configs/arena_sppo.yaml")
    ap.add_argument("--round", type=int, default=1, help="round n (>= 1)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.round < 1:
            raise ConfigError(f"--round must be >= 1 (round 0 is the initial policy), got {args.round}")
        plan = build_plan(cfg, args.round, args.config)
    except (ConfigError, ValueError) as e:   # selfplay.data's DataError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render(plan))
    for problem in plan.problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if plan.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
