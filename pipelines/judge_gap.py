"""The judge–truth gap: the training judge's win rate next to the arena oracle's, on the same pairs.

A round's progress as the training judge sees it can be real or the judge being exploited. In the
arena the oracle knows the truth, so the evaluate stage asks both the same question: round n's eval
samples against round 0's, every (new, old) sample pair in both orders, with the same helpers as
the win rates of ``pipelines/evaluate.py``. Round 0 is the baseline rather than round n−1 because
exploitation accumulates: the headline number (win rate vs the initial policy) is the one whose
honesty is in question, and a per-round difference would hide a gap that grows a little each round.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipelines.stages import group_generations
from selfplay.config import Config

BASELINE = 0     # the round whose eval samples round n is compared with
NEAR_TIE = 0.05  # oracle probabilities within this of ½ are near-ties, left out of the agreement (as for the asset)


@dataclass(frozen=True)
class JudgeGap:
    judge: str                  # the training judge (judge.name)
    vs_round: int               # the baseline round
    n_pairs: int                # (new sample, old sample) pairs, each judged in both orders by both judges
    judge_winrate: float        # mean over prompts of the training judge's P(new ≻ old)
    oracle_winrate: float       # the same for the oracle
    judge_ci: tuple[float, float]
    oracle_ci: tuple[float, float]
    agreement: float            # share of pairs with |P_oracle − ½| > NEAR_TIE where both are on the same side of ½


def judge_vs_oracle(baseline: Path, new_dir: Path, cfg: Config, ctx) -> dict | None:
    """Round n's eval samples (in `new_dir`) against round 0's (`baseline`: its eval generations), by the
    training judge and by the arena's truth.

    None when a prompt is not an arena prompt (no truth there). `ctx` is the evaluate stage's judge context
    (device, the config's arena rules)."""
    from pipelines import stats as st
    from selfplay.arena import prompt_topic

    prompts, new, old = paired_samples(Path(new_dir), Path(baseline))
    if not prompts or any(prompt_topic(p) is None for p in prompts):
        return None
    shape = [len(a) * len(b) for a, b in zip(new, old)]
    p_judge = _judged(cfg, ctx, prompts, new, old)
    p_oracle = _truth(ctx.arena, prompts, new, old)   # ctx carries the config's arena rules
    s_judge = st.winrate_summary(_rows(p_judge, shape), method="bootstrap")
    s_oracle = st.winrate_summary(_rows(p_oracle, shape), method="bootstrap")
    decided = np.abs(p_oracle - 0.5) > NEAR_TIE
    agree = (p_judge[decided] - 0.5) * (p_oracle[decided] - 0.5) > 0
    return asdict(JudgeGap(cfg.judge.name, BASELINE, int(sum(shape)), s_judge.mean, s_oracle.mean,
                           (s_judge.ci_low, s_judge.ci_high), (s_oracle.ci_low, s_oracle.ci_high),
                           float(agree.mean()) if agree.size else float("nan")))


def _judged(cfg: Config, ctx, prompts: list[str], new: list[list[str]], old: list[list[str]]) -> np.ndarray:
    """The training judge's P(new ≻ old) for every (new, old) pair, both orders averaged (as evaluate's
    compare_rounds asks), flat."""
    from judges.base import JudgeStats, cross_preferences
    from judges.registry import opened

    with opened(cfg.judge.name, cfg.judge, ctx) as judge:
        return np.concatenate([m.reshape(-1) for m in cross_preferences(judge, prompts, new, old, JudgeStats())])


def _truth(rules, prompts: list[str], new: list[list[str]], old: list[list[str]]) -> np.ndarray:
    """The arena's P(new ≻ old) under `rules` for every pair, flat in _judged's order: what the oracle
    judge answers (it is order-symmetric, so both orders agree)."""
    from selfplay.arena import oracle_probability
    return np.array([oracle_probability(p, a, b, rules) for p, rs, os_ in zip(prompts, new, old)
                     for a in rs for b in os_], dtype=np.float64)


def paired_samples(new_dir: Path, old_dir: Path) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """(prompts, new responses, old responses) over the prompts both directories answered."""
    new, old = {g[0]: g for g in group_generations(new_dir)}, {g[0]: g for g in group_generations(old_dir)}
    ids = [i for i in new if i in old]
    return ([new[i][1] for i in ids], [[r["response"] for r in new[i][2]] for i in ids],
            [[r["response"] for r in old[i][2]] for i in ids])


def _rows(flat: np.ndarray, shape: list[int]) -> np.ndarray:
    """Per prompt rows of P(new ≻ old) (padded with NaN, which winrate_summary treats as absent)."""
    out = np.full((len(shape), max(shape)), np.nan)
    at = 0
    for k, s in enumerate(shape):
        out[k, :s] = flat[at:at + s]
        at += s
    return out
