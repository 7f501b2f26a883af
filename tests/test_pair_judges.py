"""The papers' own pairwise preference models as judges, on tiny random local models (no hub).

* ``pair_pm``: RLHFlow's pair-preference LM (INPO). The reference probability is computed here by
  hand from the model card's recipe: format, tokenise, one forward pass, softmax over "A"/"B".
* ``pair_classifier``: EGPO's 2-class pairwise sequence classifier, each query order-flipped by a
  seeded coin; the reference formats the authors' query text here and undoes the flip itself.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from judges.base import preference_matrices
from judges.registry import JudgeContext, build_judge, check_judge_config
from selfplay.config import JudgeConfig
from tests.fixtures_judges import corpus, random_text

# -- tiny models -----------------------------------------------------------------------------------

LLAMA3_TEMPLATE = (   # Llama-3-Instruct's template shape: BOS, headers, trimmed content, <|eot_id|>
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _bpe(specials: list[str], vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus(800), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return bpe


@pytest.fixture(scope="module")
def pm_path(tmp_path_factory):
    """A random Llama causal LM with a Llama-3-style chat template (BOS inside the template)."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("pair_pm")
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = PreTrainedTokenizerFast(tokenizer_object=_bpe(specials), bos_token="<|begin_of_text|>",
                                  eos_token="<|end_of_text|>", pad_token="<|end_of_text|>")
    tok.chat_template = LLAMA3_TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      initializer_range=0.3, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def _gemma2_classifier(root):
    """Gemma-2 layout: BOS prepended by the tokenizer, pad token <pad> = config pad id, softcapping."""
    from tokenizers import processors
    from transformers import Gemma2Config, Gemma2ForSequenceClassification, PreTrainedTokenizerFast

    bpe = _bpe(["<pad>", "<eos>", "<bos>"])
    bpe.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  model_max_length=8192)
    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                       sliding_window=64, max_position_embeddings=2048, initializer_range=0.3, num_labels=2,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return Gemma2ForSequenceClassification(cfg), tok


def _qwen2_classifier(root):
    """No pad token in the tokenizer or config: the judge pads with EOS (as the authors) and tells the model."""
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForSequenceClassification

    tok = PreTrainedTokenizerFast(tokenizer_object=_bpe(["<|endoftext|>"]), eos_token="<|endoftext|>")
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      initializer_range=0.3, num_labels=2, pad_token_id=None, eos_token_id=tok.eos_token_id)
    return Qwen2ForSequenceClassification(cfg), tok


@pytest.fixture(scope="module", params=["gemma2", "qwen2"])
def clf_path(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"pair_classifier_{request.param}")
    torch.manual_seed(1)
    model, tok = {"gemma2": _gemma2_classifier, "qwen2": _qwen2_classifier}[request.param](root)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def _triples(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    rng = random.Random(seed)
    ps = [random_text(rng, 3, 15) + "?" for _ in range(n)]
    a = [random_text(rng, 1, 25) for _ in range(n)]
    b = [random_text(rng, 1, 25) for _ in range(n)]
    return ps, a, b


def _load(path, cls):
    """fp32 model and tokenizer; Gemma-2 with eager attention as EGPO's authors load it (pair_judge.py:29)."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer
    kw = {"attn_implementation": "eager"} if AutoConfig.from_pretrained(path).model_type == "gemma2" else {}
    model = getattr(transformers, cls).from_pretrained(path, dtype=torch.float32, **kw).eval()
    return model, AutoTokenizer.from_pretrained(path)


# -- pair_pm ---------------------------------------------------------------------------------------

# RLHFlow's "plain" template for the context and the user-turn format (model card / get_pref_single.py:63,65),
# written out here independently of judges/pair_pm.py.
PLAIN = ("\n{% for message in messages %}{% if loop.index0 % 2 == 0 %}\n\n<turn> user\n {{ message['content'] }}"
         "{% else %}\n\n<turn> assistant\n {{ message['content'] }}{% endif %}{% endfor %}\n\n\n")


def _reference_pm(model, tok, prompt: str, first: str, second: str) -> float:
    """The model card's recipe for one order: P("A") from the last position's logits of "A" and "B"."""
    context = tok.apply_chat_template([{"role": "user", "content": prompt}], chat_template=PLAIN, tokenize=False)
    turn = "[CONTEXT] " + context + " [RESPONSE A] " + first + " [RESPONSE B] " + second + " \n"
    text = tok.apply_chat_template([{"role": "user", "content": turn}], tokenize=False).replace(tok.bos_token, "")
    ids = tok.encode(text, add_special_tokens=False)
    (ta,), (tb,) = tok.encode("A", add_special_tokens=False), tok.encode("B", add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].double()
    return float(torch.softmax(logits[[ta, tb]], -1)[0])


def _pm(path, batch_size=8):
    return build_judge("pair_pm", JudgeConfig(name="pair_pm", model=path, batch_size=batch_size), JudgeContext())


def test_pair_pm_matches_the_model_card_recipe(pm_path):
    model, tok = _load(pm_path, "AutoModelForCausalLM")
    judge = _pm(pm_path, batch_size=4)
    ps, a, b = _triples(7)
    ref_ab = np.array([_reference_pm(model, tok, p, x, y) for p, x, y in zip(ps, a, b)])
    ref_ba = np.array([_reference_pm(model, tok, p, y, x) for p, x, y in zip(ps, a, b)])
    np.testing.assert_allclose(judge.first_wins(ps, a, b), ref_ab, atol=1e-6, rtol=0)
    np.testing.assert_allclose(judge.compare(ps, a, b), 0.5 * (ref_ab + 1 - ref_ba), atol=1e-6, rtol=0)
    assert np.ptp(ref_ab) > 0.05   # the random model's answers depend on the input (a meaningful check)
    text = judge.text(ps[0], a[0], b[0])
    assert tok.bos_token not in text and text.endswith("<|eot_id|>")   # BOS removed; no generation prompt
    assert "[CONTEXT] \n\n<turn> user\n " + ps[0] in text and "[RESPONSE B] " + b[0] in text


def test_pair_pm_averages_both_orders_and_removes_position_bias(pm_path):
    judge = _pm(pm_path)
    ps, a, b = _triples(6, seed=1)
    fwd, bwd = judge.compare(ps, a, b), judge.compare(ps, b, a)
    np.testing.assert_allclose(fwd + bwd, 1.0, atol=1e-12, rtol=0)
    raw = judge.first_wins(ps, a, b) + judge.first_wins(ps, b, a)   # single order: biased towards a slot
    assert np.max(np.abs(raw - 1.0)) > 1e-2
    assert judge.diagnostics()["both_orders_asked"] == 12


def test_pair_pm_batch_and_single_agree(pm_path):
    ps, a, b = _triples(9, seed=2)
    batched = _pm(pm_path, batch_size=16).compare(ps, a, b)
    one = _pm(pm_path, batch_size=1)
    single = np.array([one.compare([p], [x], [y])[0] for p, x, y in zip(ps, a, b)])
    np.testing.assert_allclose(batched, single, atol=1e-6, rtol=0)
    # The native K×K matrices hold the same numbers and are complementary.
    rs = [a[0], b[0], a[1], b[1]]
    (m,) = preference_matrices(one, [ps[0]], [rs])
    np.testing.assert_allclose(m + m.T, 1.0, atol=1e-12)
    np.testing.assert_allclose(np.diag(m), 0.5)
    np.testing.assert_allclose(m[0, 1], batched[0], atol=1e-6)


# -- pair_classifier -------------------------------------------------------------------------------

# TRL v0.13.0 DEFAULT_PAIRWISE_SYSTEM_PROMPT up to "## Task", after .format (EGPO lms/utils.py:23-39).
TRL_HEAD = (
    "I require a leaderboard for various large language models. I'll provide you with prompts given to these "
    "models and their corresponding outputs. Your task is to assess these responses, and select the model that "
    "produces the best output from a human perspective.\n\n## Instruction\n\n{\n    \"instruction\": \"\"\"%s\"\"\",\n"
    "}\n\n## Model Outputs\n\nHere are the unordered outputs from the models. Each output is associated with a "
    "specific model, identified by a unique model identifier.\n\n{\n    {\n        \"model_identifier\": \"0\",\n"
    "        \"output\": \"\"\"%s\"\"\"\n    },\n    {\n        \"model_identifier\": \"1\",\n"
    "        \"output\": \"\"\"%s\"\"\"\n    }\n}\n\n"
)


def _query(prompt: str, first: str, second: str) -> str:
    """EGPO's trainer renders prompt and responses with TRL's SIMPLE_CHAT_TEMPLATE, responses stripped."""
    return TRL_HEAD % (f"User: {prompt}\n\n", f"Assistant: {first.strip()}\n\n", f"Assistant: {second.strip()}\n\n")


def _class0(model, tok, prompt: str, first: str, second: str, raw: bool = False) -> np.ndarray:
    """[P(class 0), P(class 1)] of one unpadded query (tokenised with special tokens, as the authors).
    raw: the strings as they are (the classifier's training format and the authors' evaluation)."""
    ids = tok(TRL_HEAD % (prompt, first, second) if raw else _query(prompt, first, second))["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    return torch.softmax(logits, -1).numpy()


def _clf(path, seed=0, batch_size=8):
    return build_judge("pair_classifier", JudgeConfig(name="pair_classifier", model=path, batch_size=batch_size),
                       JudgeContext(seed=seed))


def test_pair_classifier_matches_the_authors_query(clf_path):
    from judges.pair_classifier import flip_of

    model, tok = _load(clf_path, "AutoModelForSequenceClassification")
    judge = _clf(clf_path, seed=3, batch_size=3)
    ps, a, b = _triples(8, seed=3)
    a[0] = "  padded with spaces \n"   # the authors strip decoded responses
    flips = [flip_of(3, p, x, y) for p, x, y in zip(ps, a, b)]
    assert any(flips) and not all(flips)
    ref = [(_class0(model, tok, p, y, x)[1] if f else _class0(model, tok, p, x, y)[0])
           for p, x, y, f in zip(ps, a, b, flips)]
    np.testing.assert_allclose(judge.compare(ps, a, b), ref, atol=1e-6, rtol=0)
    assert judge.diagnostics()["flipped_queries"] == sum(flips)


def test_pair_classifier_undoes_each_flip(clf_path):
    """Flipped entries must equal 1 − P(first better | (b, a)); unflipped ones P(first better | (a, b)).
    The random classifier is position-biased, so forgetting to undo a flip, or undoing it with the wrong
    class, or flipping without asking (b, a), each gives a different number."""
    model, tok = _load(clf_path, "AutoModelForSequenceClassification")
    judge = _clf(clf_path, seed=11)
    ps, a, b = _triples(8, seed=4)
    flips = judge.flips(ps, a, b)
    assert flips.any() and not flips.all()
    got = judge.compare(ps, a, b)
    q_ab = np.array([_class0(model, tok, p, x, y)[0] for p, x, y in zip(ps, a, b)])
    q_ba = np.array([_class0(model, tok, p, y, x)[0] for p, x, y in zip(ps, a, b)])
    assert np.max(np.abs(q_ab + q_ba - 1.0)) > 1e-2                     # position bias exists
    np.testing.assert_allclose(got[flips], 1.0 - q_ba[flips], atol=1e-6, rtol=0)
    np.testing.assert_allclose(got[~flips], q_ab[~flips], atol=1e-6, rtol=0)
    wrong = np.abs(got[flips] - q_ba[flips]) + np.abs(got[flips] - q_ab[flips])
    assert np.all(np.abs(got[flips] - q_ba[flips]) > 1e-4) and np.all(wrong > 1e-4)
    # Without shuffling every query is (a, b) and class 0 is read.
    from judges.pair_classifier import PairClassifierJudge
    plain = PairClassifierJudge(clf_path, shuffle_order=False)
    np.testing.assert_allclose(plain.compare(ps, a, b), q_ab, atol=1e-6, rtol=0)
    raw = PairClassifierJudge(clf_path, shuffle_order=False, roles=False)
    ref_raw = [_class0(model, tok, p, x, y, raw=True)[0] for p, x, y in zip(ps[:3], a[:3], b[:3])]
    np.testing.assert_allclose(raw.compare(ps[:3], a[:3], b[:3]), ref_raw, atol=1e-6, rtol=0)


def test_pair_classifier_flips_are_seeded_and_independent_of_batching(clf_path):
    ps, a, b = _triples(8, seed=5)
    whole = _clf(clf_path, seed=7, batch_size=16).compare(ps, a, b)
    one = _clf(clf_path, seed=7, batch_size=1)
    split = np.concatenate([one.compare(ps[:3], a[:3], b[:3]), one.compare(ps[3:], a[3:], b[3:])])
    np.testing.assert_allclose(whole, split, atol=1e-6, rtol=0)
    other = _clf(clf_path, seed=8)
    assert not np.array_equal(other.flips(ps, a, b), one.flips(ps, a, b))


def test_pair_classifier_flip_is_a_fair_coin():
    from judges.pair_classifier import flip_of

    ps, a, b = _triples(400, seed=6)
    share = np.mean([flip_of(0, p, x, y) for p, x, y in zip(ps, a, b)])
    assert 0.4 < share < 0.6
    assert [flip_of(0, p, x, y) for p, x, y in zip(ps, a, b)] == [flip_of(0, p, x, y) for p, x, y in zip(ps, a, b)]


# -- registry checks -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pair_pm", "pair_classifier"])
def test_registry_checks(name, tmp_path):
    check_judge_config(JudgeConfig(name=name, model="RLHFlow/pair-preference-model-LLaMA3-8B"))
    check_judge_config(JudgeConfig(name=name, model=str(tmp_path)))
    bad = [JudgeConfig(name=name),
           JudgeConfig(name=name, model=str(tmp_path / "missing")),
           JudgeConfig(name=name, model="org/model", endpoint="http://localhost:1/v1"),
           JudgeConfig(name=name, model="org/model", backend="vllm")]
    for cfg in bad:
        with pytest.raises(ValueError, match=r"judge\.(model|endpoint|backend)"):
            check_judge_config(cfg)
