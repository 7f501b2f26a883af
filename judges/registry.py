"""The registry of judges, discovered: `judge.name` picks the training judge, `eval_judge.name` the evaluation one.

A module ``judges/<name>.py`` that defines ``JUDGE = JudgeSpec(...)`` is the judge ``<name>``; the other
modules of the package (base, scoring, sizing, ...) are helpers and define no JUDGE. Discovery imports
every module of the package, so a module that fails to import stops it with an error naming the module
(never a judge silently missing). That stays cheap because no judges module imports torch or
transformers when it is imported: the builders do.

A `JudgeSpec` declares everything generic code asks about a judge: its builder, which gets its config
section and a context naming the round's policies (the self-reward and CREAM judges score with the
policy itself) and the device; its checks; its modes; whether it gives absolute scores; whether it
knows the arena's truth; its memory and the dtype `make plan` prints. `check_config` runs every judge
rule of a Config for both sections before any stage, so a value a judge cannot honour is refused up
front, never at build time inside an actor.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

from judges.base import Judge
from judges.spec import JudgeContext, JudgeSpec, actor_device, planned_device  # noqa: F401  (handed on)
from selfplay.arena import ArenaRules

SECTIONS = ("judge", "eval_judge")


# -- discovery -----------------------------------------------------------------------------------------

def discover(package: str = "judges") -> dict[str, JudgeSpec]:
    """{module name: its JUDGE} over every module of `package`; ImportError naming a module that fails."""
    pkg = importlib.import_module(package)
    specs: dict[str, JudgeSpec] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        name = f"{package}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as e:   # any failure: a judge must never go missing without a word
            raise ImportError(f"judge registry: module {name} failed to import: {type(e).__name__}: {e}") from e
        spec = vars(module).get("JUDGE")
        if spec is None:
            continue   # a helper module
        if not isinstance(spec, JudgeSpec):
            raise ImportError(f"judge registry: {name}.JUDGE is a {type(spec).__name__}, not a JudgeSpec")
        specs[info.name] = spec
    return specs


@functools.cache
def judge_specs() -> Mapping[str, JudgeSpec]:
    """The judges package's judges (discovered once per process)."""
    return MappingProxyType(discover("judges"))


def judge_spec(name: str) -> JudgeSpec:
    specs = judge_specs()
    if name not in specs:
        raise ValueError(f"unknown judge {name!r}; choose one of {', '.join(sorted(specs))}")
    return specs[name]


JUDGES: Mapping[str, JudgeSpec] = judge_specs()   # judge modules import judges.spec, never this module


# -- checks -------------------------------------------------------------------------------------------

# Field values every judge section must hold, whichever judge it names: a bogus value is refused even
# where this judge would not read it (and an absent eval_judge: copies judge:, values included).
_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("aggregation", lambda v: v in ("sppo", "pairwise"), "sppo or pairwise"),
    ("consistency", lambda v: v in ("per_prompt", "mean"), "per_prompt or mean"),
    ("score_mode", lambda v: v in ("sample", "logprobs"), "sample or logprobs"),
    ("samples", lambda v: v >= 1, "must be >= 1"),
    ("max_new_tokens", lambda v: v >= 0, "must be >= 0 (0 = the judge's default)"),
    ("temperature", lambda v: 0 < v <= 10, "must be in (0, 10]"),    # NaN fails too
    ("top_p", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("timeout_s", lambda v: v > 0, "must be positive"),
    ("mode", lambda v: v in ("pairwise", "rubric"), "pairwise or rubric"),
    ("dtype", lambda v: v in ("auto", "float32", "bfloat16", "float16", "int8"),
     "auto, float32, bfloat16, float16 or int8"),
    ("prompt_format", lambda v: v in ("raw", "chat"), "raw or chat"),
)


def check_judge_config(cfg, where: str = "judge") -> None:
    """Raise ValueError naming `where`.<key> for the first value of the section the named judge cannot honour."""
    specs = judge_specs()
    spec = specs.get(cfg.name)   # an unknown name is check_config's to report
    problems = [f"{key}: {rule}, got {getattr(cfg, key)!r}" for key, ok, rule in _FIELDS if not ok(getattr(cfg, key))]
    if spec and cfg.mode not in spec.modes:
        problems.append(f"mode: the {cfg.name} judge has no {cfg.mode!r} mode (it has {', '.join(spec.modes)})")
    problems += list(spec.check(cfg)) if spec else []
    if spec and cfg.dtype != "auto" and not spec.reads_dtype:
        readers = sorted(n for n, s in specs.items() if s.reads_dtype)
        problems.append(f"dtype: the {cfg.name} judge does not read it (only {', '.join(readers)} "
                        f"{'does' if len(readers) == 1 else 'do'}); remove it")
    for key in sorted({k for s in specs.values() for k in s.reads} - set(spec.reads if spec else ())):
        if spec and getattr(cfg, key) != getattr(type(cfg)(), key):
            readers = sorted(n for n, s in specs.items() if key in s.reads)
            problems.append(f"{key}: the {cfg.name} judge does not read it (only {', '.join(readers)} "
                            f"{'does' if len(readers) == 1 else 'do'}); remove it")
    if problems:
        raise ValueError(f"{where}.{problems[0]}")


def check_config(cfg) -> None:
    """Every judge rule of a Config, both sections: ValueError "judge.<key>: ..." / "eval_judge.<key>: ..."
    (or "arena: ...") for the first problem. The name, backend, batch_size and num_actors, then the
    section's values (check_judge_config), then the judge's rules across sections, then the arena."""
    from selfplay.generation import BACKENDS

    specs = judge_specs()
    for where in SECTIONS:
        j = getattr(cfg, where)
        if j.name not in specs:
            raise ValueError(f"{where}.name: unknown {j.name!r} (choose one of {', '.join(sorted(specs))})")
        if j.backend not in BACKENDS:
            raise ValueError(f"{where}.backend: unknown {j.backend!r} (choose one of {', '.join(sorted(BACKENDS))})")
        if j.batch_size < 1:
            raise ValueError(f"{where}.batch_size: must be >= 1, got {j.batch_size}")
        if j.num_actors < 1:
            raise ValueError(f"{where}.num_actors: at least 1, got {j.num_actors}")
        check_judge_config(j, where)
        problem = next(iter(specs[j.name].cross_check(cfg, where)), None)
        if problem is not None:
            raise ValueError(f"{where}.{problem}")
    if not uses_arena(cfg) and cfg.arena != ArenaRules():
        raise ValueError("arena: set, but nothing in this config plays the arena (no oracle judge and "
                         "data.eval_prompts is not builtin:arena/...); remove it")


def uses_arena(cfg) -> bool:
    """Whether this config plays the arena's game: a judge that knows the arena's truth judges or
    evaluates (JudgeSpec.plays_arena), or the eval prompts are the arena's."""
    specs = judge_specs()
    return (any(j.name in specs and specs[j.name].plays_arena for j in (cfg.judge, cfg.eval_judge))
            or cfg.data.eval_prompts.startswith("builtin:arena"))


def judge_scores(cfg) -> bool:
    """Whether the judge this section names gives absolute per-response scores (JudgeSpec.scores)."""
    spec = judge_specs().get(cfg.name)
    return bool(spec and spec.scores(cfg))


# -- building ------------------------------------------------------------------------------------------

def build_judge(name: str, cfg, ctx: JudgeContext = JudgeContext()) -> Judge:
    """The judge `name` from its config section; the caller closes it (or use `opened`)."""
    return judge_spec(name).build(cfg, ctx)


@contextmanager
def opened(name: str, cfg, ctx: JudgeContext = JudgeContext()) -> Iterator[Judge]:
    """The judge `name` for the length of a with block, closed after it, also when the block fails."""
    judge = build_judge(name, cfg, ctx)
    try:
        yield judge
    finally:
        judge.close()
