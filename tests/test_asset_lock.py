"""Asset builders that are needed at once (two runs on a fresh clone, or pytest workers) build once:
the second waits on the first's lock, then finds the manifest current and builds nothing."""
import json
import threading
import time
from dataclasses import asdict

import pytest

from selfplay.artifacts import build_lock, stable_hash


def _arena_key():
    from selfplay.assets import AssetSpec
    return stable_hash(asdict(AssetSpec()))


def _arena(root):
    from selfplay.assets import AssetSpec, build_assets
    return build_assets, AssetSpec(), root, _arena_key()


def _topical(root):
    from selfplay.assets import TopicalSpec, build_topical
    return build_topical, TopicalSpec(), root / "topical", stable_hash({"spec": asdict(TopicalSpec()),
                                                                       "policy": _arena_key()})


def _judge(root):
    from judges.train_pairrm import DEFAULT_RULES, PairRMAssetSpec, asset_key, build_judge_asset
    return build_judge_asset, PairRMAssetSpec(), root / "pairrm", asset_key(PairRMAssetSpec(), _arena_key(),
                                                                            DEFAULT_RULES)


@pytest.mark.parametrize("which", [_arena, _topical, _judge], ids=["arena", "topical", "pairrm"])
def test_a_builder_waits_for_a_build_in_progress_and_reuses_it(tmp_path, which):
    root = tmp_path / "arena"
    builder, spec, out, key = which(root)
    if out != root:   # the topical policy and the judge sit on a current arena (a manifest stands for it)
        root.mkdir()
        (root / "manifest.json").write_text(json.dumps({"key": _arena_key()}))
    done = []
    with build_lock(out):    # another process's build in progress
        t = threading.Thread(target=lambda: done.append(builder(root, spec)), daemon=True)
        t.start()
        time.sleep(1.0)
        assert t.is_alive() and not done, "the builder did not wait for the build in progress"
        out.mkdir(exist_ok=True)
        (out / "manifest.json").write_text(json.dumps({"key": key}))   # that build finishes
    t.join(30)
    assert done == [out]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"], "it built again after waiting"


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
    import subprocess
    import sys
    final = tmp_path / "asset"
    code = ("import os, sys; from selfplay.artifacts import build_lock\n"
            f"with build_lock(__import__('pathlib').Path({str(final)!r})):\n"
            "    print('held', flush=True); os.kill(os.getpid(), 9)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout == "held\n" and p.returncode == -9
    t0 = time.monotonic()
    with build_lock(final):
        assert time.monotonic() - t0 < 1.0
