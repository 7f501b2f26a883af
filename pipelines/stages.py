"""What each stage does, as plain functions of (input paths, config, output dir).

pipelines/graph.py declares which stage runs which of them, on which inputs. They run inside Ray actors
and import no Ray: a stage that fans its work out over several actors (generation engines, judge actors)
is handed the driver's way of doing that as `fan_out(role, resources, fn, calls) -> results`, and by
default (a test calling it directly) runs every shard in its own process. Each reads its inputs and
writes its `datasets` file or checkpoint into `out` (a temp dir that the driver renames into place); it
returns a small dict of diagnostics for the manifest.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from selfplay.artifacts import seed_for  # noqa: F401  (stages and their callers seed with it)
from selfplay.config import Config


def run_here(role: str, resources, fn, calls: list[tuple]) -> list:
    """The default fan_out: every shard in this process, in order."""
    return [fn(*args) for args in calls]


def _save(rows: list[dict], out: Path) -> None:
    import datasets
    datasets.Dataset.from_list(rows).save_to_disk(str(out))


def _load(path: Path) -> list[dict]:
    import datasets
    return datasets.load_from_disk(str(path)).to_list()


def init_policy(source: str, out: Path, cfg: Config | None = None) -> dict:
    """Round 0: the initial policy, loaded from a hub id or local path and saved in HF format, with
    the run's sampling settings as generation_config.json and a model card (when cfg is given)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfplay.checkpoint import write_tokenizer
    from selfplay.data import resolve_builtin
    path = resolve_builtin(source)
    try:   # False, not the default None: with None, transformers asks on a terminal whether to run the code
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False)
    except OSError as e:
        raise FileNotFoundError(f"model.policy {source!r} could not be loaded (no local copy and no hub access?): {e}") from None
    if tok.chat_template is None:
        raise ValueError(f"model.policy {source!r} has no chat template; the pipeline formats prompts with it")
    model.save_pretrained(out)
    write_tokenizer(tok, out, model.config)
    if cfg is not None:
        from pipelines.checkpoint_files import write_generation_config, write_model_card
        write_generation_config(out, cfg)
        write_model_card(out, cfg, 0, parent=source)
    return {"source": source, "parameters": sum(p.numel() for p in model.parameters())}


def generate(policy: str, cfg: Config, round_: int, out: Path, *, eval_set: bool = False, fan_out=run_here) -> dict:
    """K samples per prompt (train) or eval.samples_per_prompt (eval) with a seed per (round, prompt)."""
    from selfplay.data import eval_rows, round_prompts
    from selfplay.generation import Request, SamplingSpec, sample_checkpoint
    from selfplay.records import Generation, to_rows

    d, g = cfg.data, cfg.generation
    if eval_set:
        rows = eval_rows(d)
        _check_room(rows, policy, cfg, "data.eval_prompts")
        spec = SamplingSpec(cfg.eval.samples_per_prompt, cfg.eval.temperature, cfg.eval.top_p, g.max_new_tokens)
        tag = "eval"  # the same seeds every round: common random numbers make rounds comparable
    else:
        rows = round_prompts(d, round_)  # this round's own slice or source; DataError when none is left
        _check_lengths(rows, policy, cfg, round_)
        spec = SamplingSpec(g.k, g.temperature, g.top_p, g.max_new_tokens, g.top_k)
        tag = f"train/{round_}"
    requests = [Request(r.prompt, seed_for(cfg.seed, tag, r.prompt_id)) for r in rows]
    t0 = time.time()
    if g.num_engines > 1 and len(requests) > 1:
        shards = split_evenly(requests, g.num_engines)
        results = fan_out("generation", cfg.resources.generation, sample_checkpoint,
                          [(policy, cfg, shard, spec) for shard in shards])
        completions = [c for part, _ in results for c in part]
        load_s = max(s for _, s in results)
    else:
        completions, load_s = sample_checkpoint(policy, cfg, requests, spec)
    gens = [Generation(r.prompt_id, r.prompt, j, q.seed, c.text, c.n_tokens, c.finished, round_)
            for r, q, cs in zip(rows, requests, completions) for j, c in enumerate(cs)]
    _save(to_rows(gens), out)
    tokens = sum(x.n_tokens for x in gens)
    return {"prompts": len(rows), "samples": len(gens), "tokens": tokens, "load_seconds": round(load_s, 2),
            "tokens_per_s": tokens / max(time.time() - t0 - load_s, 1e-9),
            "mean_response_tokens": tokens / max(len(gens), 1)}


def _check_lengths(rows: list, policy: str, cfg: Config, round_: int) -> None:
    """Refuse prompts that leave the trainer no response token (selfplay/data.py says why they are not truncated)."""
    from transformers import AutoTokenizer

    from selfplay.data import check_prompt_lengths, check_room, model_positions
    tok = AutoTokenizer.from_pretrained(policy, trust_remote_code=False)
    check_prompt_lengths(rows, tok, cfg.model.max_length, f"round {round_}'s prompts", cfg.model.max_prompt_length)
    check_room(rows, tok, model_positions(policy), cfg.generation.max_new_tokens, f"round {round_}'s prompts")


def _check_room(rows: list, policy: str, cfg: Config, source: str) -> None:
    """Refuse prompts that leave the policy no position for its answer (a hub checkpoint the preflight could
    not read is checked here, once it is loaded)."""
    from transformers import AutoTokenizer

    from selfplay.data import check_room, model_positions
    tok = AutoTokenizer.from_pretrained(policy, trust_remote_code=False)
    check_room(rows, tok, model_positions(policy), cfg.generation.max_new_tokens, source)


def split_evenly(items: list, parts: int) -> list[list]:
    """Contiguous shards whose sizes differ by at most one (no empty shard)."""
    parts = max(1, min(parts, len(items)))
    q, r = divmod(len(items), parts)
    bounds = [i * q + min(i, r) for i in range(parts + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def group_generations(path: Path) -> list[tuple[str, str, list[dict]]]:
    by: dict[str, list[dict]] = {}
    for row in _load(path):
        by.setdefault(row["prompt_id"], []).append(row)
    return [(pid, rs[0]["prompt"], sorted(rs, key=lambda r: r["sample_idx"])) for pid, rs in by.items()]


def judge(generations: Path, cfg: Config, ctx, out: Path, *, fan_out=run_here) -> dict:
    """Per prompt, the comparisons the algorithm reads (its Comparisons: the full K×K matrix, INPO's bracket,
    EGPO's pairs against y″, none for DNO's scores) as probabilities in a K×K matrix, NaN where not asked;
    judge.num_actors shard the prompts. The manifest's judge_queries counts the ordered queries asked.
    With data.teacher_column each prompt's teacher answer is judged as one more candidate (selfplay/teacher.py)."""
    from selfplay.records import to_rows
    from selfplay.teacher import with_teacher

    groups = with_teacher(group_generations(generations), cfg.data)
    if cfg.judge.num_actors > 1:   # this actor only coordinates (it holds no device): always fan out
        t0 = time.time()
        parts = fan_out("judge", cfg.resources.judge, judge_groups,
                        [(shard, cfg, ctx) for shard in split_evenly(groups, cfg.judge.num_actors)])
        judged, summary = merge_judge_parts(parts, time.time() - t0)
    else:
        judged, stats, diag = judge_groups(groups, cfg, ctx)
        summary = {"judge": diag.pop("judge"), **stats.summary(), **diag}
    if cfg.data.teacher_column:
        summary["teacher_responses"] = sum(jp.teacher_idx >= 0 for jp in judged)
    summary["judge_queries"] = summary["pairs"]
    _save(to_rows(judged), out)
    return summary


def judge_groups(groups: list, cfg: Config, ctx) -> tuple[list, object, dict]:
    """One judge over some prompts' samples: (JudgedPrompt per prompt, JudgeStats, the judge's own diagnostics)."""
    from judges.base import JudgeStats, judge_comparisons
    from judges.registry import opened
    from selfplay.algorithms import get_algorithm
    from selfplay.records import JudgedPrompt
    from selfplay.teacher import teacher_index

    stats = JudgeStats()
    ids, prompts = [pid for pid, _, _ in groups], [p for _, p, _ in groups]
    responses = [[r["response"] for r in rs] for _, _, rs in groups]
    plan = get_algorithm(cfg.algorithm).comparisons
    with opened(cfg.judge.name, cfg.judge, ctx) as j:
        mats = judge_comparisons(j, prompts, responses, plan.next_pairs, stats)
        asked = plan.name if j.independent_pairs else "matrix"   # a judge that gives only whole matrices gave one
        cons = j.consistency(ids, prompts, responses)   # CREAM: a rate per prompt, from the scores just computed
        # a scoring judge (llm rubric mode, oracle): absolute scores per response, for DNO's pair rule (memoised by
        # the rubric judge, so no second request)
        scores = j.score_groups(prompts, responses)
        name, own = j.name, j.diagnostics()   # judge-specific counters (parse failures, both-order disagreements, ...)
    extra: dict = {"comparisons": asked}
    if cons is not None:
        extra["consistency_mean"] = float(np.mean([cons[pid] for pid in ids])) if ids else float("nan")
    cons = {pid: 1.0 for pid in ids} if cons is None else cons
    scores = [np.zeros(0)] * len(groups) if scores is None else scores
    judged = [JudgedPrompt(pid, p, [r["response"] for r in rs], [r["n_tokens"] for r in rs], m.tolist(), name,
                           consistency=float(cons[pid]), scores=[float(x) for x in s], teacher_idx=teacher_index(rs),
                           comparisons=asked)
              for (pid, p, rs), m, s in zip(groups, mats, scores)]
    diag = {"judge": name, **extra, **own}
    return judged, stats, diag


def merge_judge_parts(parts: list[tuple[list, object, dict]], wall_seconds: float) -> tuple[list, dict]:
    """Concatenate the actors' judgments. The common statistics merge exactly (counts add up, length
    lists join); the judges' own counters add up and their rates are weighted by each actor's pairs.
    pairs/s is over the wall time of the whole fan-out."""
    from judges.base import JudgeStats

    judged = [jp for part, _, _ in parts for jp in part]
    stats = JudgeStats()
    for _, st, _ in parts:
        for f in ("pairs", "calls", "abstained", "both_orders", "order_disagreements", "winner_lengths",
                  "loser_lengths"):
            setattr(stats, f, getattr(stats, f) + getattr(st, f))
    stats.seconds = wall_seconds
    weights = [st.pairs for _, st, _ in parts]
    diag: dict = {}
    for key, value in parts[0][2].items():
        values = [d.get(key) for _, _, d in parts]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            diag[key] = value
        elif isinstance(value, int):
            diag[key] = sum(int(v or 0) for v in values)
        else:
            finite = [(v, w) for v, w in zip(values, weights) if isinstance(v, float) and v == v]
            diag[key] = sum(v * w for v, w in finite) / max(sum(w for _, w in finite), 1) if finite else float("nan")
    if "consistency_mean" in diag:   # a mean over prompts, not pairs
        diag["consistency_mean"] = float(np.mean([jp.consistency for jp in judged]))
    return judged, {"judge": diag.pop("judge"), **stats.summary(), **diag, "judge_actors": len(parts)}


def preferences(judgments: Path, cfg: Config, round_: int, earlier: list[Path], out: Path) -> dict:
    """The algorithm's pair rule (SPPO: best and worst by win rate against the sample)."""
    from selfplay.algorithms import PairContext, get_algorithm
    from selfplay.records import JudgedPrompt, from_rows, pair_to_row

    judged = from_rows(JudgedPrompt, _load(judgments))
    _refuse_total_abstention(judgments, round_)
    algo = get_algorithm(cfg.algorithm)
    check_comparisons(judged, algo.comparisons.name, cfg.algorithm)
    ctx = PairContext(round=round_, loss=cfg.loss, earlier_preferences=tuple(earlier), seed=cfg.seed)
    pairs = algo.make_pairs(judged, ctx)
    if not pairs:
        raise ValueError(f"round {round_}: the judge gave no usable pair out of {len(judged)} prompts "
                         "(all responses tied or abstained); check the judge")
    _save([pair_to_row(p) for p in pairs], out)   # TRL's conversational preference format
    margins = [p.chosen_winrate - p.rejected_winrate for p in pairs]
    return {"pairs": len(pairs), "prompts": len(judged), "mean_margin": float(np.mean(margins))}


def _refuse_total_abstention(judgments: Path, round_: int) -> None:
    """A judge that abstained on every pair it was asked (an endpoint answering garbage, a broken parser)
    leaves nothing to learn from: say that, rather than "no usable pair". Read from the judge stage's counters."""
    from selfplay.artifacts import read_manifest
    m = read_manifest(judgments)
    stats = m.extra if m is not None else {}
    if stats.get("pairs", 0) > 0 and stats.get("abstain_rate") == 1.0:
        raise ValueError(f"round {round_}: the judge ({stats.get('judge')}) abstained on every one of the "
                         f"{stats['pairs']} comparisons it was asked (abstain_rate 100%); refusing to train on "
                         "nothing. Check the judge: its answers are in the judge stage's log, its counters in "
                         f"{judgments}/manifest.json")


def check_comparisons(judged: list, needed: str, algorithm: str) -> None:
    """Judgments asked for another algorithm's comparisons lack entries this pair rule reads: refuse them
    (the full matrix serves every rule)."""
    other = next((jp for jp in judged if jp.comparisons not in ("matrix", needed)), None)
    if other is not None:
        raise ValueError(f"the judgments hold only {other.comparisons!r} comparisons (prompt {other.prompt_id!r}), "
                         f"but algorithm {algorithm!r} reads {needed!r}; rerun the judge stage for this algorithm")


def train(policy: str, references: dict[str, str], prefs: Path, cfg: Config, round_: int, judge_ctx,
          out: Path) -> dict:
    """The algorithm's update through the one trainer (selfplay.distributed.train_policy)."""
    import functools

    from selfplay.distributed import train_policy
    from selfplay.records import row_to_pair

    pairs = [row_to_pair(r) for r in _load(prefs)]
    res = train_policy(policy, out, pairs, references, cfg, seed_for(cfg.seed, "train", round_), round_=round_,
                       make_judge=functools.partial(trainer_judge, cfg=cfg, judge_ctx=judge_ctx))
    # per-step training metrics (loss, lr, grad norm, log-ratios, accuracy) for wandb and the dashboard
    (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in res.step_log))
    from pipelines.checkpoint_files import round_data, write_generation_config, write_model_card
    write_generation_config(out, cfg)   # plain generate() samples with the round's settings
    write_model_card(out, cfg, round_, parent=policy, references=references,
                     data=round_data(cfg, round_, Path(prefs), pairs),
                     training={"train_loss": res.final_loss, "steps": res.steps, "pairs": res.pairs,
                               "updated_fraction": res.updated_fraction})
    return {"train_loss": res.final_loss, "loss_curve": res.loss_curve, "steps": res.steps, "pairs": res.pairs,
            "updated_fraction": res.updated_fraction, "saved_fraction": res.saved_fraction, "workers": res.workers}


def trainer_judge(*, cfg: Config, judge_ctx):
    """The round's judge built inside the trainer (online updates judge every step), on the trainer's device;
    the trainer holds it across its steps and closes it."""
    import dataclasses

    from judges.registry import build_judge
    from selfplay.devices import device_for
    return build_judge(cfg.judge.name, cfg.judge, dataclasses.replace(judge_ctx, device=device_for(cfg.resources.trainer)))


def sft(base: str, cfg: Config, out: Path) -> dict:
    """Round 0's optional SFT stage: model.policy (saved by init as round_0/base) fine-tuned on init.sft_data."""
    from pipelines.checkpoint_files import write_generation_config, write_model_card
    from selfplay.sft import train_sft
    res = train_sft(base, out, cfg, seed_for(cfg.seed, "sft"))
    (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in res.step_log))
    info = {"sft_loss": res.final_loss, "steps": res.steps, "examples": res.pairs, "updated_fraction": res.updated_fraction}
    write_generation_config(out, cfg)
    write_model_card(out, cfg, 0, parent=base, training=info,
                     origin=f"SFT of {cfg.model.policy} on init.sft_data = {cfg.init.sft_data}")
    return info
