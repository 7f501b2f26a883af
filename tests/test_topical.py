"""builtin:arena/topical, the Nash arena's initial policy: the base policy warmed on until it reads the
prompt's topic. Checked on held-out (eval) prompts, which the build's stopping rule never saw."""
import json
import os
import time

import pytest

from selfplay.arena import TOPICS
from selfplay.assets import arena_prompts, build_topical, on_topic_share
from selfplay.data import DataError, architecture_source, assets_root, resolve_builtin

pytestmark = pytest.mark.slow   # the first use builds the policy (about 2 min on 2 cores)


def share(path) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return on_topic_share(model, tok, [r["prompt"] for r in arena_prompts("eval")], samples=4, seed=1)


def test_the_topical_policy_reads_the_topic_and_the_base_policy_does_not():
    root = assets_root()
    topical = build_topical(root)
    chance = 1 / len(TOPICS)
    base, warmed = share(root / "policy"), share(topical)
    assert base < 2 * chance, base           # measured 0.11: the words, not which topic asks for them
    assert warmed > 0.35, warmed             # measured 0.49 (the build stops at 0.5 on train prompts, a noisy check)
    manifest = json.loads((topical / "manifest.json").read_text())
    assert manifest["on_topic_share"] >= 0.5 and manifest["steps"] % 50 == 0


def test_the_builtin_name_resolves_to_it_and_reuses_it():
    path = resolve_builtin("builtin:arena/topical")
    assert path == str(assets_root() / "topical")
    before = os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns
    time.sleep(0.01)
    assert resolve_builtin("builtin:arena/topical") == path
    assert os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns == before   # not rebuilt


def _assets_without_topical(tmp_path):
    """SELFPLAY_ASSETS whose arena has the current base assets (linked) and no topical policy."""
    real = assets_root()
    build_topical(real)          # so that the base assets are current and only topical/ is missing below
    arena = tmp_path / "arena"
    arena.mkdir()
    for name in ("manifest.json", "policy", "prompts"):
        (arena / name).symlink_to((real / name).absolute())
    return arena


def test_a_job_never_builds_it(tmp_path, monkeypatch):
    """`make submit` jobs (SELFPLAY_ASSETS_BUILD=0) refuse a missing topical policy, naming `make assets`."""
    arena = _assets_without_topical(tmp_path)
    monkeypatch.setenv("SELFPLAY_ASSETS", str(tmp_path))
    monkeypatch.setenv("SELFPLAY_ASSETS_BUILD", "0")
    with pytest.raises(DataError, match="topical policy is missing.*make assets"):
        resolve_builtin("builtin:arena/topical")
    assert not (arena / "topical").exists()


def test_a_plan_reads_the_base_architecture_instead_of_building_it(tmp_path, monkeypatch, capsys):
    """`make plan CONFIG=configs/arena_nash.yaml` stays a second's table: it does not train the topical policy
    (2 minutes), whose architecture is the base policy's."""
    from pipelines.plan import main
    real = assets_root().parent.absolute()
    arena = _assets_without_topical(tmp_path)
    monkeypatch.setenv("SELFPLAY_ASSETS", str(tmp_path))
    assert architecture_source("builtin:arena/topical") == str(arena / "policy")
    assert main(["--config", "configs/arena_nash.yaml", "--round", "1"]) == 0
    out = capsys.readouterr()
    assert "policy builtin:arena/topical: 756k parameters" in out.out and out.err == ""
    assert not (arena / "topical").exists()
    monkeypatch.setenv("SELFPLAY_ASSETS", str(real))
    assert architecture_source("builtin:arena/topical") == str(real / "arena" / "topical")   # built: its own config
