"""A stage actor's torch uses as many threads as the cores the actor holds (resources.num_cpus):
on a busy machine, more threads than cores made the trainer 6-15x slower in our measurement."""
from __future__ import annotations

from selfplay.config import ActorResources


def _threads() -> tuple[int, str]:
    import os

    import torch
    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", "")


def test_thread_count_follows_the_actor_cores(monkeypatch):
    from pipelines.actors import torch_threads
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [torch_threads(ActorResources(num_cpus=c)) for c in (0, 0.5, 1, 3)] == [1, 1, 1, 3]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")   # exported by the user: it wins, as for the actor's environment
    assert torch_threads(ActorResources(num_cpus=4)) == 2


def test_stage_actor_sets_torch_threads():
    import torch

    from pipelines.actors import StageActor
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        (threads, _), _ = StageActor._run(_threads, (), {}, 1)
        assert threads == 1
    finally:
        torch.set_num_threads(before)


def test_run_in_actor_passes_the_thread_count(ray_local, monkeypatch):
    """OMP_NUM_THREADS=2 exported: the actor's environment is left to Ray (which gives a 1-CPU actor
    OMP_NUM_THREADS=1, hence 1 torch thread); torch gets the 2 threads asked for, from StageActor._run."""
    import torch

    from pipelines.actors import Actors
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    threads, mem = Actors().run_in_actor("trainer", ActorResources(num_cpus=1), torch.get_num_threads)
    assert threads == 2 and mem["peak_rss_mb"] > 0
