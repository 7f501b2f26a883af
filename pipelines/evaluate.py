"""Evaluation of round n's policy: eval generations, then win rates against every earlier round.

Round n's eval samples are compared with round k's (k < n, reused from round_k/eval), every
pair in both orders. Per prompt the win rate is the mean over sample pairs; intervals are over
prompts. The round's `metrics.json` gathers these with the train and judge diagnostics.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipelines.checkpoint_files import add_evaluation
from pipelines.stages import generate, group_generations, run_here
from selfplay.artifacts import TIMINGS
from selfplay.config import Config


def eval_judge_resources(cfg: Config):
    """The resources of the actor the eval judge runs in: this stage's own (resources.generation),
    unless several engines generated, when that actor only coordinated and a judge actor judges."""
    return cfg.resources.judge if cfg.generation.num_engines > 1 else cfg.resources.generation


def versus_all(earlier: list[Path], new_dir: Path, cfg: Config, ctx) -> dict:
    """Round n's eval samples against every earlier round's (`earlier`: the eval dirs of rounds 0..n-1), with
    one eval judge (eval_judge:) loaded once."""
    from judges.registry import opened
    with opened(cfg.eval_judge.name, cfg.eval_judge, ctx) as judge:
        return {f"round_{k}": compare_rounds(new_dir, Path(d) / "generations", judge, cfg) for k, d in enumerate(earlier)}


def eval_judging(earlier: list[Path], new_dir: Path, cfg: Config, ctx) -> tuple[dict, dict | None]:
    """(win rates against every earlier round by the eval judge, the training judge's gap to the truth)."""
    return versus_all(earlier, new_dir, cfg, ctx), training_judge_gap(earlier, new_dir, cfg, ctx)


def training_judge_gap(earlier: list[Path], new_dir: Path, cfg: Config, ctx) -> dict | None:
    """On the arena, when the round trains with a judge that does not know the arena's truth and is evaluated
    by one that does (JudgeSpec.plays_arena): that judge's win rate vs the initial policy next to the truth's
    on the same pairs (pipelines/judge_gap.py)."""
    from judges.registry import judge_spec, uses_arena
    from pipelines.judge_gap import judge_vs_oracle

    if not earlier or judge_spec(cfg.judge.name).plays_arena or not judge_spec(cfg.eval_judge.name).plays_arena \
            or not uses_arena(cfg):
        return None   # round 0 has nothing to compare with; a judge that knows the truth has no gap to it
    return judge_vs_oracle(Path(earlier[0]) / "generations", new_dir, cfg, ctx)


def compare_rounds(new_dir: Path, old_dir: Path, judge, cfg: Config) -> dict:
    """Win rate of the policy that wrote `new_dir` against the one that wrote `old_dir`."""
    from judges.base import JudgeStats, cross_preferences
    from pipelines import stats as st

    new, old = {g[0]: g for g in group_generations(new_dir)}, {g[0]: g for g in group_generations(old_dir)}
    ids = [i for i in new if i in old]
    js = JudgeStats()
    mats = cross_preferences(judge, [new[i][1] for i in ids], [[r["response"] for r in new[i][2]] for i in ids],
                             [[r["response"] for r in old[i][2]] for i in ids], js)
    per_pair = np.stack([m.reshape(-1) for m in mats])                     # [prompts, S*S]
    len_new = np.stack([np.repeat([r["n_tokens"] for r in new[i][2]], len(old[i][2])) for i in ids])
    len_old = np.stack([np.tile([r["n_tokens"] for r in old[i][2]], len(new[i][2])) for i in ids])
    summary = st.winrate_summary(per_pair, method=cfg.eval.ci_method).to_dict()
    ok = ~np.isnan(per_pair)
    summary["lc"] = float(st.length_controlled_winrate(per_pair[ok], len_new[ok], len_old[ok]))
    # over prompts, like the raw interval: rows of per_pair are prompts, the fit drops abstentions itself
    summary["lc_ci_low"], summary["lc_ci_high"] = st.length_controlled_interval(per_pair, len_new, len_old)
    summary["judge"] = judge.name
    summary["judge_stats"] = js.summary()
    return summary


def evaluate(policy: Path, earlier: list[Path], cfg: Config, n: int, ctx, info: dict, out: Path, *,
             fan_out=run_here) -> dict:
    """Round n's evaluate stage: out/generations (the eval samples of `policy`), out/versus.json (win rates
    against the rounds whose eval dirs are `earlier`, rounds 0..n-1), out/alpaca_eval.json and out/metrics.json
    (with `info`, the round's other stages' diagnostics: round_info)."""
    import time
    t0 = time.time()
    gen_info = generate(str(policy), cfg, n, out / "generations", eval_set=True, fan_out=fan_out)
    from judges.registry import planned_device
    res = eval_judge_resources(cfg)   # the eval judge computes where it runs, not where the judge stage ran
    args = (earlier, out / "generations", cfg, replace(ctx, device=planned_device(res)))
    if cfg.generation.num_engines > 1:
        # This stage's actor only coordinated the engines and holds no device: judge in a judge actor.
        [(versus, gap)] = fan_out("judge", res, eval_judging, [args])
    else:
        versus, gap = eval_judging(*args)
    info = {**info, **({"judge_vs_oracle": gap} if gap else {})}
    versus_content, versus_timings = split_timings(versus)
    (out / "versus.json").write_text(json.dumps(versus_content, indent=1))
    export_alpaca_eval(out / "generations", cfg, n, out)
    info = {**info, "stage_seconds": {**info.get("stage_seconds", {}), "evaluate": round(time.time() - t0, 2)}}
    metrics, timings = split_timings(assemble_metrics(earlier, n, cfg, versus, gen_info, info, out))
    (out / "metrics.json").write_text(json.dumps(finite_json(metrics), indent=1, allow_nan=False))
    (out / TIMINGS).write_text(json.dumps(finite_json({"metrics": timings, "versus": versus_timings}), indent=1))
    add_evaluation(Path(policy), finite_json(metrics))   # the policy's model card, not part of its hash
    return {"winrate_vs_initial": metrics["winrate_vs_initial"]["mean"],
            "winrate_vs_previous": metrics["winrate_vs_previous"]["mean"]}


def eval_generations(policy: str, cfg: Config, round_: int, out: Path, *, fan_out=run_here) -> dict:
    """Round 0's evaluate stage: only the initial policy's eval samples, which every round compares against,
    and their AlpacaEval export (the starting policy's entry). On the arena, its metrics.json holds the
    initial policy's exploitability, style mix and mean quality (no win rates: nothing came before it)."""
    info = generate(policy, cfg, round_, out / "generations", eval_set=True, fan_out=fan_out)
    export_alpaca_eval(out / "generations", cfg, round_, out)
    arena = arena_metrics(out / "generations", cfg)
    if arena:
        metrics = {"round": round_, "algorithm": cfg.algorithm, **arena}
        (out / "metrics.json").write_text(json.dumps(finite_json(metrics), indent=1, allow_nan=False))
        add_evaluation(Path(policy), finite_json(metrics))
    return info


def round_info(stages: dict[str, Path]) -> dict:
    """What metrics.json keeps of the round's other stages, from their manifests (`stages`: their dirs by
    stage name): the training loss and curve, the judge's diagnostics, and every stage's seconds."""
    from selfplay.artifacts import read_manifest
    done = {name: read_manifest(d) for name, d in stages.items()}
    train, judged = done["train"].extra, done["judge"].extra
    return {"train_loss": train.get("train_loss"), "loss_curve": train.get("loss_curve", []),
            # sorted, so a judge stage that ran and one read back from its manifest give the same metrics.json
            "judge": {k: v for k, v in sorted(judged.items()) if not k.startswith("peak")},
            "stage_seconds": {name: m.seconds for name, m in done.items()}}


# Wall-clock figures (stage times, judge and generation throughput) differ between two identical runs, so
# they are kept out of the hashed metrics.json and versus.json, in timings.json beside them (hash_dir skips
# it); read_metrics puts them back where they were for the console, wandb and the dashboard.
WALL_CLOCK = ("stage_seconds", "seconds", "pairs_per_s", "tokens_per_s", "load_seconds")


def split_timings(x: dict) -> tuple[dict, dict]:
    """(x without its WALL_CLOCK entries at any depth, those entries in the same nesting)."""
    content, timings = {}, {}
    for k, v in x.items():
        if k in WALL_CLOCK:
            timings[k] = v
        elif isinstance(v, dict):
            content[k], inner = split_timings(v)
            if inner:
                timings[k] = inner
        else:
            content[k] = v
    return content, timings


def with_timings(content: dict, timings: dict) -> dict:
    """split_timings undone: `timings` merged back into `content`."""
    out = dict(content)
    for k, v in timings.items():
        out[k] = with_timings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_timings(eval_dir: Path, part: str = "metrics") -> dict:
    """The wall-clock part of eval_dir's metrics.json (or versus.json); {} when there is none."""
    try:
        t = json.loads((Path(eval_dir) / TIMINGS).read_text()).get(part)
    except (OSError, ValueError, AttributeError):
        return {}
    return t if isinstance(t, dict) else {}


def read_metrics(eval_dir: Path) -> dict:
    """A round's metrics.json with its timings put back (stage_seconds, judge pairs/s)."""
    return with_timings(json.loads((Path(eval_dir) / "metrics.json").read_text()), read_timings(eval_dir))


def finite_json(x):
    """NaN/inf become null: metrics.json must stay strict JSON for browsers and other tools."""
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_json(v) for v in x]
    return x


def alpaca_generator(cfg: Config, n: int) -> str:
    """`<algorithm>-<run id>/round_<n>`: AlpacaEval caches annotations and leaderboard rows by generator name,
    so every run needs its own: the run id (pipelines.checkpoint_files.run_id) differs between runs that differ
    in any setting, and does not depend on where the run dir lives."""
    from pipelines.checkpoint_files import run_id
    return f"{cfg.algorithm}-{run_id(cfg)}/round_{n}"


def export_alpaca_eval(generations: Path, cfg: Config, n: int, out: Path) -> None:
    """out/alpaca_eval.json in AlpacaEval's model-outputs format (instruction, output, generator), the
    first eval sample per prompt, for the official evaluator; and out/alpaca_eval_decoding.json,
    how those outputs were sampled (AlpacaEval's rows carry no decoding settings)."""
    generator = alpaca_generator(cfg, n)
    rows = [{"instruction": p, "output": rs[0]["response"], "generator": generator}
            for _, p, rs in group_generations(generations)]
    (out / "alpaca_eval.json").write_text(json.dumps(rows, indent=1))
    decoding = {"generator": generator, "round": n, "temperature": cfg.eval.temperature, "top_p": cfg.eval.top_p,
                "max_new_tokens": cfg.generation.max_new_tokens, "samples_per_prompt": cfg.eval.samples_per_prompt,
                "exported_sample": 0, "seed": cfg.seed, "backend": cfg.generation.backend}
    (out / "alpaca_eval_decoding.json").write_text(json.dumps(decoding, indent=1))


def winrate_matrix(earlier: list[Path], versus_now: dict) -> np.ndarray:
    """W[i, j] = win rate of round i's policy against round j's, from each round's versus.json (rounds 0..n-1
    in `earlier`, round n's in `versus_now`)."""
    n = len(earlier)
    w = np.full((n + 1, n + 1), 0.5)
    for i in range(1, n + 1):
        vs = versus_now if i == n else json.loads((Path(earlier[i]) / "versus.json").read_text())
        for j in range(i):
            w[i, j] = vs[f"round_{j}"]["mean"]
            w[j, i] = 1.0 - w[i, j]
    return w


def assemble_metrics(earlier: list[Path], n: int, cfg: Config, versus: dict, gen_info: dict, round_info: dict,
                     out: Path) -> dict:
    from pipelines import stats as st

    w = winrate_matrix(earlier, versus)
    names = [f"round_{i}" for i in range(n + 1)]
    ratings = st.bradley_terry(w, games=max(versus["round_0"]["n"], 1))
    samples = [{"prompt": p, "response": rs[0]["response"], "policy": f"round_{n}"}
               for _, p, rs in group_generations(out / "generations")[:4]]
    return {
        "round": n,
        "algorithm": cfg.algorithm,
        "winrate_vs_initial": versus["round_0"],
        "winrate_vs_previous": versus[f"round_{n - 1}"],
        "winrate_matrix": {"policies": names, "winrate": w.tolist()},
        "ratings": {"policies": names, **ratings},
        "cycles": [[names[i] for i in c] for c in st.find_cycles(w)],
        "mean_response_tokens": gen_info["mean_response_tokens"],
        "train_loss": round_info.get("train_loss"),
        "train_loss_curve": round_info.get("loss_curve", []),
        "judge": round_info.get("judge", {}),
        "eval_judge": versus["round_0"]["judge_stats"] | {"name": versus["round_0"]["judge"]},
        "stage_seconds": round_info.get("stage_seconds", {}),
        "samples": samples,
        **arena_metrics(out / "generations", cfg),
        **({"judge_vs_oracle": round_info["judge_vs_oracle"]} if round_info.get("judge_vs_oracle") else {}),
    }


def arena_metrics(generations: Path, cfg: Config) -> dict:
    """On the arena's game: exploitability (distance from Nash), the style mix and mean quality of the
    eval samples (selfplay/exploitability.py); nothing elsewhere, where no best response is known."""
    from judges.registry import uses_arena
    from selfplay.exploitability import exploitability, mean_quality, style_mix

    if not uses_arena(cfg):
        return {}
    groups = group_generations(generations)
    prompts, responses = [p for _, p, _ in groups], [[r["response"] for r in rs] for _, _, rs in groups]
    return {"exploitability": exploitability(prompts, responses, cfg.arena, seed=cfg.seed).to_dict(),
            "style_mix": style_mix(prompts, responses), "mean_quality": mean_quality(prompts, responses)}
