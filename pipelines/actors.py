"""Ray wiring: each stage runs in an actor with the resources the config gives its role.

The actor is a thin shell around a plain function from pipelines/stages.py. Starting one costs about
2 s, and importing torch, datasets and transformers in it most of another: on a CPU round of half a
minute that was half the wall time. So an actor that holds no GPU stays warm: the next stage asking
for the same resources (cores, GPUs, runtime env) runs in the same process, without a new start or
new imports; trivial stages (preferences) then take no new process either. At most one actor is warm
at a time (see _checkout for why), and it ends with the Ray session (ray_session), when it dies, when
its stage fails or is interrupted, or when a stage asks for other resources.

An actor holding a GPU is still killed when its stage ends, so on a single GPU generation, judging
and training take turns and each frees its memory before the next starts.

The warm actor and the wait in progress belong to the driver's Ray session: an `Actors` object, which
pipelines/ray_session.py yields and the round's stage runner holds.

SELFPLAY_WARM_ACTORS=0 in the driver's environment turns the warm actor off (every stage in a new
actor, killed after it), for benchmarks that compare the two (scripts/bench_round.py).
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pipelines.ray_env  # noqa: F401  (before ray: loopback only)
import ray  # noqa: E402

log = logging.getLogger("selfplay")


class StageActor:
    """Runs stage functions, one at a time; reports the peak memory each saw (RSS, and GPU where present).

    With a `log_file`, everything the stage prints goes there (see selfplay/progress.to_log); the
    fds are restored when the stage ends, so a warm actor's next stage writes to its own log only. The
    libraries' bars, which to_log turns off, stay off: a warm actor serves one session, whose stages all
    log to files or (-v) all stream."""

    def run(self, fn: Callable, args: tuple, kwargs: dict, log_file: str | None = None,
            threads: int = 0) -> tuple[Any, dict]:
        from selfplay.progress import stage_logging, to_log

        try:
            with to_log(log_file), stage_logging():
                try:
                    return self._run(fn, args, kwargs, threads)
                finally:
                    _flush_c_stdio()
        finally:
            _release_memory()

    @staticmethod
    def _run(fn: Callable, args: tuple, kwargs: dict, threads: int = 0) -> tuple[Any, dict]:
        import torch
        if threads > 0:   # torch's pools sized to the actor's cores: more threads than cores run many times slower
            torch.set_num_threads(threads)
            with suppress(RuntimeError):   # only settable before the first inter-op task (a reused actor)
                torch.set_num_interop_threads(threads)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        own_peak = _reset_peak_rss()
        result = fn(*args, **kwargs)
        mem = {"peak_rss_mb": _peak_rss_mb(own_peak)}
        if torch.cuda.is_available():
            mem["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return result, mem


def _reset_peak_rss() -> bool:
    """Start this stage's peak RSS at the current RSS (Linux: "5" to clear_refs resets VmHWM), since a warm
    actor's lifetime peak may be an earlier stage's. False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb(own_peak: bool) -> float:
    """The stage's peak RSS (VmHWM since _reset_peak_rss), else the process's lifetime peak (ru_maxrss)."""
    import resource
    if own_peak:
        with suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024   # in kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # kB on Linux


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers while the stage's log is still fds 1 and 2: output a C library buffered during
    this stage would otherwise be written later, into the next stage's log."""
    with suppress(Exception):
        import ctypes
        ctypes.CDLL(None).fflush(None)


def _release_memory() -> None:
    """Free the finished stage's objects (models, datasets) before a warm actor's next stage, and hand the
    freed heap back to the system: glibc keeps it otherwise, and the next stage's RSS would carry it."""
    import gc
    gc.collect()
    with suppress(Exception):   # not glibc (macOS, musl): nothing to trim
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Unschedulable(RuntimeError):
    """An actor asks for more than the whole cluster has: it would wait forever."""


def check_fits(role: str, resources, count: int = 1) -> None:
    """Refuse at once what the local cluster can never give (e.g. num_gpus=1 on a machine without a GPU),
    instead of an actor that waits for it silently. A RAY_ADDRESS cluster may grow (an autoscaler adds
    nodes on demand), so there only the stall report (run_in_actor) speaks."""
    if os.environ.get("RAY_ADDRESS"):
        return
    have = ray.cluster_resources()
    for key, name in (("CPU", "num_cpus"), ("GPU", "num_gpus")):
        each = getattr(resources, name)
        if each * count > have.get(key, 0) + 1e-9:
            many = f" for each of {count} actors" if count > 1 else ""
            raise Unschedulable(f"resources.{role}.{name}={each:g}{many} asks for {each * count:g} {key}, but the "
                                f"Ray cluster has {have.get(key, 0):g} (CPU {have.get('CPU', 0):g}, GPU "
                                f"{have.get('GPU', 0):g}); lower resources.{role}.{name}"
                                + (" or run on a machine with a GPU" if key == "GPU" else ""))


def torch_threads(resources) -> int:
    """Threads for torch in an actor holding resources.num_cpus cores (at least 1); an OMP_NUM_THREADS the
    user exported wins, as it does for the actor's environment."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else max(1, int(resources.num_cpus))


def actor_options(resources) -> dict:
    """ray.remote options of a stage actor holding `resources`."""
    opts = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if os.environ.get("OMP_NUM_THREADS") is None:
        # Ray would pin torch to num_cpus threads; the actor owns those cores, so say so explicitly.
        opts["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": str(max(1, int(resources.num_cpus)))}}
    return opts


WARM_ACTORS = "SELFPLAY_WARM_ACTORS"   # "0": no warm actor, every stage in a new one (benchmarks)


def pool_key(opts: dict) -> str | None:
    """What a warm actor must have been started with to run a stage asking for `opts` (its resources and
    runtime env); None when the stage's actor must not stay warm: one holding a GPU frees it for the next
    stage by ending, and SELFPLAY_WARM_ACTORS=0 turns warm actors off."""
    if opts["num_gpus"] > 0 or os.environ.get(WARM_ACTORS, "1") == "0":
        return None
    return json.dumps(opts, sort_keys=True)


@dataclass
class _Warm:
    """The warm actor, the pool key it was started with, and the Ray session (and job) it lives in."""
    actor: Any
    key: str
    session: str


class Actors:
    """The stage actors of one driver's Ray session: the warm actor (at most one), and the stage wait in
    progress, which a signal handler asks to stop (stop_waiting). A class because both are state that lives
    as long as the session and is shared by the driver's stages and its signal handler."""

    def __init__(self) -> None:
        self.warm: _Warm | None = None
        self._waiting = False
        self._stop: BaseException | None = None

    def run_in_actor(self, role: str, resources, fn: Callable, *args, log_file: str | None = None,
                     stall_s: float = 0, on_stall: Callable[[float], None] | None = None, **kwargs) -> tuple[Any, dict]:
        """Run `fn` in a `role` actor with `resources` (ActorResources): the warm actor where it fits (see the
        module docstring), else a new one, killed after the stage.
        `log_file`: where the actor's output goes (None: Ray's own worker logs, streamed under -v).
        on_stall(seconds) is called when the stage's logs have not grown for stall_s seconds (0: never),
        and again after each further stall_s without progress."""
        check_fits(role, resources)
        actor, warm = self._checkout(actor_options(resources))
        try:
            result = self._wait(actor.run.remote(fn, args, kwargs, log_file, torch_threads(resources)), log_file,
                                stall_s, on_stall)
        except BaseException:
            # Died: the stage's retry needs a new actor. Interrupted: a half-run stage must not run on in a warm
            # actor. Failed: what the failure left in the process is not worth keeping; the round stops anyway.
            self._end(actor)
            raise
        if not warm:
            self._end(actor)
        return result

    def _checkout(self, opts: dict) -> tuple[Any, bool]:
        """(an actor started with `opts`, whether it is the warm one, to be kept after its stage).

        At most one actor is warm, whatever its shape: an idle one holds its cores and memory, which the next
        stage, or the actors that stage starts (engines, judge actors, Ray Train workers), may need; on a machine
        where they do, that stage would wait forever. Only the driver keeps one: a warm actor started by a stage
        would outlive that stage, inside an actor that itself may stay warm."""
        in_driver = ray.get_runtime_context().worker.mode == ray.SCRIPT_MODE
        key = pool_key(opts) if in_driver else None
        session = _session()
        if self.warm is not None and self.warm.session != session:
            self.warm = None   # its Ray session (or this driver's connection to it) has ended, and the actor with it
        if self.warm is not None and (self.warm.key != key or not self._alive(self.warm.actor)):
            self.end_warm()
        if key is None:
            return _start(opts), False
        if self.warm is None:
            self.warm = _Warm(_start(opts), key, session)
        return self.warm.actor, True

    def _alive(self, actor) -> bool:
        """Whether an idle warm actor still answers: one killed between stages (the OOM killer) is replaced before
        the stage starts, instead of failing the stage and spending one of its retries."""
        from ray.exceptions import RayActorError
        try:   # through _wait, so that a signal meanwhile is raised outside Ray's C code
            self._wait(actor.__ray_ready__.remote(), None, 0, None)
            return True
        except RayActorError:
            return False

    def _end(self, actor) -> None:
        """Kill a stage's actor; the warm one is forgotten first, so no later stage is given it."""
        if self.warm is not None and self.warm.actor is actor:
            self.warm = None
        ray.kill(actor)

    def end_warm(self) -> None:
        """Kill the warm actor, if there is one (the session does on every exit path, before Ray shuts down)."""
        warm, self.warm = self.warm, None
        if warm is not None and ray.is_initialized():
            with suppress(Exception):   # already dead, or a session that has ended: nothing left to kill
                ray.kill(warm.actor)

    # A signal handler that raises while the driver is inside Ray's C code (ray.wait) gets its exception
    # turned into a SystemError there; so the round's handler hands the exception to stop_waiting, and the
    # wait loop below raises it from Python at its next poll.

    def stop_waiting(self, exc: BaseException) -> bool:
        """From a signal handler: True when a stage wait is in progress and will raise `exc` within POLL_S
        (the handler must then return normally); False when the handler may raise it itself."""
        if self._waiting:
            self._stop = exc
        return self._waiting

    def _wait(self, ref, log_file: str | None, stall_s: float, on_stall: Callable[[float], None] | None):
        """ray.get(ref), polling: for an interrupt (stop_waiting) and, with stall_s > 0, for progress in the
        stage's logs."""
        watch = stall_s > 0 and on_stall is not None and log_file is not None
        seen, since = (_logged_bytes(log_file) if watch else 0), time.monotonic()
        self._waiting = True
        try:
            while not ray.wait([ref], timeout=POLL_S)[0]:
                self._raise_stop()
                if not watch:
                    continue
                now, size = time.monotonic(), _logged_bytes(log_file)
                if size != seen:
                    seen, since = size, now
                elif now - since >= stall_s:
                    on_stall(now - since)
                    since = now
        finally:
            self._waiting = False
        # A signal handled during the last poll, as the stage finished, still stops the run (a stage of a warm
        # actor can be that short); from here on the handler raises it itself.
        self._raise_stop()
        return ray.get(ref)

    def _raise_stop(self) -> None:
        if self._stop is not None:
            exc, self._stop = self._stop, None
            raise exc


POLL_S = 0.5


def _start(opts: dict):
    return ray.remote(**opts)(StageActor).options(name=None).remote()


def _session() -> str:
    ctx = ray.get_runtime_context()
    return f"{ctx.get_session_name()}/{ctx.get_job_id()}"


def _logged_bytes(log_file: str) -> int:
    """Bytes written so far to a stage's log and to its parts' (train.log, train.0.log, ...)."""
    p = Path(log_file)
    files = [p, *p.parent.glob(f"{p.stem}.*{p.suffix}")]
    return sum(f.stat().st_size for f in files if f.exists())


def map_in_actors(role: str, resources, fn: Callable, calls: list[tuple], timeout_s: float = 600, *,
                  log_file: str | None = None, retries: int = 1) -> list[Any]:
    """Run fn(*args) for each args in `calls`, each in its own `role` actor, concurrently; results in order.

    Data parallelism for a stage: the caller (a coordinator actor holding no resources) fans its
    shards out. The actors are gang-scheduled in one placement group (one bundle of `resources`
    each, spread over nodes where possible), so either all engines start or the stage says which
    resources the cluster lacks, instead of half the engines waiting forever.

    Actor i writes to part_log(log_file, i) (generate.log -> generate.0.log, ...); by default
    log_file is the calling stage's own log, so a stage's fan-out lands next to it.

    An actor that dies (its process killed, as the OOM killer does) is replaced in its bundle and reruns
    its own shard only, up to `retries` times (resources.stage_retries); the other shards' results stand.
    A shard whose actor died every time fails the call, naming the shard.

    These actors never stay warm (run_in_actor's do): their placement group reserves the cores and GPUs
    of all of them, and keeping it between stages would hold those from the next stage (on one GPU,
    generation, judging and training take turns); and they are started by a stage's coordinator actor,
    which may itself stay warm, so they would outlive their stage unseen by the driver.
    """
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from selfplay.progress import STAGE_LOG, part_log

    check_fits(role, resources, len(calls))
    opts = actor_options(resources)
    bundle = {k: v for k, v in (("CPU", resources.num_cpus), ("GPU", resources.num_gpus)) if v > 0}
    pg = placement_group([bundle] * len(calls), strategy="SPREAD") if bundle else None
    if pg is not None and not pg.wait(timeout_seconds=timeout_s):
        remove_placement_group(pg)
        raise RuntimeError(f"{role}: the cluster cannot place {len(calls)} actors of {bundle} each within "
                           f"{timeout_s:.0f}s; lower generation.num_engines or add nodes")
    log_file = log_file or os.environ.get(STAGE_LOG)
    threads = torch_threads(resources)
    actors: list = []

    def start(i: int):   # shard i's actor, in bundle i; its call's ref
        strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i) if pg else "DEFAULT"
        actors.append(ray.remote(**opts)(StageActor).options(scheduling_strategy=strategy).remote())
        return actors[-1].run.remote(fn, calls[i], {}, part_log(log_file, i) if log_file else None, threads)

    try:
        return _gather_shards(role, start, len(calls), retries)
    finally:
        for a in actors:
            ray.kill(a)
        if pg is not None:
            remove_placement_group(pg)


def _gather_shards(role: str, start: Callable[[int], Any], n: int, retries: int) -> list[Any]:
    """Each shard's result, in order, as its call ends; a shard whose actor died is started again alone."""
    from ray.exceptions import RayActorError

    pending = {start(i): i for i in range(n)}
    results: list[Any] = [None] * n
    attempts = [1] * n
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ref)
        try:
            results[i] = ray.get(ref)[0]
        except RayActorError as e:
            said = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            if attempts[i] > retries:
                raise RuntimeError(f"{role} shard {i + 1} of {n}: its actor died in each of {attempts[i]} attempt(s); "
                                   "its process was killed, most often by the out-of-memory killer (see `dmesg`). "
                                   f"Ray said: {said}") from None
            attempts[i] += 1
            log.warning("%s shard %d of %d: its actor died (%s); running this shard again (attempt %d of %d)",
                        role, i + 1, n, said, attempts[i], retries + 1)
            pending[start(i)] = i
    return results
