"""The cheap stand-ins scripts/bench_scale.py puts where the model compute would be, so that only the pipeline's
own code is measured at paper volume. Nothing here is part of the product: the benchmark installs it in its
own driver and, through `StageWork` and `Shard`, in every stage actor it starts (this module is pickled by
value, so the actors need not import it), and takes it out again when the stage ends.

* Generation: the backend `bench_synth`, registered in the registry's own dicts (selfplay.backends), so
  the real path runs unchanged (generate -> sample_checkpoint -> build_backend -> Backend.generate). It
  answers each request with K responses of arena words, lengths drawn from a log-normal with a mean of
  about 500 tokens, cut at max_new_tokens (2,048: those come back unfinished), seeded by the request.
* Judging: the oracle judge with its two per-response computations (compare, score) replaced by a crc32 of
  the response: the arena's rules read every word, ~2.5 ms for a 500-word answer, which would be the
  whole judge stage; a judge's per-pair cost is the model's, not ours. The stage's own machinery
  (grouping, plans, batched calls, matrices, lengths, records, writes) runs as it is.
* Training: reference scoring runs sequence_logprobs whole (tokenising, length groups, padding) except the
  model's forward (`selfplay.logprobs._group_logprobs`, zeros instead); the update takes its first batch
  for real (forward, backward, optimizer step) and skips the rest of its steps; the checkpoint is saved.
"""
from __future__ import annotations

import contextlib
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from selfplay.arena import AUDIENCES, FILLER, STYLES, TEMPLATES, TOPICS

BACKEND_NAME = "bench_synth"
WORDS = [*(w for ws in TOPICS.values() for w in ws), *(w for ws in STYLES.values() for w in ws), *FILLER]
LOG_SIGMA = 0.6                     # log-normal lengths: ~0.4% of them reach 2,048 at a mean of 500


# ------------------------------------------------------------------------------------------- data

def synth_prompts(n: int, tag: str, seed: int = 0) -> list[dict]:
    """n arena prompts (a topic each, so the oracle's rules apply) lengthened to an AlpacaEval instruction's
    ~40 words with a sentence of arena words."""
    rng = np.random.default_rng(seed)
    topics = sorted(TOPICS)
    rows = []
    for i in range(n):
        head = TEMPLATES[i % len(TEMPLATES)].format(topic=topics[i % len(topics)],
                                                   audience=AUDIENCES[(i // 7) % len(AUDIENCES)])
        tail = " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), 32))
        rows.append({"prompt_id": f"{tag}{i:06d}", "prompt": f"{head} Mention {tail}."})
    return rows


def response_lengths(rng: np.random.Generator, n: int, mean: float, cap: int) -> np.ndarray:
    """n lengths from a log-normal of the given mean, at least 1, cut at `cap`."""
    mu = np.log(mean) - LOG_SIGMA ** 2 / 2
    return np.clip(rng.lognormal(mu, LOG_SIGMA, n).astype(np.int64), 1, cap)


class SynthBackend:
    """A generation backend that loads no model: K seeded responses of arena words per request."""

    mean_tokens = 500.0   # set by the benchmark (--mean-tokens) before the module is pickled

    def __init__(self, path: str, **settings) -> None:
        pass

    def generate(self, requests, spec):
        from selfplay.sampling import Completion
        out = []
        for r in requests:
            rng = np.random.default_rng(r.seed)
            drawn = response_lengths(rng, spec.n, self.mean_tokens, 1 << 30)
            lengths = np.minimum(drawn, spec.max_new_tokens)
            idx = rng.integers(0, len(WORDS), int(lengths.sum())).tolist()
            ends = np.cumsum(lengths).tolist()
            starts = [0, *ends[:-1]]
            out.append([Completion(" ".join(map(WORDS.__getitem__, idx[a:b])), b - a, bool(d <= spec.max_new_tokens))
                        for a, b, d in zip(starts, ends, drawn.tolist())])
        return out

    def close(self) -> None:
        pass


def install_backend() -> bool:
    """Register `bench_synth` in this process's backend registry (the driver's config check reads it too);
    whether it was not there yet."""
    from selfplay import backends
    from selfplay.sampling import BackendSpec
    new = BACKEND_NAME not in backends.BACKENDS
    spec = BackendSpec(build=SynthBackend, usable=lambda: True, preference=-1)
    backends._FOUND[BACKEND_NAME] = spec
    backends.BACKENDS[BACKEND_NAME] = spec
    return new


def remove_backend() -> None:
    from selfplay import backends
    backends._FOUND.pop(BACKEND_NAME, None)
    backends.BACKENDS.pop(BACKEND_NAME, None)


# ------------------------------------------------------------------------------------------- judging

def _quality(texts) -> np.ndarray:
    return np.array([zlib.crc32(t.encode()) % 1000 / 100.0 for t in texts], dtype=np.float64)


def _cheap_compare(self, prompts, a, b) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(_quality(b) - _quality(a)))


def _cheap_score(self, prompts, responses) -> np.ndarray:
    return _quality(responses)


# ------------------------------------------------------------------------------------------- training

def _no_forward(model, ids, attention, response, chunked: bool):
    """_group_logprobs without the model: zero log-probs, the real response-token counts."""
    import torch
    counts = response[:, 1:].bool().sum(1).float()
    return torch.zeros(len(ids), dtype=torch.float32, device=ids.device), counts


def _first_batch_only(run_epochs: Callable) -> Callable:
    """The trainer's epoch loop as it is, with every step after the first answering the first step's loss."""
    def loop(n_pairs, cfg, rng, result, step, **kw):
        first: list[float] = []

        def once(batch):
            if not first:
                first.append(step(batch))
            return first[0]
        return run_epochs(n_pairs, cfg, rng, result, once, **kw)
    return loop


def _references_without_forward(references: Callable) -> Callable:
    def scored(self, pairs):
        import selfplay.logprobs as lp
        real, lp._group_logprobs = lp._group_logprobs, _no_forward
        try:
            return references(self, pairs)
        finally:
            lp._group_logprobs = real
    return scored


@contextlib.contextmanager
def standins():
    """All stand-ins in this process for the block (a warm actor's next stage starts without them)."""
    import judges.oracle as oracle
    import selfplay.worker as worker
    installed = install_backend()
    saved = [(oracle.OracleJudge, "compare", _cheap_compare), (oracle.OracleJudge, "score", _cheap_score),
             (worker, "run_epochs", _first_batch_only(worker.run_epochs)),
             (worker.Worker, "references", _references_without_forward(worker.Worker.references))]
    old = [(obj, name, getattr(obj, name)) for obj, name, _ in saved]
    for obj, name, new in saved:
        setattr(obj, name, new)
    try:
        yield
    finally:
        for obj, name, value in old:
            setattr(obj, name, value)
        if installed:
            remove_backend()


# ------------------------------------------------------------------------------------------- measuring

def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (VmRSS) or its peak since the stage began (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def preload() -> None:
    """Import what the stages import, so that an actor's RSS when its work begins (the baseline of `grew`)
    holds the libraries and what grows after it is the stage's data and working memory."""
    import datasets  # noqa: F401
    import transformers  # noqa: F401

    import judges.registry  # noqa: F401
    import pipelines.evaluate  # noqa: F401
    import selfplay.worker  # noqa: F401


@dataclass(frozen=True)
class Shard:
    """A fanned-out shard's function with the stand-ins, reporting its actor's memory and time."""
    fn: Callable

    def __call__(self, *args):
        preload()
        start, t0, cpu = rss_mb(), time.time(), time.process_time()
        with standins():
            out = self.fn(*args)
        return out, {"start_mb": start, "peak_mb": rss_mb("VmHWM"), "seconds": time.time() - t0,
                     "cpu_s": time.process_time() - cpu}


@dataclass(frozen=True)
class StageWork:
    """A stage's work run with the stand-ins, in its actor; adds to its diagnostics (the manifest's extra)
    the actor's RSS when the work began, the work's own seconds, its CPU seconds and its fan-out shards'
    (CPU time: on a shared machine the wall time of the same work varies several-fold with the load)."""
    work: Callable

    def __call__(self, job) -> dict:
        preload()
        start, t0, cpu = rss_mb(), time.time(), time.process_time()
        shards: list[dict] = []

        def fan_out(role, resources, fn, calls):
            results = job.fan_out(role, resources, Shard(fn), calls)
            shards.extend(mem for _, mem in results)
            return [r for r, _ in results]

        with standins():
            info = self.work(replace(job, fan_out=fan_out))
        return {**info, "bench_start_mb": start, "bench_work_s": time.time() - t0, "bench_shards": shards,
                "bench_cpu_s": time.process_time() - cpu + sum(s["cpu_s"] for s in shards)}
