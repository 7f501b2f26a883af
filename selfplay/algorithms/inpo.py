"""INPO round (Zhang et al., "Iterative Nash Policy Optimization", arXiv 2407.00617, ICLR 2025).

Pairs (paper §4.1 and App. B): only *hard* preferences are used, never win-rate estimates.
* K a power of two (K = 8 in the paper's pair-preference-model runs): a knockout tournament.
  First round (0,1), (2,3), …; the winners play a single-elimination bracket whose champion is
  y_w, the first-round losers play one in which the *loser* advances, giving y_l; a final check
  y_w vs y_l keeps the pair only if y_w strictly wins. For K = 8 that is 4 + (2+1) + (2+1) + 1 = 11
  comparisons (spec §2.1), 3K/2 − 1 in general (one fewer when the final is a rematch of a first-round
  match), and the judge is asked only those (COMPARISONS): stage by stage, since who plays next
  depends on who won; a judge that needs both orders answers 22 ordered queries at K = 8 where the
  full matrix is 56. Inside the brackets a tie (or an abstention)
  goes to the first-listed response, as in the paper; the final check needs a strict win because a
  tied pair carries no preference (the third-party copy of the authors' script skips it too).
* Any other K: best and worst by win rate against the sample — the paper's reward-model variant
  (y_w = highest score, y_l = lowest), with the pipeline's row-mean win rate as the score.
chosen_winrate / rejected_winrate hold the row-mean win rates for diagnostics only (with the bracket:
over the matches the response played, self ½ included): the INPO loss ignores them.

Loss (Algorithm 1, Eq. 8): (h − 1/(2η))² with h measured against the geometric mixture
π_ref^{τ/η} π_t^{1−τ/η}; π_ref = "initial" (round 0), π_t = "previous" (round n−1). Paper values:
η = 0.005, τ = η/3 (App. B).
"""
from __future__ import annotations

import numpy as np

from selfplay.algorithm import Algorithm, Comparisons, Pair, PairContext, PairTensors, all_pairs
from selfplay.algorithms.sppo import best_worst_pairs, winrates
from selfplay.records import JudgedPrompt, PreferencePair


def uses_tournament(k: int) -> bool:
    """The bracket needs K = 2^m ≥ 4 (two disjoint halves of at least two); K = 8 is the paper's."""
    return k >= 4 and k & (k - 1) == 0


def first_wins(m: np.ndarray, i: int, j: int) -> bool:
    """Hard decision of the match (i, j): i wins unless the judge strictly prefers j (ties, NaN → i)."""
    return not m[i, j] < 0.5


def _play(m: np.ndarray, asked: np.ndarray | None) -> tuple[list[Pair], tuple[int, int] | None]:
    """The bracket played as far as the asked matches allow (asked None: every match is known).

    Returns (matches to ask next, (y_w, y_l) or None). The two brackets advance level by level together:
    first round (0,1), (2,3), …; then the winners play among themselves (the winner advances) and the
    losers among themselves (the loser advances); then the final check y_w vs y_l, asked only if those
    two have not met already. A result is given only once nothing is left to ask."""
    pending: list[Pair] = []

    def level(players: list[int]) -> tuple[list[int], list[int]]:
        """(winners, losers) of the matches (players[0], players[1]), (players[2], players[3]), …"""
        ws, ls = [], []
        for a, b in zip(players[::2], players[1::2]):
            if asked is not None and not asked[a, b]:
                pending.append((a, b))
            w, l = (a, b) if first_wins(m, a, b) else (b, a)
            ws.append(w), ls.append(l)
        return ws, ls

    winners, losers = level(list(range(m.shape[0])))
    while len(winners) > 1 and not pending:
        winners, losers = level(winners)[0], level(losers)[1]
    if pending:
        return pending, None
    w, l = winners[0], losers[0]
    if asked is not None and not asked[w, l]:
        return [(w, l)], None
    return [], ((w, l) if m[w, l] > 0.5 else None)  # NaN > 0.5 is False: an abstained final drops the pair


def tournament(m: np.ndarray) -> tuple[int, int] | None:
    """(y_w, y_l) indices from the knockout bracket, or None when y_w does not beat y_l."""
    return _play(m, None)[1]


def bracket_pairs(m: np.ndarray, asked: np.ndarray) -> list[Pair]:
    """INPO's comparisons: the bracket's next matches for power-of-two K (3K/2 − 1 in all, fewer when the
    final is a rematch), the full matrix otherwise (best vs worst by win rate)."""
    return _play(m, asked)[0] if uses_tournament(m.shape[0]) else all_pairs(m, asked)


def tournament_pairs(judged: list[JudgedPrompt], ctx: PairContext) -> list[PreferencePair]:
    pairs = []
    for jp in judged:
        m = jp.array()
        picked = tournament(m)
        if picked is None:
            continue
        w, l = picked
        p = winrates(m)
        pairs.append(PreferencePair(prompt=jp.prompt, chosen=jp.responses[w], rejected=jp.responses[l],
                                    prompt_id=jp.prompt_id, chosen_winrate=float(p[w]),
                                    rejected_winrate=float(p[l]), target=1.0, round=ctx.round,
                                    chosen_idx=w, rejected_idx=l))
    return pairs


def make_pairs(judged: list[JudgedPrompt], ctx: PairContext) -> list[PreferencePair]:
    """Tournament for power-of-two K (mixed K per prompt is handled prompt by prompt), else best/worst."""
    bracket = [jp for jp in judged if uses_tournament(len(jp.responses))]
    other = [jp for jp in judged if not uses_tournament(len(jp.responses))]
    pairs = tournament_pairs(bracket, ctx) + best_worst_pairs(other, ctx)
    order = {jp.prompt_id: i for i, jp in enumerate(judged)}
    return sorted(pairs, key=lambda p: order[p.prompt_id])


# The judge is asked the bracket's matches only, one batched call per bracket level (log2 K + 1 calls).
COMPARISONS = Comparisons("inpo_bracket", bracket_pairs)


def _loss(t: PairTensors, cfg) -> "torch.Tensor":
    from selfplay.losses import inpo_loss
    ref_c, ref_r = t.refs["initial"]
    prev_c, prev_r = t.refs["previous"]
    return inpo_loss(t.policy_chosen, t.policy_rejected, ref_c, ref_r, prev_c, prev_r, cfg.eta, cfg.tau)


def reference(t: PairTensors, cfg) -> "torch.Tensor":
    """arXiv 2407.00617 Algorithm 1 / Eq. 8: (h − 1/(2η))² with h = log π(y_w)/π̃(y_w) − log π(y_l)/π̃(y_l)
    against π̃ = π_ref^{τ/η} π_t^{1−τ/η}."""
    (rc, rr), (vc, vr), w = t.refs["initial"], t.refs["previous"], cfg.tau / cfg.eta
    h = (t.policy_chosen - t.policy_rejected) - w * (rc - rr) - (1 - w) * (vc - vr)
    return (h - 1 / (2 * cfg.eta)) ** 2


ALGORITHM = Algorithm(loss_keys=("eta", "tau"), paper="arXiv 2407.00617", references=("initial", "previous"),
                      make_pairs=make_pairs, loss=_loss, reference=reference, comparisons=COMPARISONS)
