"""One run's page apart from its charts: the headline numbers, sample generations and the resolved config,
as HTML. Everything a model or a user wrote is escaped (a response may well contain HTML)."""
from __future__ import annotations

import html
import json
from typing import Any

from pipelines.dashboard.runs import Run
from pipelines.dashboard.values import as_list, fmt, interval, num

MAX_SAMPLES_PER_ROUND = 6
MAX_SAMPLE_CHARS = 800


def summary_table(rounds: list[dict]) -> str:
    """The headline numbers as text, for reading without hovering."""
    def cell(m: dict, *keys: str, spec: str = "{:.3f}") -> str:
        return fmt(num(m, *keys), spec)

    def wr(m: dict, key: str) -> str:
        return interval(m.get(key), "mean", "ci_low", "ci_high")

    def lc(m: dict, key: str) -> str:
        return interval(m.get(key), "lc", "lc_ci_low", "lc_ci_high")

    arena = any(isinstance(m.get("exploitability"), dict) for m in rounds)
    head = ("round", "vs initial [95% CI]", "LC vs initial [95% CI]", "vs previous [95% CI]",
            "LC vs previous [95% CI]", "tokens", "train loss") + (("exploitability [95% CI]",) if arena else ())
    rows = "".join(f"<tr><td>{m['round']}</td><td>{wr(m, 'winrate_vs_initial')}</td>"
                   f"<td>{lc(m, 'winrate_vs_initial')}</td><td>{wr(m, 'winrate_vs_previous')}</td>"
                   f"<td>{lc(m, 'winrate_vs_previous')}</td>"
                   f"<td>{cell(m, 'mean_response_tokens', spec='{:.1f}')}</td><td>{cell(m, 'train_loss')}</td>"
                   + (f"<td>{interval(m.get('exploitability'), 'mean', 'ci_low', 'ci_high')}</td>" if arena else "")
                   + "</tr>" for m in rounds)
    return f"<table id='summary'><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{rows}</table>"


def samples_table(rounds: list[dict]) -> str:
    """Sample generations; everything model-written is escaped (a response may well contain HTML)."""
    def text(s: dict, k: str) -> str:
        v = str(s.get(k, ""))
        return html.escape(v if len(v) <= MAX_SAMPLE_CHARS else v[:MAX_SAMPLE_CHARS] + " …")

    rows = "".join(f"<tr data-round='{m['round']}'><td>{m['round']}</td><td>{text(s, 'policy')}</td>"
                   f"<td>{text(s, 'prompt')}</td><td class='resp'>{text(s, 'response')}</td></tr>"
                   for m in rounds for s in as_list(m.get("samples"))[:MAX_SAMPLES_PER_ROUND] if isinstance(s, dict))
    return ("<table id='samples'><tr><th>round</th><th>policy</th><th>prompt</th><th>response</th></tr>"
            f"{rows}</table>")


def parse_config(text: str | None) -> dict | None:
    """config.yaml as a flat {dotted.key: value} dict, or None if it is missing or not a YAML mapping."""
    if text is None:
        return None
    import yaml
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(tree, dict):
        return None
    flat: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        else:
            flat[prefix] = v

    walk("", tree)
    return flat


def show_value(v: Any) -> str:
    """A config value as YAML-ish text ('' shows as '' so an empty string is visible)."""
    if isinstance(v, str):
        return v if v else "''"
    return json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else str(v)


def config_panel(run: Run) -> str:
    """The run's resolved config.yaml: one small key/value table per top-level section, laid out in
    columns; the raw text if it is not a YAML mapping."""
    head = "<h2>Config <small>(config.yaml)</small></h2>"
    if run.config is None:
        return f"<section id='config' class='card'>{head}<p class='muted'>no config.yaml</p></section>"
    flat = parse_config(run.config)
    if flat is None:
        return f"<section id='config' class='card'>{head}<pre>{html.escape(run.config)}</pre></section>"
    sections: dict[str, list[tuple[str, Any]]] = {}
    for k, v in flat.items():
        top, _, rest = k.partition(".")
        sections.setdefault(top if rest else "", []).append((rest or top, v))
    blocks = "".join(
        f"<table class='cfg'>{f'<tr><th colspan=2>{html.escape(sec)}</th></tr>' if sec else ''}"
        + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(show_value(v))}</td></tr>" for k, v in items)
        + "</table>" for sec, items in sorted(sections.items(), key=lambda kv: kv[0] != ""))
    return f"<section id='config' class='card'>{head}<div class='cfgcols'>{blocks}</div></section>"

