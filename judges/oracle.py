"""The oracle judge: the synthetic arena's exact preference (rules in selfplay/arena.py).

Besides P(a ≻ b) it gives each response an absolute score, the arena's transitive quality q(y)
(selfplay.arena.assess(prompt, y).quality: +1 per distinct on-topic word, −1 per off-topic word,
−0.5 per repeat; the intransitive style term has no absolute score), capped as the preference caps it.
The no-style penalty w_n (ArenaRules.unstyled_penalty, 0 by default) is transitive too, so it is part of
the score, converted to quality points: a style-less answer scores w_n / w_q lower (w_n lower when
w_q = 0, where quality does not count). The judge stage stores the score as
JudgedPrompt.scores, which is what lets DNO's score-based pair rule (a chosen response that scores
well, a rejected one that scores a margin lower) run in the arena as it runs on an LLM rubric.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from judges.spec import JudgeContext, JudgeSpec
from judges.sizing import NO_MODEL, no_model
from selfplay.arena import DEFAULT_RULES, ArenaRules, assess, oracle_probability


class OracleJudge:
    """Deterministic and order-symmetric, so both orders agree and it never abstains."""

    name = "oracle"
    order_symmetric = True   # P(a ≻ b) + P(b ≻ a) = 1 by construction: one order per pair is asked
    both_orders = False
    independent_pairs = True

    def __init__(self, rules: ArenaRules = DEFAULT_RULES):
        self.rules = rules

    def compare(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        return np.array([oracle_probability(p, x, y, self.rules) for p, x, y in zip(prompts, a, b)], dtype=np.float64)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The transitive part of the preference per (prompt, response): capped quality, less the no-style
        penalty in quality points."""
        r = self.rules
        points = r.unstyled_penalty / r.quality_weight if r.quality_weight > 0 else r.unstyled_penalty
        verdicts = [assess(p, y) for p, y in zip(prompts, responses)]
        return np.array([r.capped(v.quality) - points * (v.style is None) for v in verdicts], dtype=np.float64)

    def score_groups(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Per prompt, the quality of each of its responses."""
        return [self.score([p] * len(rs), list(rs)) for p, rs in zip(prompts, responses)]

    def matrices(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> None:
        return None   # asked by pairs

    def consistency(self, prompt_ids: Sequence[str], prompts: Sequence[str],
                    responses: Sequence[Sequence[str]]) -> None:
        return None

    def diagnostics(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def _build(cfg, ctx: JudgeContext) -> OracleJudge:
    return OracleJudge(ctx.arena)   # the config's arena: section, carried by the context


JUDGE = JudgeSpec(_build, budget=lambda cfg, policy, device, dtype: no_model("no model"),
                  dtype_label=lambda cfg, device, dtype: NO_MODEL,
                  scores=lambda cfg: True,   # the arena's quality q(y)
                  plays_arena=True)
