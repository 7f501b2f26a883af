"""Sampling keys take effect: generation.top_k in the HF sampler and in saved generation configs, and
EGPO's opponent sampler (generation.opponent_temperature / opponent_top_k) for y″."""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.config import load_config
from selfplay.generation import Request, SamplingSpec


def _arena() -> str:
    from selfplay.data import resolve_builtin
    return str(Path(resolve_builtin("builtin:arena")).resolve())


def test_top_k_one_makes_every_sample_the_greedy_answer():
    from selfplay.hf_backend import HFBackend
    b = HFBackend(_arena(), batch_size=8)
    req = [Request("Tell me about the ocean.", seed=s) for s in (1, 2)]
    free = b.generate(req, SamplingSpec(4, 1.0, 1.0, 8))
    greedy = b.generate(req, SamplingSpec(4, 1.0, 1.0, 8, top_k=1))
    assert any(len({c.text for c in cs}) > 1 for cs in free)          # sampling varies without top-k ...
    assert all(len({c.text for c in cs}) == 1 for cs in greedy)       # ... and top-k 1 leaves one answer
    assert greedy[0][0].text == greedy[1][0].text


def test_top_k_reaches_the_saved_generation_config(tmp_path):
    from pipelines.checkpoint_files import write_generation_config
    from selfplay.trainer import load_policy
    tok, model = load_policy(_arena())
    model.save_pretrained(tmp_path)
    write_generation_config(tmp_path, load_config(None, ["generation.top_k=10"]))
    assert json.loads((tmp_path / "generation_config.json").read_text())["top_k"] == 10


def test_egpo_draws_y_and_y_prime_and_the_opponent_with_their_own_settings(monkeypatch):
    import numpy as np

    from selfplay.algorithms import egpo
    from selfplay.generation import Completion

    specs = []

    def fake_sample(model, tok, requests, spec, batch_size):
        specs.append(spec)
        return [[Completion(f"r{j}", 1, True) for j in range(spec.n)] for _ in requests]

    class Judge:
        def compare(self, prompts, a, b):
            return np.full(len(prompts), 0.5)

    class W:
        device, tok = "cpu", None

        def live_model(self):
            return None

    import selfplay.hf_backend as hf
    monkeypatch.setattr(hf, "sample_live", fake_sample)
    cfg = load_config(None, ["algorithm=egpo", "train.epochs=1", "generation.temperature=2.0", "generation.top_k=10",
                             "generation.opponent_temperature=0.7", "generation.opponent_top_k=3"])
    pairs = egpo.judged_pairs(W(), [("p0", "Tell me about the ocean.")], Judge(), cfg, 0, "t", 1)
    pair_spec, opp_spec = specs
    assert (pair_spec.n, pair_spec.temperature, pair_spec.top_k) == (2, 2.0, 10)
    assert (opp_spec.n, opp_spec.temperature, opp_spec.top_k) == (1, 0.7, 3)
    assert len(pairs) == 1 and pairs[0].chosen_winrate == 0.5
