"""Ray wiring: each stage runs in its own actor with the resources the config gives its role.

The actor is a thin shell around a plain function from pipelines/stages.py. It is killed when
its stage ends, so on a single GPU generation, judging and training take turns and each frees
its memory before the next starts.
"""
from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator

# Set before Ray is imported: without it Ray binds every listener to all interfaces.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # else in-process Ray writes a token under ~/.ray

import ray  # noqa: E402


class StageActor:
    """Runs one stage function; reports the peak memory it saw (RSS, and GPU where present).

    With a `log_file`, everything the stage prints goes there (see selfplay/progress.to_log); the
    fds are restored when the stage ends, though the actor itself ends with the stage anyway."""

    def run(self, fn: Callable, args: tuple, kwargs: dict, log_file: str | None = None) -> tuple[Any, dict]:
        from selfplay.progress import stage_logging, to_log

        with to_log(log_file), stage_logging():
            return self._run(fn, args, kwargs)

    @staticmethod
    def _run(fn: Callable, args: tuple, kwargs: dict) -> tuple[Any, dict]:
        import resource

        import torch
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        result = fn(*args, **kwargs)
        mem = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if torch.cuda.is_available():
            mem["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return result, mem


@contextmanager
def ray_session(max_cpus_needed: float = 1, verbose: bool = False) -> Iterator[None]:
    """Join RAY_ADDRESS (or an already-initialised Ray) if there is one, else start Ray locally.

    Unless verbose, Ray neither echoes the workers' output (the stages write it to their logs) nor
    announces itself."""
    if ray.is_initialized():
        yield
        return
    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **quiet)
    else:
        tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # AF_UNIX paths must stay < 108 bytes
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, int(max_cpus_needed + 0.999)),
                 include_dashboard=False, _temp_dir=tmp, runtime_env={"env_vars": _worker_env()}, **quiet)
    try:
        yield
    finally:
        ray.shutdown()


def _worker_env() -> dict[str, str]:
    keep = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "SELFPLAY_ASSETS",
            "TOKENIZERS_PARALLELISM", "VLLM_CACHE_ROOT", "LD_PRELOAD", "WANDB_MODE")
    return {k: os.environ[k] for k in keep if k in os.environ}


def run_in_actor(role: str, resources, fn: Callable, *args, log_file: str | None = None, **kwargs) -> tuple[Any, dict]:
    """Start a `role` actor with `resources` (ActorResources), run `fn` in it, end the actor.
    `log_file`: where the actor's output goes (None: Ray's own worker logs, streamed under -v)."""
    opts = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if os.environ.get("OMP_NUM_THREADS") is None:
        # Ray would pin torch to num_cpus threads; the actor owns those cores, so say so explicitly.
        opts["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": str(max(1, int(resources.num_cpus)))}}
    actor = ray.remote(**opts)(StageActor).options(name=None).remote()
    try:
        return ray.get(actor.run.remote(fn, args, kwargs, log_file))
    finally:
        ray.kill(actor)


def map_in_actors(role: str, resources, fn: Callable, calls: list[tuple], timeout_s: float = 600, *,
                  log_file: str | None = None) -> list[Any]:
    """Run fn(*args) for each args in `calls`, each in its own `role` actor, concurrently; results in order.

    Data parallelism for a stage: the caller (a coordinator actor holding no resources) fans its
    shards out. The actors are gang-scheduled in one placement group (one bundle of `resources`
    each, spread over nodes where possible), so either all engines start or the stage says which
    resources the cluster lacks, instead of half the engines waiting forever.

    Actor i writes to part_log(log_file, i) (generate.log -> generate.0.log, ...); by default
    log_file is the calling stage's own log, so a stage's fan-out lands next to it.
    """
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from selfplay.progress import STAGE_LOG, part_log

    opts = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if os.environ.get("OMP_NUM_THREADS") is None:
        opts["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": str(max(1, int(resources.num_cpus)))}}
    bundle = {k: v for k, v in (("CPU", resources.num_cpus), ("GPU", resources.num_gpus)) if v > 0}
    pg = placement_group([bundle] * len(calls), strategy="SPREAD") if bundle else None
    if pg is not None and not pg.wait(timeout_seconds=timeout_s):
        remove_placement_group(pg)
        raise RuntimeError(f"{role}: the cluster cannot place {len(calls)} actors of {bundle} each within "
                           f"{timeout_s:.0f}s; lower generation.num_engines or add nodes")
    actors = []
    try:
        for i in range(len(calls)):
            strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i) if pg else "DEFAULT"
            actors.append(ray.remote(**opts)(StageActor).options(scheduling_strategy=strategy).remote())
        log_file = log_file or os.environ.get(STAGE_LOG)
        logs = [part_log(log_file, i) if log_file else None for i in range(len(calls))]
        return [r for r, _ in ray.get([a.run.remote(fn, args, {}, lg) for a, args, lg in zip(actors, calls, logs)])]
    finally:
        for a in actors:
            ray.kill(a)
        if pg is not None:
            remove_placement_group(pg)
