"""The league's records (pipelines/league.py writes them to league.json; pipelines/league_page.py draws
them): a module of their own so that the page reads them without importing the league that builds them."""
from __future__ import annotations

from dataclasses import dataclass

from selfplay.arena import ArenaRules


@dataclass(frozen=True)
class Estimate:
    mean: float
    ci_low: float
    ci_high: float
    n: int                   # prompts behind the interval

    @staticmethod
    def of(d: dict) -> "Estimate":
        return Estimate(d["mean"], d["ci_low"], d["ci_high"], d["n"])


@dataclass(frozen=True)
class RoundRecord:
    """One round of one entrant, as its metrics.json has it."""
    round: int
    exploitability: Estimate
    quality_part: float
    style_part: float
    winrate_vs_initial: Estimate | None   # None at round 0 (the initial policy itself)
    style_mix: dict[str, float]
    mean_quality: float
    plugin: float | None = None          # the plug-in estimate beside it (None: metrics from before it existed)
    floor: float | None = None           # what an exact Nash policy reads with the same samples


@dataclass(frozen=True)
class EntrantRecord:
    name: str
    algorithm: str
    run_dir: str
    round0_same_as: str      # the entrant whose round 0 this one's is (same manifest keys and bytes); itself if its own
    rounds: list[RoundRecord]
    mean_crossplay: float    # its final policy's mean win rate against every other policy of the cross-play


@dataclass(frozen=True)
class CrossPlay:
    policies: list[str]             # "initial", then "<entrant>/round_<n>"
    winrate: list[list[Estimate]]   # winrate[i][j]: P(policies[i] ≻ policies[j])


@dataclass(frozen=True)
class League:
    rounds: int
    seed: int
    arena: ArenaRules
    entrants: list[EntrantRecord]
    cross_play: CrossPlay
    by_exploitability: list[str]    # entrants, lowest final exploitability first
    by_crossplay: list[str]         # entrants, highest mean cross-play win rate first
