"""Oracle-labelled response pairs from the arena, to train a learned judge on (judges/train_pairrm.py).

A judge trained only on the initial policy's samples is exploited within a round or two: SPPO moves
the policy towards answers the initial policy rarely writes (shorter, no off-topic words, one style,
repeated words), where such a judge has never been corrected. So each pair's two responses are drawn
from a mixture that spans where the policy goes across rounds:

* ``sample``: the initial arena policy's own samples (what round 0 writes);
* ``edited``: a sample put through random edits in the directions training pushes: off-topic or
  filler words dropped, on-topic words added (sometimes repeated), style markers added, swapped to
  another style or removed, the answer cut short;
* ``built``: answers composed from scratch with random proportions of on-topic, off-topic, filler
  and style words, from the empty answer to a near-perfect one in a single style.

Labels are the oracle's P(a ≻ b | x) (``selfplay.arena.oracle_probability``), kept soft. Everything
is drawn from seeded generators, so the same seed gives the same pairs.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from selfplay.arena import DEFAULT_RULES, FILLER, STYLES, TOPICS, ArenaRules, oracle_probability, prompt_topic

KINDS = ("sample", "edited", "built")
_STYLE_WORDS = [w for ws in STYLES.values() for w in ws]


@dataclass(frozen=True)
class LabelledPair:
    prompt: str
    a: str
    b: str
    p: float          # the oracle's P(a ≻ b | prompt)
    kind: str         # "sample-sample", "edited-built", ...: where the two responses came from


def policy_samples(policy: str, prompts: Sequence[str], n: int, seed: int, max_new_tokens: int = 24,
                   batch_size: int = 96) -> list[list[str]]:
    """`n` samples per prompt from the checkpoint `policy` at temperature 1 (as the rounds sample)."""
    from selfplay.artifacts import seed_for
    from selfplay.generation import Request, SamplingSpec
    from selfplay.hf_backend import HFBackend

    backend = HFBackend(policy, batch_size=batch_size, device="cpu")
    try:
        out = backend.generate([Request(p, seed_for(seed, "judge-data", p)) for p in prompts],
                               SamplingSpec(n=n, temperature=1.0, max_new_tokens=max_new_tokens))
    finally:
        backend.close()
    return [[c.text for c in cs] for cs in out]


def edit(rng: random.Random, prompt: str, response: str) -> str:
    """A random chain of the edits training makes: each one applied with probability ½."""
    topic = prompt_topic(prompt)
    on = TOPICS.get(topic, ())
    words = response.split()
    if rng.random() < 0.5:   # drop off-topic words (the first thing SPPO learns)
        keep = rng.random()
        words = [w for w in words if _topic_of(w) in (None, topic) or rng.random() < keep]
    if rng.random() < 0.5:   # drop filler and anything unknown
        words = [w for w in words if w in on or w in _STYLE_WORDS or rng.random() < 0.3]
    if rng.random() < 0.5 and on:   # add on-topic words, possibly repeated ones
        for _ in range(rng.randint(1, 5)):
            words.insert(rng.randint(0, len(words)), rng.choice(on))
    if rng.random() < 0.5:
        words = _restyle(rng, words)
    if rng.random() < 0.3 and words:   # cut short
        words = words[:rng.randint(0, len(words))]
    return " ".join(words)


def _restyle(rng: random.Random, words: list[str]) -> list[str]:
    """Add markers of one style, swap every marker to one style, or remove them all."""
    style = rng.choice(sorted(STYLES))
    r = rng.random()
    if r < 0.4:
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randint(0, len(words)), rng.choice(STYLES[style]))
        return words
    if r < 0.7:
        return [rng.choice(STYLES[style]) if w in _STYLE_WORDS else w for w in words]
    return [w for w in words if w not in _STYLE_WORDS]


def build(rng: random.Random, prompt: str) -> str:
    """An answer from scratch: 0-12 words with random shares of on-topic, off-topic, filler and style."""
    topic = prompt_topic(prompt)
    on = list(TOPICS.get(topic, ()))
    off = [w for t, ws in TOPICS.items() if t != topic for w in ws]
    shares = [rng.random() ** 2 for _ in range(4)]
    style = rng.choice(sorted(STYLES)) if rng.random() < 0.7 else None
    marks = list(STYLES[style]) if style else _STYLE_WORDS
    pools = [on, off, list(FILLER), marks]
    words = [rng.choice(rng.choices(pools, weights=shares)[0]) for _ in range(rng.randint(0, 12))]
    if rng.random() < 0.3 and on:   # distinct on-topic words: the high-quality end
        words = rng.sample(on, rng.randint(1, len(on))) + words[:rng.randint(0, 2)]
        rng.shuffle(words)
    return " ".join(words)


def _topic_of(word: str) -> str | None:
    for t, ws in TOPICS.items():
        if word in ws:
            return t
    return None


def draw_response(rng: random.Random, prompt: str, samples: Sequence[str]) -> tuple[str, str]:
    """(kind, response): a third of the draws from each kind."""
    kind = rng.choice(KINDS)
    if kind == "built" or not samples:
        return "built", build(rng, prompt)
    sample = rng.choice(samples)
    return kind, sample if kind == "sample" else edit(rng, prompt, sample)


def draw_pairs(rng: random.Random, prompts: Sequence[str], samples: Sequence[Sequence[str]], n: int,
               rules: ArenaRules = DEFAULT_RULES) -> list[LabelledPair]:
    """`n` pairs over random prompts, labelled by the oracle under `rules`."""
    out = []
    for _ in range(n):
        k = rng.randrange(len(prompts))
        (ka, a), (kb, b) = (draw_response(rng, prompts[k], samples[k]) for _ in range(2))
        out.append(LabelledPair(prompts[k], a, b, oracle_probability(prompts[k], a, b, rules), f"{ka}-{kb}"))
    return out
