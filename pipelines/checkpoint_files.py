"""What every saved policy directory carries besides weights and tokenizer: the round's sampling
settings as `generation_config.json` (so plain `model.generate(**inputs)` samples the way the round
sampled), tokenizer files that say what the model takes, and a `README.md` model card saying what made
the checkpoint and, once the round is evaluated, how it did.

The stages write them (pipelines.stages.init_policy and train) into the stage's output dir before its
manifest is taken. Nothing in them depends on where the run dir lives: paths inside the run are written
relative to it, so the same round made in two run dirs hashes the same. The model card is left out of the
hash (selfplay.artifacts.UNHASHED): the evaluate stage adds the round's results to it afterwards.
"""
from __future__ import annotations

import json
from pathlib import Path

from selfplay.config import Config

# Kept from the file the checkpoint already has; every other key (a hub model's own top_k,
# repetition_penalty, ...) is dropped: the defaults must be what the pipeline sampled with.
TOKEN_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def sampling_defaults(cfg: Config) -> dict:
    """generation.* as transformers GenerationConfig fields. generation.top_k = 0 (off) is written as 0,
    which also turns off transformers' own default top-k of 50 that the backends do not apply."""
    g = cfg.generation
    return {"do_sample": True, "temperature": g.temperature, "top_p": g.top_p, "top_k": g.top_k,
            "max_new_tokens": g.max_new_tokens}


def write_generation_config(ckpt: Path, cfg: Config) -> dict:
    """Rewrite ckpt/generation_config.json: the token ids it had, plus the round's sampling settings.
    The pipeline's own samplers pass every setting explicitly, so this only changes what a plain
    `generate()` (and a `vllm serve` of the checkpoint) does by default."""
    from transformers import GenerationConfig

    path = Path(ckpt) / "generation_config.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    if not any(k in old for k in TOKEN_KEYS):   # no file yet: the model config's token ids
        model_cfg = json.loads((Path(ckpt) / "config.json").read_text())
        old = {k: model_cfg[k] for k in TOKEN_KEYS if model_cfg.get(k) is not None}
    fields = {**{k: old[k] for k in TOKEN_KEYS if old.get(k) is not None}, **sampling_defaults(cfg)}
    GenerationConfig(**fields).save_pretrained(ckpt)   # validates the combination
    return fields


def run_relative(path: str | Path, cfg: Config) -> str:
    """A path inside the run dir as written relative to it (round_0/policy); anything else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path(cfg.run_dir).resolve()))
    except ValueError:
        return str(path)


# Settings that change where or how a run runs, never what it makes: left out of its run id.
NOT_CONTENT = ("run_dir", "wandb", "resources")
PLAN_ONLY = ("num_parameters", "hidden_size", "num_layers")   # model facts that only size `make plan`


def run_id(cfg: Config) -> str:
    """What names a run outside its directory (AlpacaEval's generator names): a hash of every setting that
    changes what the run makes. Runs that differ in one differ in it; the same settings in two run dirs (or
    with other resources, retries or logging) make the same outputs, and share it."""
    from selfplay.artifacts import stable_hash
    from selfplay.config import to_dict
    c = {k: v for k, v in to_dict(cfg).items() if k not in NOT_CONTENT}
    c["model"] = {k: v for k, v in c["model"].items() if k not in PLAN_ONLY}
    return stable_hash(c)[:8]


def write_model_card(ckpt: Path, cfg: Config, round_: int, *, parent: str, data: dict | None = None,
                     training: dict | None = None, references: dict[str, str] | None = None,
                     origin: str | None = None) -> None:
    """ckpt/README.md. `data` and `training` are what the stage knows when it saves; the round's
    eval results are added by the evaluate stage (add_evaluation). `origin` replaces the sentence saying
    how the checkpoint was made (e.g. round 0's SFT stage). Paths inside the run dir are run-relative."""
    j = cfg.judge
    s = sampling_defaults(cfg)
    trained = round_ > 0
    parent = run_relative(parent, cfg)
    references = {k: run_relative(v, cfg) for k, v in (references or {}).items()}
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             *_hub_fields(cfg), f"tags: [selfplay, {cfg.algorithm}]", "---", "",
             f"# selfplay {cfg.algorithm} run {run_id(cfg)}: round_{round_} policy", ""]
    if origin:
        lines += [origin, ""]
    elif trained:
        lines += [f"Round {round_} of an iterative self-play run (`{cfg.algorithm}`), trained by the `selfplay` "
                  "pipeline from the previous round's policy on preferences over its own samples.", ""]
    else:
        lines += [f"Round 0 of an iterative self-play run (`{cfg.algorithm}`): the initial policy, saved as "
                  "loaded (not trained by the pipeline).", ""]
    rows = [("round", round_), ("algorithm", cfg.algorithm),
            ("parent checkpoint", parent)]
    if trained:
        rows += [("judge", f"{j.name}" + (f" ({j.model})" if j.model else "")),
                 ("loss settings", ", ".join(f"{k}={v}" for k, v in _loss_settings(cfg).items()))]
        rows += [(f"reference ({k})", v) for k, v in (references or {}).items()]
    for k, v in (data or {}).items():
        rows.append((f"data: {k}", v))
    for k, v in (training or {}).items():
        rows.append((f"training: {k}", v))
    rows.append(("eval metrics", f"round_{round_}/eval/metrics.json in the run directory (win rates against "
                 "every earlier round, written after training; summarised below once evaluated)" if trained else
                 "none of its own: later rounds' round_<n>/eval/metrics.json compare against it (winrate_vs_initial)"))
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in rows] + [""]
    lines += ["## Sampling defaults", "",
              "`generation_config.json` holds the round's sampling settings (`generation:` in the run config), so "
              "`model.generate(**inputs)` samples like the pipeline did:", "",
              "```", json.dumps(s), "```", "",
              "Prompts are formatted with the tokenizer's chat template (one user turn plus the generation prompt).",
              ""]
    (Path(ckpt) / "README.md").write_text("\n".join(lines))


def _hub_fields(cfg: Config) -> list[str]:
    """The card's base_model and datasets, where they are hub ids (a local path says nothing elsewhere)."""
    from selfplay.config import looks_like_hub_id
    sources = [cfg.data.train_prompts] if isinstance(cfg.data.train_prompts, str) else list(cfg.data.train_prompts)
    hub = sorted({x for x in (*sources, cfg.data.eval_prompts) if looks_like_hub_id(x)})
    return ([f"base_model: {cfg.model.policy}"] if looks_like_hub_id(cfg.model.policy) else []) + \
           ([f"datasets: [{', '.join(hub)}]"] if hub else [])


EVALUATION = "## Evaluation"


def add_evaluation(ckpt: Path, metrics: dict) -> None:
    """The round's results (its metrics.json) as the card's last section, replacing one written before.
    The card is not part of the checkpoint's hash, so adding them leaves the artifact valid."""
    card = Path(ckpt) / "README.md"
    if not card.exists():
        return
    text = card.read_text().split(f"\n{EVALUATION}\n")[0].rstrip("\n")
    rows = []
    for key, what in (("winrate_vs_initial", "win rate vs round 0"), ("winrate_vs_previous", "win rate vs the "
                      "previous round"), ("exploitability", "exploitability (0 = Nash)")):
        m = metrics.get(key)
        if isinstance(m, dict) and m.get("mean") is not None:
            ci = f" [{m['ci_low']:.3f}, {m['ci_high']:.3f}]" if m.get("ci_low") is not None else ""
            rows.append(f"| {what} | {m['mean']:.3f}{ci} |")
    judge = (metrics.get("eval_judge") or {}).get("name")
    head = [EVALUATION, "", f"From round_{metrics.get('round')}/eval/metrics.json"
            + (f", judged by `{judge}`" if judge else "") + ", with 95% intervals over eval prompts:", "",
            "| | |", "|---|---|"]
    tmp = card.with_name(".README.md.tmp")
    tmp.write_text(text + "\n\n" + "\n".join(head + rows) + "\n")
    tmp.replace(card)


def round_data(cfg: Config, round_: int, prefs: Path, pairs: list) -> dict:
    """What round n trained on, for its model card: prompt source, prompts judged, own and replayed pairs."""
    from selfplay.artifacts import read_manifest
    from selfplay.data import round_source

    own = [p for p in pairs if p.round == round_]
    m = read_manifest(prefs)   # the preferences stage's diagnostics (absent when a test calls train directly)
    judged = m.extra.get("prompts") if m is not None else None
    info = {"train prompts": f"{round_source(cfg.data, round_)} (up to {cfg.data.prompts_per_round} prompts per round)",
            "prompts judged": judged if judged is not None else "n/a",
            "prompts with a pair": len({p.prompt_id for p in own}), "pairs of this round": len(own)}
    if len(own) < len(pairs):
        info["pairs replayed from earlier rounds"] = len(pairs) - len(own)
    return info


def _loss_settings(cfg: Config) -> dict:
    from selfplay.algorithms import get_algorithm
    keys = get_algorithm(cfg.algorithm).loss_keys
    return {k: getattr(cfg.loss, k) for k in keys}


def _cell(v) -> str:
    if isinstance(v, float):
        v = f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")
