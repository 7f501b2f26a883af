"""The HTML shell every page shares (one run's, several runs', the league's): plotly.js inlined so the page
opens from disk with no server and no network, one card a chart, and the page's own write, which never
leaves a partial file."""
from __future__ import annotations

import glob
import html
import json
import os
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

INTRO = ("Win rates are P(policy ≻ opponent) from the eval judge, ties ½; bands and error bars are 95% "
         "intervals over prompts; length-controlled (LC) = at zero length difference (AlpacaEval 2.0 style).")
# A page's temp file this old was left by a writer killed mid-write: a write takes well under a second.
ORPHAN_AFTER_S = 600


class PageWriteError(OSError):
    """A page could not be written (full disk, no permission): the old page, if any, is left as it was."""


def page_html(title: str, heading: str, intro: str, charts: list[tuple[str, go.Figure]], before: str, after: str,
              js_vars: dict[str, Any]) -> str:
    config = {"displaylogo": False, "responsive": True}
    divs = "".join(f"<div class='card'>{f.to_html(full_html=False, include_plotlyjs=False, div_id=cid, config=config)}"
                   "</div>" for cid, f in charts)
    js = "".join(f"window.{k} = {json.dumps(v)};" for k, v in js_vars.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta name='rounds' content='{js_vars.get('DASHBOARD_ROUNDS', 0)}'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style>"
            f"<script>{get_plotlyjs()}</script><script>{js}</script></head>"
            f"<body><h1>{heading}</h1><p>{intro}</p>{before}<div class='grid'>{divs}</div>{after}"
            f"<script>{RESIZE}</script></body></html>")


def write_page(out: Path, page: str, what: str) -> Path:
    """Write `page` to `out` whole or not at all: a temp file beside it, renamed over it, so a browser
    reloading mid-write, or a disk that fills up, leaves the old page. Any OSError removes the temp file
    and is raised as one PageWriteError naming `what`, the path and the system's reason."""
    out, tmp = Path(out), None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # why a fresh name: two writers of one page (a refresh and `make dashboard`) must not share a temp file;
        # O_EXCL with mode 0o666 gives the page the permissions the umask allows, as a plain write would
        name = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.tmp")
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        tmp = name
        with open(fd, "w", encoding="utf-8") as f:
            f.write(page)
            f.flush()
            os.fsync(f.fileno())   # why: a crash after the rename must not find a renamed but empty file
        os.replace(tmp, out)
    except OSError as e:
        if tmp is not None:
            with suppress(OSError):
                os.unlink(tmp)
        err = PageWriteError(f"cannot write the {what} {out}: {e.strerror or e}")
        err.errno = e.errno
        raise err from e
    _remove_orphans(out)
    return out


def _remove_orphans(out: Path) -> None:
    """The temp files of `out` that killed writers left (each named afresh, so no later write reuses one)."""
    for f in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
        with suppress(OSError):   # gone already, or another writer's business
            if time.time() - f.stat().st_mtime > ORPHAN_AFTER_S:
                f.unlink()


# why: each chart is sized when its script runs, before the rest of the page exists; re-fit once all is laid out
# (DASHBOARD_READY tells tests and screenshot tools that no redraw is pending).
RESIZE = ("window.addEventListener('load', () => Promise.all([...document.querySelectorAll('.js-plotly-plot')]"
          ".map(d => Plotly.Plots.resize(d))).then(() => { window.DASHBOARD_READY = true; }));")
CSS = ("body{font-family:system-ui,sans-serif;margin:20px;background:#fafafa;color:#222}"
       ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(620px,1fr));gap:12px;margin-top:12px}"
       ".card{background:white;padding:6px;border:1px solid #ddd;border-radius:4px}"
       "section.card{margin-top:12px;padding:6px 12px}h2 small{font-weight:normal;color:#777;font-size:60%}"
       "table{border-collapse:collapse;background:white;font-size:14px}"
       "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
       "th{background:#f0f0f0}td.resp{white-space:pre-wrap;max-width:60em}.muted{color:#888}"
       ".cfgcols{column-width:17em;column-gap:12px}"
       "table.cfg{width:100%;break-inside:avoid;margin-bottom:10px;font-size:12px}"
       "table.cfg td,table.cfg th{padding:1px 6px}table.cfg td:last-child{font-family:monospace;word-break:break-all}"
       "#config-diff td{font-family:monospace;font-size:12px}"
       ".cfgside{display:flex;gap:12px;overflow-x:auto}.cfgside pre{font-size:11px;background:#f6f6f6;padding:6px}")
