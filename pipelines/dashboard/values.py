"""Reading one value out of a round's metrics, whatever shape an older or half-written round left it in:
every key but `round` may be missing, a number may be NaN or a string. What is not a finite number becomes
None, which plotly draws as a gap and the tables as a dash."""
from __future__ import annotations

import math
from typing import Any


def at(m: Any, *keys: str) -> Any:
    """m[keys[0]][keys[1]]…, or None where a level is missing or not a dict."""
    for k in keys:
        if not isinstance(m, dict):
            return None
        m = m.get(k)
    return m


def finite(v: Any) -> float | None:
    """v as a float if it is a finite number, else None (plotly draws None as a gap)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def num(m: Any, *keys: str) -> float | None:
    return finite(at(m, *keys))


def nums(v: Any, n: int | None = None) -> list[float | None]:
    """A list of numbers, padded or cut to n; anything else becomes gaps."""
    v = [finite(x) for x in v] if isinstance(v, list) else []
    return v if n is None else v[:n] + [None] * (n - len(v[:n]))


def as_list(v: Any) -> list:
    return v if isinstance(v, list) else []


def as_dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def latest(rounds: list[dict], *keys: str) -> dict:
    """The newest round with a non-empty list at keys: a round missing it falls back to the one before."""
    return next((m for m in reversed(rounds) if as_list(at(m, *keys))), {})


def fmt(v: float | None, spec: str = "{:.3f}") -> str:
    return spec.format(v) if v is not None else "–"


def interval(s: Any, mean: str, lo: str, hi: str) -> str:
    """'0.612 [0.571, 0.650]' from a summary dict; dashes for what is missing."""
    return f"{fmt(num(s, mean))} [{fmt(num(s, lo))}, {fmt(num(s, hi))}]"
