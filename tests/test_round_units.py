"""Unit tests of the round's pieces: arena oracle, seeded sampling, artifacts, SPPO pairs, log-probs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from judges.base import JudgeStats, cross_preferences, preference_matrices
from judges.oracle import OracleJudge
from selfplay import arena
from selfplay.artifacts import Manifest, atomic_dir, hash_dir, read_manifest, stable_hash
from selfplay.records import JudgedPrompt


def test_oracle_rules():
    p = "Tell me about the ocean."
    assert arena.assess(p, "wave tide coral").quality == 3.0
    assert arena.assess(p, "wave wave pine").quality == 1.0 - 0.5 - 1.0   # repeat and off-topic cost
    assert arena.assess(p, "boldly surely gently").style == "bold"
    assert arena.assess(p, "boldly gently").style is None                  # tie: no style
    # equal quality: style decides, rock-paper-scissors style
    bold, calm, witty = "wave boldly", "wave gently", "wave slyly"
    assert arena.oracle_probability(p, bold, calm) > 0.5
    assert arena.oracle_probability(p, calm, witty) > 0.5
    assert arena.oracle_probability(p, witty, bold) > 0.5               # intransitive
    for a, b in [(bold, calm), ("wave", "pine tide"), ("", "wave")]:
        assert arena.oracle_probability(p, a, b) + arena.oracle_probability(p, b, a) == pytest.approx(1.0)


def test_preference_matrix_is_complementary_with_half_diagonal():
    stats = JudgeStats()
    m = preference_matrices(OracleJudge(), ["Describe the forest."], [["pine moss", "wave", "pine", "owl boldly"]], stats)[0]
    assert np.allclose(np.diag(m), 0.5)
    assert np.allclose(m + m.T, 1.0)
    # the oracle is order-symmetric: each of the 6 unordered pairs is asked in one order only
    assert stats.pairs == 6 and stats.abstained == 0 and stats.order_disagreements == 0 and stats.both_orders == 0
    assert m[0, 1] == pytest.approx(arena.oracle_probability("Describe the forest.", "pine moss", "wave"))


class _BiasedJudge:
    """Always prefers the response in the first slot: position bias only."""
    name = "biased"
    order_symmetric = both_orders = False   # asked each order (judges.base.Judge's flags)
    independent_pairs = True

    def compare(self, prompts, a, b):
        return np.full(len(a), 0.9)


def test_both_orders_cancel_position_bias_and_are_counted():
    stats = JudgeStats()
    m = preference_matrices(_BiasedJudge(), ["x"], [["a", "b", "c"]], stats)[0]
    assert np.allclose(m, 0.5)
    assert stats.order_disagreements == stats.both_orders == 3
    cross = cross_preferences(_BiasedJudge(), ["x"], [["a", "b"]], [["c"]], JudgeStats())[0]
    assert np.allclose(cross, 0.5)


def test_sppo_pairs_use_win_rate_against_the_sample():
    from selfplay.algorithms import PairContext
    from selfplay.algorithms.sppo import best_worst_pairs
    m = np.array([[0.5, 0.9, 0.8], [0.1, 0.5, 0.4], [0.2, 0.6, 0.5]])
    jp = JudgedPrompt("p1", "x", ["A", "B", "C"], [1, 1, 1], m.tolist(), "t")
    (pair,) = best_worst_pairs([jp], PairContext(round=1, loss=None))
    assert (pair.chosen, pair.rejected) == ("A", "B")
    assert pair.chosen_winrate == pytest.approx((0.5 + 0.9 + 0.8) / 3)   # self-comparison ½ included
    assert pair.rejected_winrate == pytest.approx((0.1 + 0.5 + 0.4) / 3)
    tie = JudgedPrompt("p2", "x", ["A", "B"], [1, 1], [[0.5, 0.5], [0.5, 0.5]], "t")
    assert best_worst_pairs([tie], PairContext(round=1, loss=None)) == []


def test_atomic_dir_keeps_old_version_on_failure(tmp_path):
    out = tmp_path / "stage"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash mid-stage")
    assert (out / "a.txt").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]  # no temp dirs left behind


def test_manifest_round_trip_and_hash(tmp_path):
    (tmp_path / "f").write_text("x")
    h = hash_dir(tmp_path)
    Manifest("judge", stable_hash({"a": 1}), "c", {"seed": 0}, {}, output_hash=h).write(tmp_path)
    assert hash_dir(tmp_path) == h                 # the manifest itself is not hashed
    m = read_manifest(tmp_path)
    assert m.key == stable_hash({"a": 1}) and "torch" in m.packages
    (tmp_path / "manifest.json").write_text("{broken")
    assert read_manifest(tmp_path) is None         # corrupt = unfinished
    assert stable_hash({"b": 1, "a": 2}) == stable_hash({"a": 2, "b": 1})


@pytest.fixture(scope="module")
def policy_dir():
    from selfplay.data import resolve_builtin
    return resolve_builtin("builtin:arena")


def test_seeded_generation_does_not_depend_on_batching(policy_dir):
    from selfplay.generation import Request, SamplingSpec
    from selfplay.hf_backend import HFBackend
    b = HFBackend(policy_dir, batch_size=3)
    reqs = [Request("Tell me about the ocean.", 11), Request("Describe the city.", 12), Request("Describe the moss.", 13)]
    spec = SamplingSpec(n=3, max_new_tokens=16)
    first = b.generate(reqs, spec)
    b.batch_size = 7
    again = b.generate(list(reversed(reqs)), spec)[::-1]
    assert [[c.text for c in cs] for cs in first] == [[c.text for c in cs] for cs in again]
    assert len({c.text for c in first[0]}) > 1          # samples of one prompt differ
    other = b.generate([Request("Tell me about the ocean.", 99)], spec)[0]
    assert [c.text for c in other] != [c.text for c in first[0]]
    assert all(1 <= c.n_tokens <= 16 for cs in first for c in cs)


def test_sequence_logprobs_match_a_manual_sum(policy_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfplay.logprobs import encode_pairs, sequence_logprobs
    tok = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    prompts, responses = ["Describe the city."] * 2, ["tower street", "a"]
    lp = sequence_logprobs(model, tok, prompts, responses)
    ids, att, mask = encode_pairs(tok, prompts[:1], responses[:1])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].log_softmax(-1)
    manual = sum(logits[t - 1, ids[0, t]].item() for t in range(ids.shape[1]) if mask[0, t])
    assert lp[0].item() == pytest.approx(manual, abs=1e-4)
    assert int(mask[0].sum()) == len(tok("tower street", add_special_tokens=False).input_ids) + 1  # + end of turn
    avg = sequence_logprobs(model, tok, prompts, responses, average=True)
    assert avg[0].item() == pytest.approx(manual / int(mask[0].sum()), abs=1e-5)
