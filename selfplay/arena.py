"""The synthetic arena: templated prompts and an oracle preference whose truth is known exactly.

A prompt asks about one topic. A response is a run of words. The oracle scores a pair with

    P(a ≻ b | x) = σ( w_q · (Q(a) − Q(b)) + w_s · rps(style(a), style(b)) + w_n · (u(b) − u(a)) )

* quality q (transitive): +1 per distinct on-topic word, −1 per word of another topic,
  −0.5 per repeated word;
* style (intransitive): the style whose marker words a response uses most ("bold", "calm" or
  "witty"; none on a tie). bold beats calm, calm beats witty, witty beats bold, as in
  rock-paper-scissors, so no single style wins and a Nash policy mixes them;
* Q = min(q, quality_cap) when a cap is set (ArenaRules): past the cap more quality does not count,
  so a policy can reach the top of the transitive part and what is left is the cyclic game;
* an optional penalty w_n for having no style (`unstyled_penalty`), which adds
  w_n · (u(b) − u(a)) to the logit, u(y) = 1 when y has no style, else 0.
  The weights w_q, w_s, w_n and the cap are the config's `arena:` section (defaults 0.7, 1.5, 0, no
  cap: the default arena has no penalty).

P(a ≻ b) + P(b ≻ a) = 1 exactly, so the oracle is a proper preference: every term of the logit is
antisymmetric in (a, b) (the penalty's term changes sign when a and b swap). It is deterministic and
cheap, which makes the loop's learning visible on a laptop.

Why the penalty. Without it (w_n = 0) a style-less answer ties with every answer of equal quality, so
"every answer at the cap, no style" is a Nash policy (exploitability 0) that never plays the
rock-paper-scissors of styles at all. With w_n > 0 and quality at the cap for both sides:
(a) against the style-less policy, any styled answer wins with σ(w_n), so its exploitability is
    σ(w_n) − ½ (≥ 0.1 once w_n ≥ ln(0.6/0.4) = 0.405);
(b) against the uniform bold/calm/witty mix, a styled answer s meets its own style (σ(0) = ½), the
    style it beats (σ(w_s)) and the style that beats it (σ(−w_s) = 1 − σ(w_s)) a third of the time
    each: ½ on average, whatever s; a style-less answer scores σ(−w_n) < ½, and an answer below the cap
    scores less than the same answer at the cap (the logit increases with Q(a)). So no response beats
    the uniform mix at the cap: its exploitability is exactly 0.
It is the only symmetric equilibrium, by iterated strict dominance: an answer below the cap is
strictly dominated by an answer at the cap in the same style (the logit increases with Q(a) whatever
b is); once only answers at the cap remain, a style-less one is strictly dominated by the
uniform mix of the three styles (against no style the mix scores σ(w_n) > ½ where it scores ½; against
any style the mix scores ½ where it scores σ(−w_n) < ½); what is left is rock-paper-scissors, whose
only equilibrium is uniform.
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
    unstyled_penalty: float = 0.0      # w_n: how much having no style moves the logit against an answer

    def capped(self, quality: float) -> float:
        return min(quality, self.quality_cap) if self.quality_cap > 0 else quality

    def style_logit(self, a: str | None, b: str | None) -> float:
        """The logit's style terms for a over b: the rock-paper-scissors win and the no-style penalty."""
        return self.style_weight * rps(a, b) + self.unstyled_penalty * ((b is None) - (a is None))


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
         + rules.style_logit(va.style, vb.style))
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
