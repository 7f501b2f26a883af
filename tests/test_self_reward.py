"""Self-rewarding judge: the rubric, strict score parsing, sampled and log-prob scoring, and the pairs."""
from __future__ import annotations

import numpy as np
import pytest

from judges.registry import JudgeContext, build_judge
from judges.self_reward import (RUBRIC, SelfRewardJudge, build_self_reward_judge, parse_score, response_seed,
                                rubric_prompt, score_matrix)
from selfplay.algorithms import PairContext
from selfplay.algorithms.sppo import best_worst_pairs
from selfplay.config import ConfigError, JudgeConfig
from pipelines.config import load_config
from selfplay.generation import Completion
from selfplay.records import JudgedPrompt


@pytest.mark.parametrize("text,score", [
    ("The response is relevant and complete.\nScore: 4", 4.0),
    ("Score: 0", 0.0),
    ("Justification ... Score: 3.5", 3.5),
    ("score: 2", 2.0),
    ("Score: **5**", 5.0),
    ("Score: 4/5", 4.0),
    ("Score: 3 points.", 3.0),
    ("A weak reply would get Score: 1, but this one earns more.\nScore: 4", 4.0),   # the last one counts
])
def test_parse_score_accepts(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize("text", [
    "", "It is a good response.", "Score:", "Score: four", "Score: 7", "Score: 45", "Score: -1", "Score: 4/10",
    "Score: 4-5", "Score: 5%", "Score: 4 / 10", "Total: 4",
    "Score: 4\nOn reflection the final Score: N/A",
])
def test_parse_score_rejects(text):
    assert parse_score(text) is None


def test_rubric_is_the_papers_additive_five_point_prompt():
    p = rubric_prompt("How do I boil an egg?", "Put it in boiling water for 8 minutes.")
    assert "User: How do I boil an egg?" in p
    assert "<response>Put it in boiling water for 8 minutes.</response>" in p
    assert "additive 5-point scoring system" in p and "up to 100 words" in p and '"Score: <total points>"' in p
    for phrase in ("Add 1 point", "Add another point", "Award a third point", "Grant a fourth point",
                   "Bestow a fifth point"):
        assert RUBRIC.count(phrase) == 1


def test_score_matrix_and_pairs_are_highest_vs_lowest():
    m = score_matrix(np.array([3.0, 5.0, 1.0, 3.0]))
    assert np.allclose(np.diag(m), 0.5) and np.allclose(m + m.T, 1.0)
    assert m[1, 0] == 1.0 and m[2, 0] == 0.0 and m[0, 3] == 0.5
    nan = score_matrix(np.array([2.0, np.nan, 4.0]))
    assert np.isnan(nan[0, 1]) and np.isnan(nan[1, 2]) and nan[1, 1] == 0.5 and nan[2, 0] == 1.0

    def pair(scores):
        jp = JudgedPrompt("p", "x", [f"r{i}" for i in range(len(scores))], [1] * len(scores),
                          score_matrix(np.array(scores)).tolist(), "self_reward")
        return best_worst_pairs([jp], PairContext(round=1, loss=None))

    (p,) = pair([3.0, 5.0, 1.0, 3.0])
    assert (p.chosen, p.rejected) == ("r1", "r2")               # highest vs lowest score
    (p,) = pair([np.nan, 2.0, 4.5, 2.0])
    assert (p.chosen, p.rejected) == ("r2", "r1")               # an unscored response is never picked
    assert pair([3.0, 3.0, 3.0]) == []                          # equal scores: dropped, as in the paper
    assert pair([np.nan, 4.0, 4.0]) == [] and pair([np.nan, np.nan]) == []


class FakeBackend:
    """Stands in for the generation backend: a scripted judge text per (request, sample)."""

    def __init__(self, script):
        self.script, self.requests, self.spec = script, [], None

    def generate(self, requests, spec):
        self.requests += list(requests)
        self.spec = spec
        return [[Completion(self.script(r.prompt, j), 5, True) for j in range(spec.n)] for r in requests]

    def close(self):
        pass


def test_sample_mode_averages_parsed_samples_and_counts_failures():
    def script(prompt, j):
        if "<response>great</response>" in prompt:
            return ["Relevant and expert.\nScore: 5", "Score: 4", "Score: 4.5"][j]
        if "<response>meh</response>" in prompt:
            return ["Score: 2", "no idea", "Score: 11"][j]      # two parse failures out of three
        return "I refuse to grade this."                       # every sample fails
    j = SelfRewardJudge("unused", mode="sample", samples=3, seed=7)
    j._model = fake = FakeBackend(script)
    s = j.score(["q", "q", "q", "q"], ["great", "meh", "junk", "great"])
    assert s[0] == pytest.approx(4.5) and s[1] == 2.0 and np.isnan(s[2]) and s[3] == s[0]
    assert len(fake.requests) == 3                               # identical (prompt, response) scored once
    assert fake.spec.n == 3 and fake.spec.temperature == 0.7 and fake.spec.top_p == 0.9
    assert [r.seed for r in fake.requests] == [response_seed(7, "q", r) for r in ("great", "meh", "junk")]
    assert len({r.seed for r in fake.requests}) == 3 and response_seed(7, "q", "meh") != response_seed(8, "q", "meh")
    d = j.diagnostics()
    assert d["responses_scored"] == 3 and d["samples"] == 9 and d["parse_failures"] == 5
    assert d["parse_failure_rate"] == pytest.approx(5 / 9) and d["unscored_responses"] == 1
    m = j.matrices(["q"], [["great", "meh", "junk"]])[0]
    assert m[0, 1] == 1.0 and np.isnan(m[0, 2]) and np.isnan(m[2, 1])
    assert j.compare(["q", "q"], ["meh", "junk"], ["great", "great"]).tolist()[0] == 0.0


@pytest.fixture(scope="module")
def arena_policy():
    from selfplay.data import resolve_builtin
    return resolve_builtin("builtin:arena")


def test_logprobs_mode_is_the_expected_digit_on_the_tiny_policy(arena_policy):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    judge = build_self_reward_judge(JudgeConfig(name="self_reward", score_mode="logprobs", batch_size=4),
                                    JudgeContext(policy=arena_policy, seed=1))
    prompts = ["Describe the forest for a child."] * 3 + ["Explain the ocean."]
    responses = ["trees moss leaves", "boldly surely", "", "waves salt"]
    s = judge.score(prompts, responses)
    assert np.isfinite(s).all() and ((0 <= s) & (s <= 5)).all()
    d = judge.diagnostics()
    assert d["parse_failures"] == 0 and d["samples"] == 4 and d["score_mode"] == "logprobs"
    # by hand: one unpadded forward pass, softmax over the six digit tokens after "Score: "
    tok = AutoTokenizer.from_pretrained(arena_policy)
    model = AutoModelForCausalLM.from_pretrained(arena_policy).eval()
    head = tok.apply_chat_template([{"role": "user", "content": rubric_prompt(prompts[0], responses[0])}],
                                   tokenize=False, add_generation_prompt=True) + "Score: "
    ids = tok(head, add_special_tokens=False).input_ids
    digits = [tok(head + str(k), add_special_tokens=False).input_ids[-1] for k in range(6)]
    with torch.no_grad():
        lp = model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)[digits]
    assert s[0] == pytest.approx(float((lp.softmax(-1) * torch.arange(6.0)).sum()), abs=1e-4)
    mats = judge.matrices(prompts[:3], [responses[:3]])
    assert np.isfinite(mats[0]).all()
    judge.close()


def test_sample_mode_on_the_tiny_policy_counts_parse_failures(arena_policy):
    judge = build_judge("self_reward", JudgeConfig(name="self_reward", samples=2, max_new_tokens=6),
                        JudgeContext(policy=arena_policy, seed=0))
    s = judge.score(["Describe the forest for a child."] * 2, ["trees moss", "boldly"])
    d = judge.diagnostics()
    assert d["samples"] == 4 and d["responses_scored"] == 2
    # the tiny arena model cannot write "Score: N": a response with no parsed sample is NaN, never 0
    assert d["unscored_responses"] == int(np.isnan(s).sum()) and d["parse_failures"] >= 2 * d["unscored_responses"]
    assert all(np.isnan(x) or 0 <= x <= 5 for x in s)
    judge.close()


def test_config_validates_score_mode_and_samples():
    assert load_config(None, ["judge.name=self_reward", "judge.score_mode=logprobs"]).judge.score_mode == "logprobs"
    with pytest.raises(ConfigError, match="judge.score_mode"):
        load_config(None, ["judge.score_mode=vote"])
    with pytest.raises(ConfigError, match="judge.samples"):
        load_config(None, ["judge.samples=0"])
    with pytest.raises(ConfigError, match="judge.temperature"):
        load_config(None, ["judge.temperature=0"])
    with pytest.raises(ConfigError, match="^eval_judge.score_mode"):
        load_config(None, ["eval_judge.score_mode=vote"])
    with pytest.raises(ConfigError, match="^eval_judge.temperature"):
        load_config(None, ["eval_judge.name=self_reward", "eval_judge.temperature=.nan"])
