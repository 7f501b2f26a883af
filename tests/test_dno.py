"""DNO-Prct's pairs as published (arXiv 2404.03715v1 §5.1, App. C): absolute rubric scores, a teacher
candidate, positives that score well, margins compared with a tolerance; the rubric judge against a
fake OpenAI-compatible endpoint, through the real judge stage, down to the pairs."""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from judges.self_reward import score_matrix
from selfplay.algorithms import PairContext, dno
from selfplay.config import ConfigError, LossConfig
from pipelines.config import load_config
from selfplay.records import Generation, JudgedPrompt, from_rows, to_rows


def scored(scores, teacher_idx=-1, responses=None):
    s = np.asarray(scores, dtype=float)
    rs = responses or [f"r{i}" for i in range(len(s))]
    return JudgedPrompt("p0", "q", rs, [1] * len(s), score_matrix(s).tolist(), "test", scores=s.tolist(),
                        teacher_idx=teacher_idx)


def pairs_of(jp, **loss):
    return {(p.chosen_idx, p.rejected_idx) for p in dno.make_pairs([jp], PairContext(round=1, loss=LossConfig(**loss)))}


# ---- the pair rule ------------------------------------------------------------------------------

def test_margin_is_compared_with_a_tolerance():
    assert 0.7 - 0.4 < 0.3 <= 0.8 - 0.5             # what float rounding did to the old strict rule
    loose = dict(dno_min_chosen_score=0.0, dno_student_margin=0.3, dno_margin=0.3)
    assert pairs_of(scored([0.7, 0.4]), **loose) == {(0, 1)}
    assert pairs_of(scored([0.8, 0.5]), **loose) == {(0, 1)}
    assert pairs_of(scored([0.7, 0.4], teacher_idx=0), **loose) == {(0, 1)}    # the teacher's margin too
    assert pairs_of(scored([0.7, 0.41]), **loose) == set()                      # a real shortfall still drops
    assert pairs_of(scored([5, 3.001]), dno_student_margin=2) == set()
    # the paper's integer rubric: exactly 1 (student) / 2 (teacher) points lower is enough
    assert pairs_of(scored([5, 4])) == {(0, 1)}
    assert pairs_of(scored([6, 4], teacher_idx=0)) == {(0, 1)}


def test_chosen_must_score_well():
    assert pairs_of(scored([4, 1, 0])) == set()                     # a big gap, but no positive (5 or 6)
    assert pairs_of(scored([5, 1, 0])) == {(0, 1), (0, 2)}
    assert pairs_of(scored([6, 5, 3])) == {(0, 1), (0, 2), (1, 2)}  # every positive pairs with every negative
    # the threshold is compared with the same tolerance: 1.1 − 0.4 is 0.7000000000000001, 0.3 − 0.1 is 0.19999…
    assert pairs_of(scored([0.3 - 0.1, -5]), dno_min_chosen_score=0.2) == {(0, 1)}
    assert pairs_of(scored([0.19, -5]), dno_min_chosen_score=0.2) == set()


def test_ties_nan_and_duplicates_never_pair():
    assert pairs_of(scored([5, 5]), dno_student_margin=0.0) == set()               # margin 0: strictly better only
    assert pairs_of(scored([6, np.nan, 3])) == {(0, 2)}                             # an abstention is left out
    assert pairs_of(scored([np.nan, 1])) == set()
    assert pairs_of(scored([6, 2], responses=["same", "same"])) == set()           # one text scored twice


def test_teacher_margin_and_student_margin():
    # teacher (idx 2) at 5: needs a 2-point gap; students at 5 need 1 point; student ≻ teacher allowed
    jp = scored([5, 4, 5, 3], teacher_idx=2)
    assert pairs_of(jp) == {(0, 1), (0, 3), (2, 3)}         # (2, 1): gap 1 < 2 for the teacher
    jp = scored([6, 5, 2], teacher_idx=1)
    assert pairs_of(jp) == {(0, 1), (0, 2), (1, 2)}         # student ≻ teacher (6 vs 5), teacher ≻ student


def test_config_keys_and_judges():
    cfg = load_config("configs/arena_dno.yaml")
    assert cfg.loss.dno_min_chosen_score == -1.0 and cfg.judge.name == "oracle"
    with pytest.raises(ConfigError, match="absolute scores"):
        load_config("configs/arena_dno.yaml", ["judge.name=pairrm"])
    with pytest.raises(ConfigError, match="absolute scores"):
        load_config("configs/arena_dno.yaml", ["judge.name=llm", "judge.model=m", "judge.endpoint=http://127.0.0.1:1"])
    with pytest.raises(ConfigError, match="dno_student_margin"):
        load_config("configs/arena_dno.yaml", ["loss.dno_student_margin=-1"])
    with pytest.raises(ConfigError, match="dno_min_chosen_score=4.0 has no effect with algorithm sppo"):
        load_config("configs/arena_sppo.yaml", ["loss.dno_min_chosen_score=4"])
    with pytest.raises(ConfigError, match="teacher_column"):
        load_config("configs/arena_sppo.yaml", ["data.teacher_column=gold"])
    paper = load_config("configs/paper/dno_orca25_mistral7b.yaml")
    assert (paper.judge.mode, paper.eval_judge.mode, paper.data.teacher_column) == ("rubric", "pairwise", "chosen")
    assert (paper.loss.dno_min_chosen_score, paper.loss.dno_margin, paper.loss.dno_student_margin) == (5, 2, 1)


# ---- the teacher: loaded from the prompt source, judged, and choosable ------------------------------

def _source(tmp_path, gold):
    """A jsonl prompt source with a gold column, and round 1's generations (K = 3) for it."""
    import datasets
    from selfplay.assets import arena_prompts

    prompts = arena_prompts("train")[:4]
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt_id": p["prompt_id"], "prompt": p["prompt"], "gold": gold(p)}) + "\n"
                           for p in prompts))
    gens = [Generation(p["prompt_id"], p["prompt"], j, 0, text, 3, True, 1)
            for p in prompts for j, text in enumerate(["the the the", "a very", "of some"])]
    datasets.Dataset.from_list(to_rows(gens)).save_to_disk(str(tmp_path / "generations"))
    return src, prompts


def _topic_words(prompt: str) -> str:
    from selfplay.arena import TOPICS, prompt_topic
    return " ".join(TOPICS[prompt_topic(prompt)][:6])


def _judge_stage(tmp_path, cfg, ctx=None):
    import datasets
    from judges.registry import JudgeContext
    from pipelines import stages

    summary = stages.judge(tmp_path / "generations", cfg, ctx or JudgeContext(), tmp_path / "judgments")
    return summary, from_rows(JudgedPrompt, datasets.load_from_disk(str(tmp_path / "judgments")).to_list())


def test_teacher_is_a_candidate_and_can_be_chosen(tmp_path):
    # ultrafeedback_binarized's `chosen` is a message list [user, assistant]: the assistant turn is the teacher
    src, prompts = _source(tmp_path, lambda p: [{"role": "user", "content": p["prompt"]},
                                               {"role": "assistant", "content": _topic_words(p["prompt"])}])
    cfg = load_config("configs/arena_dno.yaml", [f"data.train_prompts={src}", "data.teacher_column=gold",
                                                 "data.prompts_per_round=4"])
    summary, judged = _judge_stage(tmp_path, cfg)
    assert summary["teacher_responses"] == 4
    for jp, p in zip(judged, prompts):
        assert len(jp.responses) == 4 and jp.teacher_idx == 3 and jp.n_tokens[3] == -1
        assert jp.responses[3] == _topic_words(p["prompt"])
        assert jp.scores[3] == 6.0 and max(jp.scores[:3]) <= 0         # the oracle's quality, teacher included
        assert np.asarray(jp.matrix).shape == (4, 4)
    pairs = dno.make_pairs(judged, PairContext(round=1, loss=cfg.loss))
    assert pairs and all(p.chosen_idx == 3 for p in pairs)              # only the teacher is good enough
    assert {p.chosen for p in pairs} == {_topic_words(p["prompt"]) for p in prompts}


def test_no_teacher_column_in_the_source_is_an_error(tmp_path):
    from selfplay.data import DataError
    src, _ = _source(tmp_path, lambda p: "x")
    cfg = load_config("configs/arena_dno.yaml", [f"data.train_prompts={src}", "data.teacher_column=missing",
                                                 "data.prompts_per_round=4"])
    with pytest.raises(DataError, match="no column 'missing'"):
        _judge_stage(tmp_path, cfg)


def test_teacher_cells():
    from selfplay.data import DataError
    from selfplay.teacher import teacher_text
    assert teacher_text("gold") == "gold" and teacher_text(None) == "" and teacher_text([]) == ""
    assert teacher_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == "a"
    with pytest.raises(DataError):
        teacher_text([{"role": "user", "content": "q"}])
    with pytest.raises(DataError):
        teacher_text(3)


# ---- the rubric judge against a fake endpoint, through the judge stage ------------------------------

class _Rubric(BaseHTTPRequestHandler):
    """Scores each candidate block <idX>...</idX> by the number N in its text "answer N" (fixed scores),
    and answers in the paper's dictionary format, continuing the dict the prompt opened."""
    seen: list[dict] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Rubric.seen.append(body)
        prompt = body["messages"][0]["content"]
        blocks = re.findall(r"<id(\d+)>\n(.*?)\n</id\1>", prompt, re.S)
        entries = []
        for k, text in blocks:
            m = re.search(r"answer (\d)", text)
            entries.append(f'"id{k}_justification": "fine", "id{k}_score": {m.group(1)}' if m else
                           f'"id{k}_justification": "cannot tell"')                 # no score: garbage for it
        full = "{" + ", ".join(entries) + "}"
        opened = '{"id1_justification":'
        content = full[len(opened):] if full.startswith(opened) else full   # continue the dict the prompt opened
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture(scope="module")
def rubric_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Rubric)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_rubric_judge_scores_give_the_expected_pairs(tmp_path, rubric_server):
    import datasets
    from selfplay.assets import arena_prompts

    prompts = arena_prompts("train")[:2]
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt_id": p["prompt_id"], "prompt": p["prompt"],
                                       "gold": "teacher answer 5"}) + "\n" for p in prompts))
    samples = {prompts[0]["prompt_id"]: ["s answer 6", "s answer 4", "s answer 2"],
               prompts[1]["prompt_id"]: ["s answer 3", "no score here", "s answer 4"]}
    gens = [Generation(p["prompt_id"], p["prompt"], j, 0, t, 3, True, 1)
            for p in prompts for j, t in enumerate(samples[p["prompt_id"]])]
    datasets.Dataset.from_list(to_rows(gens)).save_to_disk(str(tmp_path / "generations"))
    cfg = load_config("configs/arena_dno.yaml", [
        f"data.train_prompts={src}", "data.teacher_column=gold", "data.prompts_per_round=2",
        "judge.name=llm", "judge.mode=rubric", "judge.model=gpt-4-turbo", f"judge.endpoint={rubric_server}",
        "eval_judge.name=oracle", "loss.dno_min_chosen_score=5", "loss.dno_margin=2", "loss.dno_student_margin=1"])
    _Rubric.seen.clear()
    summary, judged = _judge_stage(tmp_path, cfg)
    assert len(_Rubric.seen) == 2                                # one side-by-side request per prompt
    body = _Rubric.seen[0]
    assert "logprobs" not in body and body["max_tokens"] == 4 * 256 and body["temperature"] == 0.0
    assert body["messages"][0]["content"].rstrip().endswith('{"id1_justification" :')
    a, b = judged
    assert a.scores == [6, 4, 2, 5] and a.teacher_idx == 3        # mapped back through the display order
    assert np.isnan(b.scores[1]) and [b.scores[i] for i in (0, 2, 3)] == [3, 4, 5]   # garbage: NaN, never 0
    assert summary["unscored_responses"] == 1 and summary["requests"] == 2
    assert a.matrix[0][3] == 1.0 and a.matrix[3][1] == 1.0 and np.isnan(b.matrix[1][0])
    pairs = dno.make_pairs(judged, PairContext(round=1, loss=cfg.loss))
    got = {(p.prompt_id, p.chosen, p.rejected) for p in pairs}
    pa, pb = prompts[0]["prompt_id"], prompts[1]["prompt_id"]
    assert got == {(pa, "s answer 6", "s answer 4"), (pa, "s answer 6", "s answer 2"),
                   (pa, "s answer 6", "teacher answer 5"),                # student ≻ teacher, 1 point
                   (pa, "teacher answer 5", "s answer 2"),                # teacher ≻ student needs 2 points
                   (pb, "teacher answer 5", "s answer 3")}                # not ≻ "s answer 4" (1 < 2), not the NaN
