"""Devices follow resources: every model-holding judge computes on `cuda` exactly when the actor it runs
in was given a GPU, decided by selfplay.devices.device_for. No GPU is needed: the tests make this
process "see" one and keep every model on the CPU while recording where it was sent."""
from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from judges.registry import build_judge
from selfplay.config import ActorResources, JudgeConfig
from pipelines.config import load_config
from selfplay.devices import DeviceError, device_for


@pytest.fixture
def fake_gpu(monkeypatch):
    """One visible GPU; `Module.to(device)` records the device and leaves the model on the CPU (a
    dtype still applies). Returns the list of devices models were sent to."""
    import torch

    import selfplay.devices

    sent: list[str] = []
    real_to = torch.nn.Module.to

    def to(self, *args, **kwargs):
        device = kwargs.pop("device", None)
        rest = []
        for a in args:
            if isinstance(a, (str, torch.device)):
                device = a
            else:
                rest.append(a)
        if device is not None:
            sent.append(str(device))
        return real_to(self, *rest, **kwargs)

    monkeypatch.setattr(selfplay.devices, "visible_gpus", lambda: 1)
    monkeypatch.setattr(torch.nn.Module, "to", to)
    return sent


@pytest.fixture(scope="module")
def arena_policy():
    from selfplay.data import resolve_builtin
    return resolve_builtin("builtin:arena")


@pytest.fixture(scope="module")
def tiny_pairrm(tmp_path_factory):
    from fixtures_judges import build_tiny_pairrm
    return build_tiny_pairrm(tmp_path_factory.mktemp("pairrm"))["hf"]


def driver_context(num_gpus: float, policy: str = ""):
    """The context the round driver builds for a config with resources.judge.num_gpus = num_gpus."""
    from pipelines.graph import judge_context
    ctx = judge_context(load_config(None, [f"resources.judge.num_gpus={num_gpus}"]), 1)
    return replace(ctx, policy=policy, previous_policy=policy, reference_policy=policy)


GPUS = pytest.mark.parametrize("num_gpus,device", [(1, "cuda"), (0, "cpu")])

# ---------------------------------------------------------------------------------------------
# the rule
# ---------------------------------------------------------------------------------------------


def test_device_for_follows_the_resources_not_the_machine():
    assert device_for(ActorResources(num_gpus=0), gpu_count=0) == "cpu"
    assert device_for(ActorResources(num_gpus=0), gpu_count=8) == "cpu"     # GPUs exist but were not given
    assert device_for(ActorResources(num_gpus=1), gpu_count=1) == "cuda"
    assert device_for(ActorResources(num_gpus=0.5), gpu_count=1) == "cuda"  # a GPU share is a GPU
    with pytest.raises(DeviceError, match=r"num_gpus=1.*sees no GPU.*num_gpus to 0"):
        device_for(ActorResources(num_gpus=1), gpu_count=0)


def test_the_driver_plans_from_resources_and_the_actor_confirms(monkeypatch, tiny_pairrm):
    """The driver sees no GPU yet plans cuda; a judge actor that then sees none refuses to build."""
    import selfplay.devices
    monkeypatch.setattr(selfplay.devices, "visible_gpus", lambda: 0)
    ctx = driver_context(1)
    assert ctx.device == "cuda"
    with pytest.raises(DeviceError, match="sees no GPU"):
        build_judge("pairrm", JudgeConfig(name="pairrm", model=str(tiny_pairrm)), ctx)


# ---------------------------------------------------------------------------------------------
# every model-holding judge
# ---------------------------------------------------------------------------------------------

@GPUS
def test_pairrm_device_follows_resources(fake_gpu, tiny_pairrm, num_gpus, device):
    j = build_judge("pairrm", JudgeConfig(name="pairrm", model=str(tiny_pairrm)), driver_context(num_gpus))
    assert j.device == device and set(fake_gpu) == {device}


@GPUS
def test_llm_local_scorer_device_follows_resources(fake_gpu, arena_policy, num_gpus, device):
    j = build_judge("llm", JudgeConfig(name="llm", model=arena_policy), driver_context(num_gpus))
    assert j.verdicts.scorer.device == device and set(fake_gpu) == {device}


@GPUS
def test_self_reward_device_follows_resources(fake_gpu, arena_policy, monkeypatch, num_gpus, device):
    import judges.scoring
    asked, real = [], judges.scoring.build_scorer

    def on_cpu(backend, path, *, device, batch_size):   # records the device, computes on the CPU
        asked.append(device)
        return real(backend, path, device="cpu", batch_size=batch_size)

    monkeypatch.setattr(judges.scoring, "build_scorer", on_cpu)
    cfg = JudgeConfig(name="self_reward", score_mode="logprobs")
    j = build_judge("self_reward", cfg, driver_context(num_gpus, arena_policy))
    assert j.device == device
    assert np.isfinite(j.score(["Describe the forest."], ["trees moss"])).all() and asked == [device]
    j.close()


@GPUS
def test_cream_device_follows_resources(fake_gpu, arena_policy, num_gpus, device):
    j = build_judge("cream", JudgeConfig(name="cream"), driver_context(num_gpus, arena_policy))
    assert j.device == device
    p = j.compare(["Describe the forest."], ["trees moss"], ["boldly"])   # loads the policy: sent to `device`
    assert np.isfinite(p).all() and j.models_loaded == 1 and set(fake_gpu) == {device}


# ---------------------------------------------------------------------------------------------
# the eval judge: the device of the actor it runs in
# ---------------------------------------------------------------------------------------------

class _Stop(Exception):
    pass


@pytest.mark.parametrize("engines,expected", [(1, "cuda"), (2, "cpu")])
def test_eval_judge_device_is_that_of_its_actor(tmp_path, monkeypatch, engines, expected):
    """One engine: the eval judge runs in the evaluate stage's actor (resources.generation, a GPU
    here); several: in a judge actor (resources.judge, none here)."""
    import pipelines.actors
    import pipelines.evaluate as ev

    seen = []

    def versus_all(earlier, new_dir, cfg, ctx):
        seen.append(ctx.device)
        raise _Stop

    monkeypatch.setattr(ev, "generate", lambda *a, **k: {})
    monkeypatch.setattr(ev, "versus_all", versus_all)
    cfg = load_config(None, [f"run_dir={tmp_path}", "resources.generation.num_gpus=1",
                             "resources.judge.num_gpus=0", f"generation.num_engines={engines}"])
    from pipelines.graph import judge_context
    with pytest.raises(_Stop):
        ev.evaluate(tmp_path / "policy", [tmp_path / "eval0"], cfg, 1, judge_context(cfg, 1), {}, tmp_path / "eval")
    assert seen == [expected]


# ---------------------------------------------------------------------------------------------
# resources.stage_retries: every fanned-out stage hands it to its shards
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage,role", [("generate", "generation"), ("judge", "judge"), ("evaluate", "judge")])
def test_every_fanned_out_stage_gives_its_shards_resources_stage_retries(tmp_path, monkeypatch, arena_policy,
                                                                        stage, role):
    """map_in_actors reruns a dead shard `retries` times (tests/test_kill_resume.py); here, each stage that
    fans out gets, through the stage runner, the config's resources.stage_retries as that bound, not
    map_in_actors' default. The stage is the one pipelines/graph.py declares, run by pipelines/runner.py,
    whose actor here is this process."""
    import pipelines.actors
    import pipelines.evaluate as ev
    import pipelines.stages as st
    from pipelines.graph import RoundError, stages
    from pipelines.runner import StageRunner, StageSettings

    seen = []

    def map_in_actors(role, res, fn, calls, *, retries):
        seen.append((role, len(calls), retries))
        raise _Stop

    class HereActors:   # the stage's actor is this process
        def run_in_actor(self, role, resources, fn, *args, **kwargs):
            return fn(*args), {}

    monkeypatch.setattr(pipelines.actors, "map_in_actors", map_in_actors)
    cfg = load_config(None, [f"run_dir={tmp_path}", "resources.stage_retries=3", "generation.num_engines=2",
                             "judge.num_actors=2"])
    declared = {s.name: s for s in stages(cfg, 1)}[stage]
    if stage == "judge":   # the coordinating actor reads only the prompt ids; each judge actor reads its share
        monkeypatch.setattr(st, "prompt_ids", lambda path: [f"p{i}" for i in range(4)])
    if stage == "evaluate":
        monkeypatch.setattr(ev, "generate", lambda *a, **k: {})
    monkeypatch.setattr("pipelines.runner.verified_input", lambda path, *rest: "hash")   # no earlier artifacts here
    monkeypatch.setattr("pipelines.evaluate.round_info", lambda dirs: {})
    shutil.copytree(arena_policy, tmp_path / "round_0" / "policy")   # generate reads round 0's policy
    with pytest.raises(RoundError, match=f"round 1 stage {stage} failed: _Stop"):
        StageRunner(HereActors(), StageSettings.of(cfg, None)).run(declared, cfg)
    assert seen == [(role, 1 if stage == "evaluate" else 2, 3)]
