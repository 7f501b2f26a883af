"""SPPO's inputs as its authors' code builds them (uclaml/SPPO at 5e61c4e, research notes §1):

* the trainer's truncation of a pair (sppo/trainer.py tokenize_row, with the recipe's max_length 1024 and
  max_prompt_length 512): when the prompt plus the pair's longer response exceed max_length, the prompt
  keeps its last max_prompt_length tokens, and if still too long both responses their first
  max_length − max_prompt_length (model.max_prompt_length; 0 keeps (prompt + response)[:max_length]);
* PairRM's prompt (scripts/rank.py): the policy's chat-templated user turn, not the raw prompt
  (judge.prompt_format: chat).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from selfplay.config import Config, LossConfig, ModelConfig, TrainConfig
from selfplay.logprobs import _group_logprobs, _pad, encode, sequence_logprobs
from selfplay.records import PreferencePair

M, P = 64, 20                      # model.max_length, model.max_prompt_length (the tiny tokenizer: prompt 53 ids,
                                   # SHORT 7, LONG 55 with the end of turn)
PROMPT = "tell me about the ocean wave tide coral forest pine moss owl river stone"
SHORT, LONG = "owl river", " ".join(["ocean wave tide coral forest pine moss"] * 3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from fixtures_policy import build_tiny_policy
    return build_tiny_policy(tmp_path_factory.mktemp("tiny_sppo_inputs"))


@pytest.fixture(scope="module")
def tok(tiny):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny)


def _ids(tok, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """The untruncated chat-templated prompt ids and response + end-of-turn ids."""
    head = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return tok(head, add_special_tokens=False).input_ids, tok(response, add_special_tokens=False).input_ids + [tok.eos_token_id]


def test_a_long_pair_keeps_the_prompts_end_then_the_responses_start(tok):
    h, s = _ids(tok, PROMPT, SHORT)
    _, g = _ids(tok, PROMPT, LONG)
    assert len(h) > P and len(h) + len(s) <= M < len(h) + len(g) and P + len(g) > M   # the case the rule is for
    rows = encode(tok, [PROMPT] * 2, [SHORT, LONG], M, P, paired=True)
    # the longer response (the rejected one) decides for both rows: each keeps the prompt's last P ids, and the
    # responses their first M − P (the short one is shorter than that already)
    assert rows == [(h[-P:] + s, P), (h[-P:] + g[:M - P], P)]
    # each row its own pair: the short response's prompt fits, so it stays whole
    assert encode(tok, [PROMPT] * 2, [SHORT, LONG], M, P)[0] == (h + s, len(h))
    # max_prompt_length 0: the first max_length ids of prompt + response, as before
    assert encode(tok, [PROMPT] * 2, [SHORT, LONG], M) == [((h + s)[:M], len(h)), ((h + g)[:M], len(h))]


def test_a_pair_that_fits_is_not_cut_and_a_prompt_alone_may_be(tok):
    h, s = _ids(tok, PROMPT, SHORT)
    assert encode(tok, [PROMPT] * 2, [SHORT, SHORT], M, P, paired=True) == [(h + s, len(h))] * 2
    # over max_length on the prompt alone: the last P ids are kept (its end, where the question usually is)
    rows = encode(tok, [PROMPT], [SHORT], len(h) - 1, P)
    assert rows == [(h[-P:] + s, P)]
    with pytest.raises(ValueError, match="even count"):
        encode(tok, [PROMPT] * 3, [SHORT] * 3, M, P, paired=True)


def _pairs() -> list[PreferencePair]:
    return [PreferencePair(prompt=PROMPT, chosen=SHORT, rejected=LONG, prompt_id="0", chosen_winrate=0.7,
                           rejected_winrate=0.4),
            PreferencePair(prompt="describe the owl", chosen=LONG, rejected=SHORT, prompt_id="1", chosen_winrate=0.6,
                           rejected_winrate=0.5)]


def _by_hand(model, tok, pairs) -> torch.Tensor:
    """[chosen..., rejected...] summed log-probs over the rows truncated here, one padded forward."""
    rows = []
    for side in ("chosen", "rejected"):
        for p in pairs:
            h, t = _ids(tok, p.prompt, getattr(p, side))
            _, other = _ids(tok, p.prompt, p.rejected if side == "chosen" else p.chosen)
            longer = max(len(t), len(other))
            h = h[-P:] if len(h) + longer > M else h
            t = t[:M - P] if len(h) + longer > M else t
            rows.append((h + t, len(h)))
    ids, att, resp = _pad(rows, tok.pad_token_id)
    with torch.no_grad():
        return _group_logprobs(model, ids, att, resp, chunked=False)[0]


def test_the_trainer_and_the_reference_scores_read_model_max_prompt_length(tiny, tok, tmp_path):
    """batch_loss (the policy's side) and Worker.references (the frozen side) both score the SPPO-truncated
    pair; without the key the long pair is cut at the end instead and the numbers differ."""
    from selfplay.algorithms import get_algorithm
    from selfplay.dist_spec import dist_spec
    from selfplay.distributed import TrainJob
    from selfplay.trainer import batch_loss, load_policy
    from selfplay.worker import Worker

    pairs = _pairs()
    cfg = Config(algorithm="sppo", model=ModelConfig(policy=tiny, max_length=M, max_prompt_length=P),
                 loss=LossConfig(eta=2.0), train=TrainConfig(batch_size=2, optimizer="sgd"))
    _, model = load_policy(tiny)
    want = _by_hand(model, tok, pairs)
    with torch.no_grad():
        got = sequence_logprobs(model, tok, [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] +
                                [p.rejected for p in pairs], max_length=M, max_prompt_length=P, paired=True)
        plain = sequence_logprobs(model, tok, [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] +
                                  [p.rejected for p in pairs], max_length=M)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-2

    job = TrainJob(tiny, str(tmp_path / "out"), pairs, {"previous": tiny}, cfg, 0, dist_spec(cfg))
    w = Worker(job, rank=0, world=1, device=torch.device("cpu"), total_steps=1)
    refs = w.references(pairs)
    torch.testing.assert_close(torch.cat(refs["previous"]), want, atol=1e-5, rtol=1e-5)

    zero = {"previous": (torch.zeros(2), torch.zeros(2))}
    loss, _ = batch_loss(w.model, tok, get_algorithm("sppo"), pairs, [0, 1], zero, cfg)
    c, r = want[:2], want[2:]
    target = lambda p: 2.0 * (p - 0.5)  # noqa: E731  η (P̂ − ½)
    wc, wr = torch.tensor([0.7, 0.6]), torch.tensor([0.4, 0.5])
    expected = (((c - target(wc)) ** 2 + (r - target(wr)) ** 2) / 2).mean()
    torch.testing.assert_close(loss.detach(), expected, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# PairRM reads the chat-templated prompt (scripts/rank.py)
# ---------------------------------------------------------------------------------------------

def test_chat_source_is_the_template_up_to_the_answer(tok):
    from judges.pairrm_model import chat_source
    assert chat_source(tok, "name a river") == "<|im_start|>user\nname a river<|im_end|>\n<|im_start|>assistant\n"
    # rank.py cuts at the first "None", which would cut this prompt too; the assistant's own "None" is the last
    assert chat_source(tok, "is None a value") == "<|im_start|>user\nis None a value<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny_pairrm(tmp_path_factory):
    from fixtures_judges import build_tiny_pairrm
    return build_tiny_pairrm(tmp_path_factory.mktemp("pairrm_chat"))["hf"]


def test_pairrm_with_prompt_format_chat_judges_the_templated_prompt(tiny, tok, tiny_pairrm):
    """judge.prompt_format: chat reaches the judge: its numbers are the raw judge's on the templated prompts
    (the policy's tokenizer, from the judge context), and differ from the raw prompt's."""
    from judges.pairrm_model import chat_source
    from judges.registry import JudgeContext, build_judge
    from selfplay.config import JudgeConfig

    section = JudgeConfig(name="pairrm", model=str(tiny_pairrm), batch_size=4)
    raw = build_judge("pairrm", section, JudgeContext(policy=tiny))
    chat = build_judge("pairrm", JudgeConfig(name="pairrm", model=str(tiny_pairrm), batch_size=4, prompt_format="chat"),
                       JudgeContext(policy=tiny))
    prompts = ["name a river", "describe the owl"]
    responses = [["the river stone", "owl", "a wave"], ["pine moss", "the owl gently"]]
    want = raw.matrices([chat_source(tok, p) for p in prompts], responses)
    got = chat.matrices(prompts, responses)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-6)
    assert max(np.abs(g - r).max() for g, r in zip(got, raw.matrices(prompts, responses))) > 1e-4
    with pytest.raises(ValueError, match="names no policy"):
        build_judge("pairrm", JudgeConfig(name="pairrm", model=str(tiny_pairrm), prompt_format="chat"), JudgeContext())


def test_the_sppo_paper_config_reads_as_the_authors_code():
    """The values sppo's code sets (recipes/uclaml-sppo/config_full.yaml, scripts/rank.py)."""
    from pipelines.config import load_config
    cfg = load_config("configs/paper/sppo_mistral7b_pairrm.yaml")
    assert (cfg.model.max_length, cfg.model.max_prompt_length) == (1024, 512)
    assert cfg.judge.prompt_format == cfg.eval_judge.prompt_format == "chat"
