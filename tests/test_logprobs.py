"""The chunked LM head (selfplay/head.py) and length-grouped batches (selfplay/logprobs.py) give the
log-probs and gradients of the plain path: the model's own full logits, an fp32 log-softmax and one
forward padded to the longest sequence, with the padding mask. Locally built tiny models, no hub."""
from __future__ import annotations

import pytest
import torch

from selfplay import head as head_mod
from selfplay.logprobs import Levers, _group_logprobs, _pad, length_groups, sequence_logprobs

PLAIN = Levers(chunked_head=False, length_groups=False, attention_mask=True)


def _qwen2(vocab: int = 700, tied: bool = False, **extra):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        tie_word_embeddings=tied, **extra))


def _batch(vocab: int, n: int = 6):
    """Right-padded rows of different lengths, each with a prompt part (not scored) and a response part."""
    g = torch.Generator().manual_seed(1)
    rows = [(torch.randint(3, vocab, (12 + 5 * i,), generator=g).tolist(), 4 + i) for i in range(n)]
    return _pad(rows, 0)


def _run(model, chunked: bool, mask: bool, dtype=None):
    """Sequence log-probs of the batch and the gradients of a weighted sum of them."""
    ids, att, resp = _batch(model.config.vocab_size)
    model.zero_grad()
    ctx = torch.autocast("cpu", dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
    with ctx:
        lp, _ = _group_logprobs(model, ids, att if mask else None, resp, chunked)
    (lp * torch.linspace(-1, 2, len(lp))).sum().backward()
    return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(head_mod, "CHUNK_ELEMENTS", 700 * 7)   # 7 rows per chunk: many chunks, a ragged last one


@pytest.mark.parametrize("tied", [False, True])
def test_chunked_head_equals_full_logits_in_fp32(small_chunks, tied):
    model = _qwen2(tied=tied)
    want, g_want = _run(model, chunked=False, mask=True)
    got, g_got = _run(model, chunked=True, mask=False)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-6)
    assert g_got.keys() == g_want.keys() and ("model.embed_tokens.weight" if tied else "lm_head.weight") in g_got
    assert max(_rel(g_got[k], g_want[k]) for k in g_want) < 1e-4


def test_chunked_head_in_bf16_autocast_is_as_close_to_fp32_as_the_full_path(small_chunks):
    model = _qwen2()
    truth, g_truth = _run(model, chunked=False, mask=True)
    full, g_full = _run(model, chunked=False, mask=True, dtype=torch.bfloat16)
    ours, g_ours = _run(model, chunked=True, mask=False, dtype=torch.bfloat16)
    assert torch.allclose(ours, full, atol=2e-2, rtol=0)          # the same bf16 projection, fp32 after it
    assert (ours - truth).abs().max() <= 1.5 * (full - truth).abs().max() + 1e-3
    for k in g_truth:   # per tensor: no farther from the fp32 gradient than the full bf16 path is
        assert _rel(g_ours[k], g_truth[k]) <= 1.5 * _rel(g_full[k], g_truth[k]) + 2e-3, k
        assert _rel(g_ours[k], g_full[k]) < 0.05, k


def _tiny(kind: str):
    import transformers as tf
    common = dict(vocab_size=700, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)
    torch.manual_seed(0)
    if kind == "gemma2":   # soft-capped logits
        return tf.Gemma2ForCausalLM(tf.Gemma2Config(**common, head_dim=8, final_logit_softcapping=3.0))
    if kind == "granite":  # logits divided by logits_scaling
        return tf.GraniteForCausalLM(tf.GraniteConfig(**common, logits_scaling=4.0))
    return tf.CohereForCausalLM(tf.CohereConfig(**common, logit_scale=0.25))   # logits multiplied by logit_scale


@pytest.mark.parametrize("kind", ["gemma2", "granite", "cohere"])
def test_logit_transforms_are_applied(small_chunks, kind):
    model = _tiny(kind)
    scale, cap = head_mod.logit_transform(model.config)
    assert (scale, cap) == {"gemma2": (1.0, 3.0), "granite": (0.25, None), "cohere": (0.25, None)}[kind]
    want, g_want = _run(model, chunked=False, mask=True)
    got, g_got = _run(model, chunked=True, mask=False)
    assert torch.allclose(got, want, atol=1e-4, rtol=0)
    assert max(_rel(g_got[k], g_want[k]) for k in g_want) < 1e-3


def test_a_logit_transform_the_head_does_not_know_is_refused():
    from transformers import Qwen2ForCausalLM

    class Scaled(Qwen2ForCausalLM):   # e.g. Falcon-H1's lm_head_multiplier, MiniCPM's hidden-state scaling
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 3.0
            return out

    torch.manual_seed(0)
    model = Scaled(_qwen2().config)
    with pytest.raises(ValueError, match="not the LM head's output"):
        _run(model, chunked=True, mask=False)


def test_length_groups_default_to_the_cpu_only():
    """Levers.length_groups=None cuts length groups on a CPU (+12% measured there) and nowhere else (0.28x on an
    H200); True and False hold on every device."""
    from selfplay.logprobs import grouped
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert grouped(Levers(), cpu) and not grouped(Levers(), gpu)
    assert grouped(Levers(length_groups=True), gpu) and not grouped(Levers(length_groups=False), cpu)


def test_length_groups_cut_padding_and_respect_the_token_cap():
    lv = Levers(forward_cost=10, max_group_tokens=1000)
    assert length_groups([10, 10, 10, 500], lv) == [3, 1]      # 30 + 500 + 2·10 instead of 4·500 + 10
    assert length_groups([100, 101, 102], lv) == [3]             # padding (3) costs less than a forward
    assert length_groups([300] * 7, lv) == [3, 3, 1]             # ≤ 1000 padded tokens per forward
    assert length_groups([2000], lv) == [1]                      # a single row always fits
    assert sum(length_groups(list(range(1, 200)), Levers())) == 199


def test_every_lever_gives_the_same_log_probs_in_input_order(small_chunks):
    from fixtures_policy import build_tiny_policy, pairs
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import tempfile
    from pathlib import Path

    path = build_tiny_policy(Path(tempfile.mkdtemp(prefix="lp")))
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    ps = pairs(9)
    prompts = [p.prompt for p in ps] * 2
    responses = [p.chosen for p in ps] + [p.rejected * (i % 3 + 1) for i, p in enumerate(ps)]
    want = sequence_logprobs(model, tok, prompts, responses, levers=PLAIN)
    grouped = Levers(forward_cost=1, max_group_tokens=64)   # several groups, so the order is restored
    for lv in (Levers(), grouped, Levers(chunked_head=False), Levers(attention_mask=True)):
        got = sequence_logprobs(model, tok, prompts, responses, levers=lv)
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-6), lv
    avg = sequence_logprobs(model, tok, prompts, responses, average=True, levers=grouped)
    assert torch.allclose(avg, sequence_logprobs(model, tok, prompts, responses, average=True, levers=PLAIN), atol=1e-6)


def test_lora_adapter_gradients_match(small_chunks):
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(_qwen2(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0,
                                                init_lora_weights=False))
    want, g_want = _run(model, chunked=False, mask=True)
    got, g_got = _run(model, chunked=True, mask=False)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-6)
    assert g_got.keys() == g_want.keys() and all("lora_" in k for k in g_got) and len(g_got) > 10
    assert max(_rel(g_got[k], g_want[k]) for k in g_want) < 1e-4


def test_saved_activations_do_not_grow_with_the_vocabulary():
    """What autograd keeps for backward: the full path holds [tokens, vocab] fp32 log-probs (the
    log-softmax output); the chunked head holds the hidden states only."""
    def saved_bytes(vocab: int, chunked: bool) -> int:
        model = _qwen2(vocab)
        ids, att, resp = _batch(vocab)
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            _group_logprobs(model, ids, None if chunked else att, resp, chunked)
        return total

    ids, _, _ = _batch(700)
    logits_bytes = ids.numel() * 4 * 4000
    full_small, full_big = saved_bytes(500, False), saved_bytes(4500, False)
    ours_small, ours_big = saved_bytes(500, True), saved_bytes(4500, True)
    assert full_big - full_small >= logits_bytes                  # the fp32 log-softmax of every position
    # ours grows only by the head's weight (4000 more rows of 32 fp32: kept by reference, not copied)
    assert ours_big - ours_small <= 4000 * 32 * 4 * 2
    assert ours_big < full_big / 2
