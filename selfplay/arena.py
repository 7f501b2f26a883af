"""The synthetic arena: templated prompts and an oracle preference whose truth is known exactly.

A prompt asks about one topic. A response is a run of words. The oracle scores a pair with

    P(a ≻ b | x) = σ( w_q · (Q(a) − Q(b)) + w_s · rps(style(a), style(b)) )

* quality q (transitive): +1 per distinct on-topic word, −1 per word of another topic,
  −0.5 per repeated word;
* style (intransitive): the style whose marker words a response uses most ("bold", "calm" or
  "witty"; none on a tie). bold beats calm, calm beats witty, witty beats bold, as in
  rock-paper-scissors, so no single style wins and a Nash policy mixes them;
* Q = min(q, quality_cap) when a cap is set (ArenaRules): past the cap more quality does not count,
  so a policy can reach the top of the transitive part and what is left is the cyclic game.
  The weights w_q, w_s and the cap are the config's `arena:` section (defaults 0.7, 1.5, no cap).

P(a ≻ b) + P(b ≻ a) = 1 exactly, so the oracle is a proper preference. It is deterministic and
cheap, which makes the loop's learning visible on a laptop.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

TOPICS: dict[str, tuple[str, ...]] = {
    "ocean": ("wave", "tide", "coral", "reef", "shell", "salt", "kelp", "harbor", "gull", "whale"),
    "forest": ("pine", "moss", "fern", "bark", "owl", "acorn", "trail", "root", "leaf", "deer"),
    "city": ("tower", "street", "tram", "bridge", "market", "plaza", "subway", "alley", "neon", "cafe"),
    "desert": ("dune", "sand", "cactus", "mirage", "camel", "oasis", "heat", "scorpion", "mesa", "dust"),
    "mountain": ("peak", "ridge", "glacier", "summit", "rock", "cliff", "snow", "valley", "goat", "pass"),
    "kitchen": ("bread", "oven", "spoon", "pepper", "butter", "kettle", "flour", "onion", "soup", "knife"),
    "space": ("orbit", "comet", "planet", "rocket", "nebula", "moon", "star", "galaxy", "crater", "probe"),
    "music": ("melody", "drum", "chord", "violin", "rhythm", "tempo", "choir", "piano", "lyric", "bass"),
}
STYLES: dict[str, tuple[str, ...]] = {
    "bold": ("surely", "boldly", "clearly", "strongly", "truly"),
    "calm": ("gently", "softly", "quietly", "slowly", "calmly"),
    "witty": ("cleverly", "oddly", "funnily", "slyly", "wryly"),
}
BEATS = {"bold": "calm", "calm": "witty", "witty": "bold"}  # key beats value
FILLER = ("the", "a", "and", "with", "of", "is", "very", "many", "some", "near")
TEMPLATES = (
    "Tell me about the {topic}{audience}.",
    "Describe the {topic}{audience}.",
    "Write a few words on the {topic}{audience}.",
    "What comes to mind about the {topic}{audience}?",
    "Give me a short note on the {topic}{audience}.",
    "Share some thoughts on the {topic}{audience}.",
)
AUDIENCES = ("", " for a child", " for a sailor", " for a poet", " for a student",
             " for a friend", " for a painter", " for a traveller")

_WORD_TOPIC = {w: t for t, ws in TOPICS.items() for w in ws}
_WORD_STYLE = {w: s for s, ws in STYLES.items() for w in ws}
_WORDS = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class ArenaRules:
    """The oracle's parameters: the config's `arena:` section."""
    quality_weight: float = 0.7        # w_q: how much one point of quality moves the logit
    style_weight: float = 1.5          # w_s: how much winning the rock-paper-scissors of styles moves it
    quality_cap: float = 0.0           # > 0: quality above this counts as this (0 = no cap)

    def capped(self, quality: float) -> float:
        return min(quality, self.quality_cap) if self.quality_cap > 0 else quality


DEFAULT_RULES = ArenaRules()


@dataclass(frozen=True)
class Verdict:
    quality: float
    style: str | None


def prompt_topic(prompt: str) -> str | None:
    """The topic a prompt asks about (the first topic name it mentions)."""
    found = [(prompt.find(t), t) for t in TOPICS if t in prompt]
    return min(found)[1] if found else None


def assess(prompt: str, response: str) -> Verdict:
    topic = prompt_topic(prompt)
    words = _WORDS.findall(response.lower())
    seen: set[str] = set()
    quality, style_counts = 0.0, {s: 0 for s in STYLES}
    for w in words:
        if w in seen:
            quality -= 0.5
        elif _WORD_TOPIC.get(w) == topic and topic is not None:
            quality += 1.0
        elif w in _WORD_TOPIC:
            quality -= 1.0
        seen.add(w)
        if w in _WORD_STYLE:
            style_counts[_WORD_STYLE[w]] += 1
    top = max(style_counts.values())
    leaders = [s for s, c in style_counts.items() if c == top]
    return Verdict(quality, leaders[0] if top > 0 and len(leaders) == 1 else None)


def rps(a: str | None, b: str | None) -> int:
    if a is None or b is None or a == b:
        return 0
    return 1 if BEATS[a] == b else -1


def verdict_probability(va: Verdict, vb: Verdict, rules: ArenaRules = DEFAULT_RULES) -> float:
    """P(a ≻ b) from the two responses' verdicts."""
    z = (rules.quality_weight * (rules.capped(va.quality) - rules.capped(vb.quality))
         + rules.style_weight * rps(va.style, vb.style))
    return 1.0 / (1.0 + math.exp(-z))


def oracle_probability(prompt: str, a: str, b: str, rules: ArenaRules = DEFAULT_RULES) -> float:
    return verdict_probability(assess(prompt, a), assess(prompt, b), rules)


def best_quality(prompt: str) -> float:
    """The highest q any response to `prompt` can have: every word of its topic once (0 off-topic)."""
    topic = prompt_topic(prompt)
    return float(len(TOPICS[topic])) if topic else 0.0


def sft_answer(rng, prompt: str) -> str:
    """A demonstration for the arena's SFT set: distinct on-topic words and one style marker, the kind
    of answer the oracle ranks high (what an instruction-tuning set is to a base model)."""
    topic = prompt_topic(prompt) or next(iter(TOPICS))
    words = rng.sample(TOPICS[topic], rng.randint(3, 6))
    words.insert(rng.randrange(len(words) + 1), rng.choice(STYLES[rng.choice(sorted(STYLES))]))
    return " ".join(words)
