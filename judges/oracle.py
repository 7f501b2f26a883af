"""The oracle judge: the synthetic arena's exact preference (rules in selfplay/arena.py)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from selfplay.arena import oracle_probability


class OracleJudge:
    """Deterministic and order-symmetric, so both orders agree and it never abstains."""

    name = "oracle"

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        return np.array([oracle_probability(p, x, y) for p, x, y in zip(prompts, a, b)], dtype=np.float64)
