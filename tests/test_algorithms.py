"""Pair rules and loss wiring of every round algorithm, on hand-made matrices with known answers."""
import numpy as np
import pytest
import torch

from selfplay.algorithms import ALGORITHMS, PairContext, PairTensors, get_algorithm
from selfplay.algorithms import dno, egpo, inpo
from selfplay.config import LossConfig
from selfplay.losses import dpo_loss, egpo_loss, inpo_loss, ipo_loss, sppo_loss
from selfplay.records import JudgedPrompt, PreferencePair


def judged(m, pid="p0", prompt="Describe the ocean."):
    m = np.asarray(m, dtype=float)
    return JudgedPrompt(pid, prompt, [f"r{i}" for i in range(len(m))], [1] * len(m), m.tolist(), "test")


def from_wins(k, wins, base=0.8):
    """K×K matrix where the lower index wins (P = base) except for the (winner, loser) overrides."""
    m = np.full((k, k), 0.5)
    for i in range(k):
        for j in range(i + 1, k):
            m[i, j], m[j, i] = base, 1 - base
    for w, l in wins:
        m[w, l], m[l, w] = base, 1 - base
    return m


def bt(scores):
    """Transitive matrix σ(s_i − s_j): best and worst are argmax and argmin of the scores."""
    s = np.asarray(scores, dtype=float)
    return 1 / (1 + np.exp(-(s[:, None] - s[None, :])))


def ctx(round_=1, **loss):
    return PairContext(round=round_, loss=LossConfig(**loss), seed=0)


def test_registry_lists_every_algorithm():
    """The registry is the folder: every module of selfplay/algorithms/ is the algorithm of its name."""
    import pkgutil

    import selfplay.algorithms
    modules = {m.name for m in pkgutil.iter_modules(selfplay.algorithms.__path__)}
    assert set(ALGORITHMS) == modules >= {"sppo", "inpo", "dno", "egpo", "apo", "dpo", "ipo", "nash_md"}
    assert all(a.name == name for name, a in ALGORITHMS.items())
    assert get_algorithm("egpo").update is not None and get_algorithm("nash_md").update is not None
    assert all(get_algorithm(n).update is None for n in ("sppo", "inpo", "dno", "apo", "dpo", "ipo"))
    assert get_algorithm("inpo").references == ("initial", "previous")
    assert get_algorithm("apo").references == ("previous", "previous2")
    assert get_algorithm("egpo").references == ("initial",)
    assert get_algorithm("nash_md").references == ("initial",)


# ---- INPO: the knockout tournament (arXiv 2407.00617 §4.1, spec §2.1) -----------------------------

# First round: 1>0, 2>3, 5>4, 6>7. Winners: 2>1, 5>6, final 5>2 -> y_w = 5.
# Losers (the loser advances): 3>0 so 0 advances, 4>7 so 7 advances, 0>7 -> y_l = 7. Check: 5>7.
BRACKET = [(1, 0), (5, 4), (2, 1), (5, 2), (3, 0)]
MATCHES = {(0, 1), (2, 3), (4, 5), (6, 7), (1, 2), (5, 6), (2, 5), (0, 3), (4, 7), (0, 7), (5, 7)}


def test_tournament_picks_the_bracket_winner_and_loser():
    m = from_wins(8, BRACKET)
    assert inpo.tournament(m) == (5, 7)
    assert len(MATCHES) == 11                                   # the paper's comparison count for K = 8
    # best/worst by win rate would pick differently: the bracket is not an argmax
    p = m.mean(1)
    assert (int(p.argmax()), int(p.argmin())) != (5, 7)


def test_tournament_reads_only_the_eleven_matches():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.uniform(size=(8, 8))
        m = np.triu(m, 1) + np.tril(1 - m.T, -1) + np.eye(8) / 2
        ref = from_wins(8, BRACKET)
        for i, j in MATCHES:
            m[i, j], m[j, i] = ref[i, j], ref[j, i]
        assert inpo.tournament(m) == (5, 7)


def test_tournament_ties_go_to_the_first_and_the_final_needs_a_strict_win():
    assert inpo.tournament(np.full((8, 8), 0.5)) is None        # w = 0, l = 7, tied final -> dropped
    m = np.full((8, 8), 0.5)
    m[0, 7], m[7, 0] = 0.9, 0.1
    assert inpo.tournament(m) == (0, 7)
    m = from_wins(8, BRACKET + [(7, 5)])                       # y_w loses the final check
    assert inpo.tournament(m) is None
    m = from_wins(8, BRACKET)
    m[5, 7] = m[7, 5] = np.nan                                  # abstained final check
    assert inpo.tournament(m) is None


def test_inpo_pairs_by_k():
    four = from_wins(4, [(1, 0), (3, 2), (3, 1)])               # winners 1, 3 -> 3; losers 0, 2 -> 2 (0>2)
    assert inpo.tournament(four) == (3, 2)
    five = bt([0, 1, 3, -2, 0.5])                               # not a power of two: best/worst win rate
    pairs = inpo.make_pairs([judged(five, "b"), judged(from_wins(8, BRACKET), "a")], ctx())
    assert [(p.prompt_id, p.chosen_idx, p.rejected_idx) for p in pairs] == [("b", 2, 3), ("a", 5, 7)]
    assert all(p.target == 1.0 for p in pairs)
    assert inpo.uses_tournament(8) and inpo.uses_tournament(4) and not inpo.uses_tournament(5)


# ---- DNO: score-based large-margin pairs and replay (arXiv 2404.03715 §5.1, Alg. 2; more in tests/test_dno.py) ----

def scored(scores, pid="p0", teacher_idx=-1):
    """A judged prompt with absolute scores (what judge.mode=rubric or the oracle writes)."""
    from judges.self_reward import score_matrix
    s = np.asarray(scores, dtype=float)
    return JudgedPrompt(pid, "Describe the ocean.", [f"r{i}" for i in range(len(s))], [1] * len(s),
                        score_matrix(s).tolist(), "test", scores=s.tolist(), teacher_idx=teacher_idx)


def test_dno_pairs_from_scores_as_published():
    # 6-point rubric, teacher at index 3: positives score >= 5; teacher positive needs 2 points, student 1
    pairs = dno.make_pairs([scored([5, 4, 2, 5], teacher_idx=3)], ctx())
    assert {(p.chosen_idx, p.rejected_idx) for p in pairs} == {(0, 1), (0, 2), (3, 2)}   # not (3, 1): 1 < 2
    assert all(p.target == 1.0 and p.round == 1 and p.chosen_winrate > p.rejected_winrate for p in pairs)
    assert dno.make_pairs([scored([4, 3, 1])], ctx()) == []               # no positive: nothing
    assert dno.make_pairs([scored([5, 5, 5])], ctx()) == []               # all tied: nothing


def test_dno_refuses_judgments_without_scores():
    with pytest.raises(ValueError, match="needs a score per response"):
        dno.make_pairs([judged([[0.5, 0.9], [0.1, 0.5]])], ctx())


def _save_pairs(path, round_, n, replayed=0):
    import datasets
    from selfplay.records import pair_to_row
    rows = [PreferencePair("x", f"c{round_}_{i}", "r", f"p{round_}_{i}", 0.8, 0.2, round=round_) for i in range(n)]
    rows += [PreferencePair("x", f"old{i}", "r", f"q{i}", 0.8, 0.2, round=round_ - 1) for i in range(replayed)]
    datasets.Dataset.from_list([pair_to_row(p) for p in rows]).save_to_disk(str(path))   # what stages.preferences writes
    return path


def test_dno_replay_fractions_are_halved_per_round_and_deterministic(tmp_path):
    assert dno.replay_fraction(0.3, 1) == 0.3 and dno.replay_fraction(0.3, 2) == 0.15
    earlier = (_save_pairs(tmp_path / "r1", 1, 20), _save_pairs(tmp_path / "r2", 2, 10, replayed=4))
    c = PairContext(round=3, loss=LossConfig(dno_replay=0.3), earlier_preferences=earlier, seed=0)
    fresh = dno.make_pairs([scored([6, 2])], c)
    replayed = fresh[1:]
    assert fresh[0].round == 3
    assert sum(p.round == 2 for p in replayed) == 3             # 30% of round 2's own 10 pairs
    assert sum(p.round == 1 for p in replayed) == 3             # 15% of round 1's 20 (not its replays)
    assert not any(p.chosen.startswith("old") for p in replayed)
    assert dno.make_pairs([scored([6, 2])], c) == fresh
    other = PairContext(round=3, loss=c.loss, earlier_preferences=earlier, seed=1)
    assert dno.make_pairs([scored([6, 2])], other) != fresh
    no_replay = PairContext(round=3, loss=LossConfig(dno_replay=0.0), earlier_preferences=earlier)
    assert len(dno.make_pairs([scored([6, 2])], no_replay)) == 1


# ---- EGPO: P(a ≻ y″), P(b ≻ y″) from the matrix (spec §4.4) --------------------------------------

def test_egpo_prefs_against_the_other_samples():
    m = np.array([[0.5, 0.3, 0.6, 0.8],
                  [0.7, 0.5, 0.9, 0.7],
                  [0.4, 0.1, 0.5, 0.2],
                  [0.2, 0.3, 0.8, 0.5]])
    pairs = egpo.make_pairs([judged(m)], ctx())
    got = [(p.chosen_idx, p.rejected_idx, p.chosen_winrate, p.rejected_winrate) for p in pairs]
    # (0,1) vs y″ ∈ {2,3}: P(0≻·) = 0.7, P(1≻·) = 0.8 -> chosen 1. (2,3) vs {0,1}: 0.25, 0.25
    assert got == [(1, 0, pytest.approx(0.8), pytest.approx(0.7)), (2, 3, pytest.approx(0.25), pytest.approx(0.25))]


def test_egpo_k2_uses_the_reduced_variance_target_and_odd_k_keeps_the_last_as_opponent():
    [p] = egpo.make_pairs([judged([[0.5, 0.2], [0.8, 0.5]])], ctx())
    assert (p.chosen_idx, p.chosen_winrate, p.rejected_winrate) == (1, pytest.approx(0.65), pytest.approx(0.35))
    m3 = np.array([[0.5, 0.5, 0.9], [0.5, 0.5, 0.3], [0.1, 0.7, 0.5]])
    [p] = egpo.make_pairs([judged(m3)], ctx())
    assert (p.chosen_idx, p.rejected_idx, p.chosen_winrate, p.rejected_winrate) == (0, 1, 0.9, 0.3)


# ---- Loss wiring ---------------------------------------------------------------------------------

def tensors(seed=0, b=6):
    g = torch.Generator().manual_seed(seed)
    r = lambda: -5 * torch.rand(b, generator=g)  # noqa: E731
    refs = {k: (r(), r()) for k in ("previous", "initial", "previous2")}
    return PairTensors(r(), r(), refs, torch.rand(b, generator=g), torch.rand(b, generator=g), torch.rand(b, generator=g))


def test_apo_with_alpha_zero_is_iterative_sppo_and_dpo():
    t, apo = tensors(), get_algorithm("apo")
    prev = t.refs["previous"]
    for base, algo, cfg in [("sppo", "sppo", LossConfig(alpha=0.0, eta=7.0)),
                            ("dpo", "dpo", LossConfig(alpha=0.0, apo_base="dpo", beta=0.3, label_smoothing=0.1))]:
        assert torch.equal(apo.loss(t, cfg), get_algorithm(algo).loss(t, cfg))
    cfg = LossConfig(alpha=0.5, eta=7.0)
    old = t.refs["previous2"]
    want = sppo_loss(t.policy_chosen, t.policy_rejected, 1.5 * prev[0] - 0.5 * old[0], 1.5 * prev[1] - 0.5 * old[1],
                     t.chosen_winrate, t.rejected_winrate, 7.0)
    assert torch.allclose(apo.loss(t, cfg), want)
    assert not torch.allclose(apo.loss(t, cfg), get_algorithm("sppo").loss(t, cfg))


def test_each_algorithm_feeds_its_loss_the_right_references():
    t, cfg = tensors(1), LossConfig(eta=0.2, tau=0.05, beta=0.25, label_smoothing=0.1)
    pc, pr = t.policy_chosen, t.policy_rejected
    (ic, ir), (vc, vr) = t.refs["initial"], t.refs["previous"]
    cases = {
        "inpo": inpo_loss(pc, pr, ic, ir, vc, vr, 0.2, 0.05),
        "dno": -(t.target * torch.nn.functional.logsigmoid(0.25 * ((pc - vc) - (pr - vr)))
                 + (1 - t.target) * torch.nn.functional.logsigmoid(-0.25 * ((pc - vc) - (pr - vr)))),
        "egpo": egpo_loss(pc, pr, ic, ir, t.chosen_winrate, t.rejected_winrate, 0.25),
        "dpo": dpo_loss(pc, pr, vc, vr, 0.25, 1 - t.target * 0.9),   # per-pair soft label (CREAM's C)
        "ipo": ipo_loss(pc, pr, vc, vr, 0.25),
    }
    for name, want in cases.items():
        assert torch.allclose(get_algorithm(name).loss(t, cfg), want), name


def test_dpo_and_ipo_use_best_worst_pairs():
    m = bt([0, 1, 3, -2, 0.5])
    for name in ("dpo", "ipo", "apo"):
        [p] = get_algorithm(name).make_pairs([judged(m)], ctx())
        assert (p.chosen_idx, p.rejected_idx) == (2, 3), name
