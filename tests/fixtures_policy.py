"""A tiny local causal LM and preference pairs over its vocabulary, for trainer tests."""
from __future__ import annotations

from pathlib import Path

import torch

from selfplay.records import PreferencePair

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORDS = "the a ocean wave tide coral forest pine moss owl river stone boldly gently slyly tell me about describe".split()


def build_tiny_policy(out: Path) -> str:
    """A 2-layer, hidden-32 Qwen2 with a locally trained byte-level BPE and a chat template, saved in `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                         tie_word_embeddings=True, eos_token_id=fast.eos_token_id,
                                         pad_token_id=fast.pad_token_id))
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return str(out)


def pairs(n: int = 7) -> list[PreferencePair]:
    g = torch.Generator().manual_seed(1)
    pick = lambda k: " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (k,), generator=g))  # noqa: E731
    return [PreferencePair(prompt=f"tell me about {pick(2)}", chosen=pick(5), rejected=pick(3), prompt_id=str(i),
                           chosen_winrate=0.8 - 0.05 * i, rejected_winrate=0.2 + 0.02 * i) for i in range(n)]
