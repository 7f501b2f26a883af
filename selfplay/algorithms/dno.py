"""DNO-Prct round (Rosset et al., "Direct Nash Optimization", arXiv 2404.03715v1, Algorithm 2).

Pairs, as the authors ran them (§5.1 "Preference Annotation" and "Training Pair Construction"):
GPT-4-Turbo scores the K = 5 policy samples and the teacher's gold answer on a 6-point additive
rubric (judge.mode: rubric, judges/llm.py; the teacher comes from data.teacher_column), then

* only responses scoring at least loss.dno_min_chosen_score (5: "only samples that score a 5 or 6
  are allowed to be positives") can be chosen;
* from each such positive, EVERY pair whose negative scores at least loss.dno_margin (2) lower is
  kept, relaxed to loss.dno_student_margin (1) when the positive is a policy sample rather than the
  teacher ("the GPT-4-Turbo teacher outputs rarely receive a score less than 5"). So teacher ≻
  student, student ≻ teacher and student ≻ student pairs all occur (Table 2).

Comparisons carry a tolerance (1e-9): a gap equal to the margin on paper is kept however the floats
round (0.7 − 0.4 and 0.8 − 0.5 are both a 0.3 gap). The chosen must also score strictly higher, so a
zero margin never pairs ties. NaN scores (the judge abstained) never enter a pair. Scores come from
JudgedPrompt.scores, filled by a scoring judge (llm rubric mode; the arena's oracle gives its quality
q(y)); the config refuses dno with a judge that gives none. A pair's chosen/rejected_winrate is the
score-derived win rate against the candidates (row mean of P_ij = 1/½/0 by score, self ½ included;
the §4 estimate of r_t), for the diagnostics; its target is 1 (hard label: the paper argues
σ(r_t(y+) − r_t(y−)) ≈ 1 after large-margin filtering, §4). The earlier win-rate-margin rule (pairwise
verdicts, no teacher, no score condition) is gone: no paper runs it. Not modelled: the n-gram
repetition detector that marks degenerate samples as automatic negatives (§5.1; no n or threshold is
given), although the rubric's first point already withholds credit from repetitive answers.

Replay (step 5): add loss.dno_replay × (round n−1's own pairs), half that fraction of round n−2's,
a quarter of n−3's, … Only the pairs a round made itself (PreferencePair.round) are replayed, so
nothing is counted twice; the draw is deterministic in (seed, round, source round).

Loss (Eq. 13): DPO against π_t = "previous", dno_loss(β = loss.beta, target = pair.target).
"""
from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

import numpy as np

from selfplay.records import score_matrix
from selfplay.algorithm import Algorithm, Comparisons, PairContext, PairTensors
from selfplay.algorithms.sppo import winrates
from selfplay.records import JudgedPrompt, PreferencePair, row_to_pair

SCORE_TOL = 1e-9


def _at_least(x: float, bound: float) -> bool:
    """x ≥ bound up to float rounding (0.7 − 0.4 = 0.29999999999999993 counts as 0.3); False for NaN."""
    return x >= bound or math.isclose(x, bound, rel_tol=SCORE_TOL, abs_tol=SCORE_TOL)


def score_pairs(jp: JudgedPrompt, loss, round_: int) -> list[PreferencePair]:
    """§5.1's large-margin pairs from one prompt's scores (see the module docstring)."""
    s = np.asarray(jp.scores, dtype=np.float64)
    if len(s) != len(jp.responses):
        raise ValueError(f"prompt {jp.prompt_id!r}: DNO's pair rule needs a score per response, got {len(s)} scores "
                         f"for {len(jp.responses)} responses (judge {jp.judge!r}); judge with judge.mode=rubric "
                         "(llm) or the oracle")
    p = winrates(score_matrix(s))
    out = []
    for i in range(len(s)):
        if not _at_least(s[i], loss.dno_min_chosen_score):       # also False for NaN
            continue
        margin = loss.dno_margin if i == jp.teacher_idx else loss.dno_student_margin
        for j in range(len(s)):
            gap = s[i] - s[j]
            if j == i or not gap > 0 or math.isclose(gap, 0.0, abs_tol=SCORE_TOL) or not _at_least(gap, margin):
                continue
            if jp.responses[i] == jp.responses[j]:                # the same text scored twice: nothing to learn
                continue
            out.append(PreferencePair(prompt=jp.prompt, chosen=jp.responses[i], rejected=jp.responses[j],
                                      prompt_id=jp.prompt_id, chosen_winrate=float(p[i]),
                                      rejected_winrate=float(p[j]), target=1.0, round=round_,
                                      chosen_idx=i, rejected_idx=j))
    return out


def replay_fraction(base: float, age: int) -> float:
    """base for the previous round (age 1), base/2 for the one before, … (Alg. 2: 30%, 15%, …)."""
    return base / 2 ** (age - 1)


def _load_pairs(path: Path) -> list[PreferencePair]:
    import datasets
    return [row_to_pair(r) for r in datasets.load_from_disk(str(path)).to_list()]


def _rng(seed: int, round_: int, source: int) -> random.Random:
    digest = hashlib.sha256(f"dno-replay/{seed}/{round_}/{source}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def replay_pairs(ctx: PairContext) -> list[PreferencePair]:
    """Pairs drawn from earlier rounds' preference files (oldest first in ctx.earlier_preferences)."""
    base = ctx.loss.dno_replay
    if base <= 0:
        return []
    out = []
    n_earlier = len(ctx.earlier_preferences)
    for k, path in enumerate(ctx.earlier_preferences):
        source = k + 1                                  # earlier_preferences[k] is round k+1's
        own = [p for p in _load_pairs(Path(path)) if p.round == source]
        take = int(round(replay_fraction(base, n_earlier - k) * len(own)))
        out += _rng(ctx.seed, ctx.round, source).sample(own, min(take, len(own)))
    return out


def make_pairs(judged: list[JudgedPrompt], ctx: PairContext) -> list[PreferencePair]:
    fresh = [pair for jp in judged for pair in score_pairs(jp, ctx.loss, ctx.round)]
    return fresh + replay_pairs(ctx)


def no_pairs(m: np.ndarray, asked: np.ndarray) -> list:
    """The pair rule reads the absolute scores only (JudgedPrompt.scores): a judge that answers pairs one
    by one (the oracle) is asked no pair at all; a scoring judge's own matrix comes free with its scores."""
    return []


COMPARISONS = Comparisons("scores", no_pairs)


def _loss(t: PairTensors, cfg) -> "torch.Tensor":
    from selfplay.losses import dno_loss
    prev_c, prev_r = t.refs["previous"]
    return dno_loss(t.policy_chosen, t.policy_rejected, prev_c, prev_r, cfg.beta, target=t.target)


def reference(t: PairTensors, cfg) -> "torch.Tensor":
    """arXiv 2404.03715 Eq. 12 with a soft target z (the pair's target): −z log σ(βh) − (1 − z) log σ(−βh),
    h = log π(y_w)/π_t(y_w) − log π(y_l)/π_t(y_l)."""
    import torch.nn.functional as F
    (vc, vr) = t.refs["previous"]
    h = (t.policy_chosen - vc) - (t.policy_rejected - vr)
    return -t.target * F.logsigmoid(cfg.beta * h) - (1 - t.target) * F.logsigmoid(-cfg.beta * h)


ALGORITHM = Algorithm(loss_keys=("beta", "dno_min_chosen_score", "dno_margin", "dno_student_margin", "dno_replay"),
                      paper="arXiv 2404.03715", references=("previous",), make_pairs=make_pairs, loss=_loss,
                      reference=reference, comparisons=COMPARISONS,
                      reads=("data.teacher_column",),   # only DNO's pair rule knows a teacher candidate
                      needs_scores=True)                # its pairs come from absolute scores (§5.1)
