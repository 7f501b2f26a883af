"""What every saved policy directory carries besides weights and tokenizer: the round's sampling
settings as `generation_config.json` (so plain `model.generate(**inputs)` samples the way the round
sampled) and a `README.md` model card saying what made the checkpoint.

The stages write them (pipelines.stages.init_policy and train) into the stage's output dir before
its manifest is taken, so they are part of the checkpoint's hash like every other file.
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


def write_model_card(ckpt: Path, cfg: Config, round_: int, *, parent: str, data: dict | None = None,
                     training: dict | None = None, references: dict[str, str] | None = None,
                     origin: str | None = None) -> None:
    """ckpt/README.md. `data` and `training` are what the stage knows when it saves; the round's
    eval metrics come later and live in round_<n>/eval/metrics.json of the run dir. `origin`
    replaces the sentence saying how the checkpoint was made (e.g. round 0's SFT stage)."""
    run = Path(cfg.run_dir).resolve().name
    j = cfg.judge
    s = sampling_defaults(cfg)
    trained = round_ > 0
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             f"tags: [selfplay, {cfg.algorithm}]", "---", "",
             f"# {run} / round_{round_} policy", ""]
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
                 "every earlier round, written after training)" if trained else
                 "none of its own: later rounds' round_<n>/eval/metrics.json compare against it (winrate_vs_initial)"))
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in rows] + [""]
    lines += ["## Sampling defaults", "",
              "`generation_config.json` holds the round's sampling settings (`generation:` in the run config), so "
              "`model.generate(**inputs)` samples like the pipeline did:", "",
              "```", json.dumps(s), "```", "",
              "Prompts are formatted with the tokenizer's chat template (one user turn plus the generation prompt).",
              ""]
    (Path(ckpt) / "README.md").write_text("\n".join(lines))


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
