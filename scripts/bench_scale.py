"""Every stage's own code at paper volume on a CPU: SPPO's 20,000 prompts x K = 5 responses of AlpacaEval length.

    python scripts/bench_scale.py --sizes 2000,20000 --check   # make bench-scale: paper volume, ~5 min on 2 idle cores
    python scripts/bench_scale.py                         # 200 and 2,000 prompts: make bench's short run
    python scripts/bench_scale.py --sizes 50,100 --eval-prompts 20 --mean-tokens 50   # the test's smoke run

What runs. For each size N, in a fresh run dir, round 1 of configs/arena_sppo.yaml (round 0 first) exactly as
`make iterate` runs it: the preflight, then pipelines.round.run_rounds with the real StageRunner in a Ray session
of the benchmark's own, every stage in a real Ray actor, its artifact written, hashed and committed, inputs
verified, the dashboard refreshed. Overrides: data.prompts_per_round=N synthesized arena prompts (~40 words),
eval on --eval-prompts (805, AlpacaEval's count) with eval.samples_per_prompt=2, generation.k=5,
max_new_tokens=2048, model.max_length=2560, generation.num_engines and judge.num_actors = --fan (2: the paper
configs fan out over engines, so responses cross Ray as they would), wandb disabled. The policy is a random
one-layer Qwen2 with the arena's tokenizer and 4,096 positions (built in the work dir, in a second).

What is replaced (scripts/scale_standins.py, installed inside each actor by wrapping the stage's work):
generation answers from a synthesized-response backend (registered for the benchmark only: a product
`replay` backend would need a config key naming its file, hashed into the generate stage's key, which is
a config change of its own); the oracle judge's per-response rule is a crc32 of the text (the arena's word
rules cost ~2.5 ms a 500-word answer, which is model time, not ours); reference scoring skips only the
model's forward; the update takes its first batch for real and skips the other steps. So measured: prompt
loading and length checks, Ray transfers of prompts and responses, every datasets write and read, the judge
stage's plans, batching, matrices and records, the pair rule, the trainer's data path (pairs, tokenising every
pair, length groups, padding, one optimizer step, the checkpoint), and the evaluation (win rates with their
bootstrap, length control and its bootstrap, exploitability with the arena's real rules, metrics, export).
Not measured: model time (sampling, judge models, forwards), Ray Train workers (train.workers=1), wandb
(disabled; it logs per step and per round, not per response).

Every stage runs in an actor of its own (SELFPLAY_WARM_ACTORS=0): a warm actor would carry the previous stage's
freed heap into the next stage, whose growth would then be hidden in memory it reuses.

Reported per size and stage: `wall` (the driver's view, actor start included: the manifest's seconds) and
`work` (inside the actor), and `cpu`, the CPU seconds of the stage's actor and its shards (for the driver's rows,
the driver's); the stage actor's peak RSS (`peak`) and its growth during the stage (`grew`, peak
minus the RSS when the work began, libraries imported); the fan-out actors' largest peak and growth (`shard`,
`shard grew`); `data`, the largest dataset the stage reads or writes (its files on disk; checkpoints do not
count); the driver's peak RSS during the stage. Then per stage, the large size over the small one: CPU and wall
time, peaks, and `copies`, how much an actor's memory grows per byte of data: (grew_large - grew_small) /
(data_large - data_small), the larger of the stage actor's and its shards'. The difference takes out what does
not grow with the data (the model, a batch's activations, buffers). Goals, each PASS or MISS:
  time     every stage's CPU time grows at most 1.1 x the size ratio (11x from 2,000 to 20,000). CPU time, not
           wall time: on a machine shared with other work the wall time of the same stage varies several-fold
           (measured: 0.6 s and 0.9 s for one stage in two runs, 4.3 s and 11.4 s for its tenfold size);
  driver   the driver's peak RSS stays under 2 GiB at the largest size;
  copies   no actor holds more than one copy of the data it handles: copies <= COPIES_LIMIT. One copy as Python
           objects costs more than its bytes on disk (a str ~50 bytes more, a row's dict and lists some
           hundreds), hence the slack; judged where the data grows by MIN_DATA_MB or more between the sizes.
--check exits 1 when a goal misses.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import scale_standins as si  # noqa: E402
from pipelines.actors import WARM_ACTORS  # noqa: E402

COPIES_LIMIT = 1.5
MIN_DATA_MB = 50.0
DRIVER_LIMIT_MB = 2048.0
TIME_SLACK = 1.1


@dataclass(frozen=True)
class Row:
    size: int
    stage: str           # "round.stage", or "driver.<phase>"
    wall: float
    work: float          # inside the actor (the driver's phase, for driver rows)
    cpu: float           # CPU seconds of the actor and its shards (of the driver, for driver rows)
    peak: float          # the stage actor's peak RSS, MiB
    grew: float
    shard: float         # the fan-out actors' largest peak (0: none)
    shard_grew: float
    data: float          # MiB on disk of the largest dataset read or written
    driver: float        # the driver's peak RSS during it


def rss_reset() -> None:
    """Start the driver's VmHWM at its current RSS (Linux), so each phase's peak is its own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def dataset_mb(path: Path) -> float:
    """MiB of the `datasets` directories at or under `path` (a checkpoint's weights are not data that moves)."""
    dirs = [f.parent for f in Path(path).rglob("state.json")] if Path(path).exists() else []
    return sum(f.stat().st_size for d in dirs for f in d.iterdir() if f.is_file()) / 2**20


class MeasuredRunner:
    """The real StageRunner, each stage's work wrapped with the stand-ins (si.StageWork); one Row per stage.
    A class: pipelines.round.run_rounds takes a runner object and calls its run(stage, cfg)."""

    def __init__(self, runner, size: int) -> None:
        self.runner, self.size, self.rows = runner, size, []

    def run(self, stage, cfg):
        rss_reset()
        t0 = time.time()
        m = self.runner.run(replace(stage, work=si.StageWork(stage.work)), cfg)
        wall, extra = time.time() - t0, m.extra
        shards = extra.get("bench_shards") or [{"start_mb": 0.0, "peak_mb": 0.0}]
        data = max(dataset_mb(p) for p in [stage.out, *stage.inputs.values()])
        self.rows.append(Row(self.size, f"{stage.round}.{stage.name}", wall, extra["bench_work_s"],
                             extra["bench_cpu_s"],
                             extra["peak_rss_mb"], extra["peak_rss_mb"] - extra["bench_start_mb"],
                             max(s["peak_mb"] for s in shards), max(s["peak_mb"] - s["start_mb"] for s in shards),
                             data, si.rss_mb("VmHWM")))
        return m


def bench_policy(work: Path) -> str:
    """A random one-layer Qwen2 with the arena's tokenizer (its chat template) and 4,096 positions."""
    out = work / "policy"
    if (out / "config.json").exists():
        return str(out)
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from selfplay.data import resolve_builtin
    tok = AutoTokenizer.from_pretrained(resolve_builtin("builtin:arena"))
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def write_jsonl(rows: list[dict], path: Path) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def run_size(n: int, args, work: Path, policy: str) -> list[Row]:
    """Round 1 (round 0 first) at n prompts in a fresh run dir, as `make iterate` runs it; its Rows."""
    from pipelines.config import load_config
    from pipelines.preflight import preflight
    from pipelines.round import round_session, run_rounds, write_run_config

    d = work / f"n{n}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    train = write_jsonl(si.synth_prompts(n, "t", seed=n), d / "train.jsonl")
    evals = write_jsonl(si.synth_prompts(args.eval_prompts, "e", seed=1), d / "eval.jsonl")
    over = [f"run_dir={d / 'run'}", f"model.policy={policy}", "model.max_length=2560", f"data.train_prompts={train}",
            f"data.eval_prompts={evals}", f"data.prompts_per_round={n}", f"generation.backend={si.BACKEND_NAME}",
            f"generation.k={args.k}", f"generation.max_new_tokens={args.max_tokens}",
            f"generation.num_engines={args.fan}", f"judge.num_actors={args.fan}", "eval.samples_per_prompt=2",
            "wandb.mode=disabled", "resources.generation.num_cpus=1", "resources.judge.num_cpus=1"]
    cfg = load_config(ROOT / "configs" / "arena_sppo.yaml", over)
    rows = []
    rss_reset()
    t0, cpu = time.time(), time.process_time()
    preflight(cfg, [1], force=False, invocation=over)
    took = time.time() - t0
    rows.append(Row(n, "driver.preflight", took, took, time.process_time() - cpu, 0, 0, 0, 0, 0, si.rss_mb("VmHWM")))
    rss_reset()
    t0, cpu = time.time(), time.process_time()
    write_run_config(cfg)
    with round_session(cfg, verbose=False, keep_s=0, max_cpus=2) as (runner, dashboard):
        measured = MeasuredRunner(runner, n)
        run_rounds(cfg, [1], measured, dashboard)
    total = time.time() - t0
    rest = total - sum(r.wall for r in measured.rows)
    driver_peak = max([si.rss_mb("VmHWM"), *(r.driver for r in measured.rows)])
    # the driver's own time between stages; its CPU over the whole session (hashing, verifying, waiting on Ray)
    return rows + measured.rows + [Row(n, "driver.session", rest, rest, time.process_time() - cpu,
                                       0, 0, 0, 0, 0, driver_peak)]


# ------------------------------------------------------------------------------------------- the report

COLUMNS = ("stage", "wall s", "work s", "cpu s", "peak MB", "grew MB", "shard MB", "shard grew MB", "data MB",
           "driver MB")


def table(rows: list[Row]) -> list[str]:
    """Markdown rows, one per (size, stage)."""
    out = [f"| N | {' | '.join(COLUMNS)} |", "|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        cells = [r.stage, f"{r.wall:.1f}", f"{r.work:.1f}", f"{r.cpu:.1f}"]
        if r.stage.startswith("driver."):
            cells += ["-"] * 5
        else:
            shard = [f"{r.shard:.0f}", f"{r.shard_grew:.0f}"] if r.shard else ["-", "-"]
            cells += [f"{r.peak:.0f}", f"{r.grew:.0f}", *shard, f"{r.data:.1f}"]
        out.append(f"| {r.size} | {' | '.join(cells + [f'{r.driver:.0f}'])} |")
    return out


def ratios(rows: list[Row], small: int, large: int) -> dict[str, dict[str, float]]:
    """Per stage, large over small: CPU and wall time, actor and driver peaks; and copies (module docstring),
    NaN where the data grows by less than MIN_DATA_MB."""
    a = {r.stage: r for r in rows if r.size == small}
    b = {r.stage: r for r in rows if r.size == large}
    div = lambda x, y: x / y if y > 0 else float("nan")  # noqa: E731
    out = {}
    for s in (s for s in a if s in b):
        grown = b[s].data - a[s].data
        copies = (max(b[s].grew - a[s].grew, b[s].shard_grew - a[s].shard_grew) / grown if grown >= MIN_DATA_MB
                  else float("nan"))
        out[s] = {"cpu": div(b[s].cpu, a[s].cpu), "wall": div(b[s].wall, a[s].wall), "peak": div(b[s].peak, a[s].peak),
                  "driver": div(b[s].driver, a[s].driver), "copies": copies}
    return out


def goals(rows: list[Row], small: int, large: int) -> list[tuple[str, bool, str]]:
    """(goal, met, why) for each goal of the module docstring."""
    out, copies = [], []
    limit = TIME_SLACK * large / small
    for stage, r in ratios(rows, small, large).items():
        out.append((f"time {stage}", r["cpu"] <= limit, f"CPU time x{r['cpu']:.2f} (limit x{limit:.1f})"))
        if r["copies"] == r["copies"]:
            copies.append((f"copies {stage}", r["copies"] <= COPIES_LIMIT,
                           f"{r['copies']:.2f} MB of memory per MB of data (limit {COPIES_LIMIT})"))
    peak = max(r.driver for r in rows if r.size == large)
    out.append(("driver peak", peak < DRIVER_LIMIT_MB, f"{peak:.0f} MB at N={large} (limit {DRIVER_LIMIT_MB:.0f})"))
    return out + copies


def report(rows: list[Row], sizes: list[int]) -> list[tuple[str, bool, str]]:
    print("\n".join(["", *table(rows), ""]))
    small, large = min(sizes), max(sizes)
    print(f"| stage | cpu x | wall x | peak x | driver x | copies |  (N={large} over N={small})")
    print("|---|---|---|---|---|---|")
    for stage, r in ratios(rows, small, large).items():
        copies = f"{r['copies']:.2f}" if r["copies"] == r["copies"] else "-"
        print(f"| {stage} | {r['cpu']:.2f} | {r['wall']:.2f} | {r['peak']:.2f} | {r['driver']:.2f} | {copies} |")
    checks = goals(rows, small, large)
    print()
    for name, ok, why in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {why}")
    return checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="200,2000", help="prompts per round, comma-separated (default %(default)s)")
    ap.add_argument("--k", type=int, default=5, help="responses per prompt (default %(default)s)")
    ap.add_argument("--eval-prompts", type=int, default=805, help="eval prompts (default %(default)s, AlpacaEval's)")
    ap.add_argument("--mean-tokens", type=float, default=500.0, help="mean response length (default %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=2048, help="generation.max_new_tokens (default %(default)s)")
    ap.add_argument("--fan", type=int, default=2, help="generation engines and judge actors (default %(default)s)")
    ap.add_argument("--work-dir", help="where the run dirs go (default: a temp dir, removed at the end)")
    ap.add_argument("--json", help="also write the rows and goals here")
    ap.add_argument("--check", action="store_true", help="exit 1 when a goal misses")
    args = ap.parse_args(argv)
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",")})
    except ValueError:
        ap.error(f"--sizes: comma-separated prompt counts, got {args.sizes!r}")
    if len(sizes) < 2 or sizes[0] < 1:
        ap.error(f"--sizes: at least two different positive sizes, got {args.sizes!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ[WARM_ACTORS] = "0"   # every stage in an actor of its own (module docstring)
    si.SynthBackend.mean_tokens = args.mean_tokens
    si.install_backend()   # the driver's config check knows the backend
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(si)   # the actors get the stand-ins without importing scripts/
    si.preload()   # the first size's preflight would pay the driver's imports, the second's not
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_scale", dir="/tmp"))
    t0 = time.time()
    try:
        policy = bench_policy(work)
        rows = [row for n in sizes for row in run_size(n, args, work, policy)]
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    checks = report(rows, sizes)
    print(f"\nbench-scale: {time.time() - t0:.0f} s for sizes {sizes}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [asdict(r) for r in rows],
                                               "goals": [{"goal": g, "met": ok, "why": w} for g, ok, w in checks]},
                                              indent=1))
    missed = [g for g, ok, _ in checks if not ok]
    if missed and args.check:
        print(f"error: {len(missed)} goal(s) missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
