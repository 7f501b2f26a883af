"""The run directory contract: RUN_DIR/round_<n>/{generations,judgments,preferences,policy,eval}/."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGES = ("generate", "judge", "preferences", "train", "evaluate")
STAGE_DIRS = {"init": "policy", "generate": "generations", "judge": "judgments", "preferences": "preferences",
              "train": "policy", "evaluate": "eval"}


@dataclass(frozen=True)
class RoundPaths:
    run_dir: Path
    n: int

    @property
    def root(self) -> Path:
        return self.run_dir / f"round_{self.n}"

    def stage(self, name: str) -> Path:
        return self.root / STAGE_DIRS[name]

    @property
    def policy(self) -> Path:
        return self.root / "policy"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def eval_generations(self) -> Path:
        """Round 0 keeps its eval generations beside its policy's eval dir, like every round."""
        return self.eval / "generations"


def round_paths(run_dir: str | Path, n: int) -> RoundPaths:
    return RoundPaths(Path(run_dir), n)
