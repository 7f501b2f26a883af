"""`make plan`: every shipped config resolves into a plan on this CPU machine, with the right actors,
devices and memory, and a plan that cannot be honoured exits 2 naming why. In-process (main(argv))
to stay fast; one test goes through the real Makefile target."""
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.plan import build_plan, main
from pipelines.config import load_config
from selfplay.memory import GIB

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("configs/*.yaml"), *ROOT.glob("configs/paper/*.yaml")])
SPPO, EGPO = "configs/paper/sppo_mistral7b_pairrm.yaml", "configs/paper/egpo_qwen25_1p5b.yaml"


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)   # config paths and the arena assets are relative to the repository


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def stages(path: str, n: int = 1, *overrides: str) -> dict:
    return {s.stage: s for s in build_plan(load_config(path, list(overrides)), n, path).stages}


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_plans_every_round_it_has_prompts_for(config, capsys):
    assert len(CONFIGS) >= 13
    for n in (1, 3):
        rc, out, err = run(capsys, "--config", config, "--round", str(n))
        assert rc == 0, err
        assert f"✓ round {n} can run as configured" in out and err == ""
        lines = out.splitlines()
        assert len(lines) <= 25, "the plan must stay a table a person reads in ten seconds"
        top = next(i for i, ln in enumerate(lines) if ln.startswith("stage "))
        rows = lines[top + 1: lines.index("", top)]
        round0 = ["init"] + (["sft"] if load_config(config).init.sft_data else []) + ["eval"]
        assert [ln.split()[0] for ln in rows] == (round0 if n == 1 else []) + [
            "generate", "judge", "preferences", "train", "evaluate", "eval"]


def test_sppo_paper_trains_on_8_fsdp_workers_with_fp32_masters():
    s = stages(SPPO)
    t = s["train"]
    assert (t.actors, t.device, t.resources.num_gpus, t.training) == (8, "cuda", 1, "fsdp×8, full FT, rmsprop")
    assert t.dtype == "fp32 masters, bf16 compute" and t.references == ("previous=r0 (the policy)",)
    n = 7.24e9
    assert t.memory.bytes == pytest.approx((8 + 4 * 1) * n / 8 + 2 * 2 * n / 32)   # + two gathered bf16 layers
    assert t.memory.limit == 0.9 * 80 * GIB and t.memory.fits
    assert (s["generate"].actors, s["generate"].memory.bytes) == (8, 2 * n)
    assert "iter1" in s["generate"].prompts and "iter3" in stages(SPPO, 3)["generate"].prompts
    assert s["judge"].device == "cuda" and s["judge"].memory.bytes == pytest.approx(0.44e9 * 2)
    assert s["eval judge"].role == "judge"       # 8 engines: the eval judge gets its own judge actor


def test_egpo_paper_is_lora_256_on_one_worker():
    s = stages(EGPO)
    t = s["train"]
    assert (t.actors, t.device, t.dtype) == (1, "cuda", "bf16 base + fp32 LoRA")
    assert t.training.startswith("ddp×1, LoRA r256 (") and "est." in t.training
    assert "q_proj+v_proj" in t.training     # train.lora_targets: the authors' peft default for qwen2
    adapters = 256 * (2 + 2) * 1536 * 28     # q_proj and v_proj, ~2·hidden wide each (memory.LORA_WIDTHS)
    assert t.memory.bytes == pytest.approx(2 * 1.54e9 + 16 * adapters)
    assert s["judge"].memory.bytes is None and s["judge"].problem == ""    # a hub judge: unsized, not refused
    assert s["eval judge"].role == "generation"   # one engine: judged in the generation actor
    assert stages(EGPO, 2)["train"].references == ("initial=r0",)


def test_arena_runs_on_cpu_with_nothing_to_check():
    s = stages("configs/arena_sppo.yaml")
    assert {x.device for x in s.values()} == {"cpu"}
    assert all(x.memory.limit is None for x in s.values())
    assert s["train"].memory.bytes > 0 and s["generate"].prompts.startswith("builtin:arena/train[0:96]")


def test_api_judge_and_references_per_round():
    s = stages("configs/paper/dno_orca25_mistral7b.yaml")
    assert (s["judge"].device, s["judge"].memory.bytes) == ("cpu", 0) and "API" in s["judge"].judge
    assert stages("configs/paper/inpo_llama3_8b.yaml", 2)["train"].references == ("initial=r0", "previous=r1 (the policy)")
    assert stages("configs/paper/apo_mistral7b.yaml", 3)["train"].references == ("previous=r2 (the policy)", "previous2=r1")


def test_reference_rounds_match_the_round_driver():
    from pipelines.graph import references
    from pipelines.layout import round_paths
    from selfplay.memory import reference_round
    for n in (1, 2, 5):
        for config in (SPPO, "configs/paper/inpo_llama3_8b.yaml", "configs/paper/apo_mistral7b.yaml"):
            cfg = load_config(config)
            paths = references(cfg, n)   # every reference kind: previous (sppo), initial (inpo), previous2 (apo)
            assert all(p == round_paths(cfg.run_dir, reference_round(k, n)).policy for k, p in paths.items())


def test_a_7b_full_finetune_on_one_gpu_is_refused(capsys):
    rc, out, err = run(capsys, "--config", SPPO, "train.workers=1", "train.strategy=ddp")
    assert rc == 2
    assert "94.4/72.0 ✗" in out and "✗ cannot run" in out
    assert "error: trainer: a 7.24B-parameter policy needs 94.4 GiB per GPU" in err


def test_a_round_past_the_per_round_prompt_list_is_refused(capsys):
    rc, out, err = run(capsys, "--config", SPPO, "--round", "4")
    assert rc == 2 and "round 4 has no source of its own" in err
    assert run(capsys, "--config", SPPO, "--round", "4", "data.reuse_prompts=true")[0] == 0
    rc, _, err = run(capsys, "--config", "configs/arena_sppo.yaml", "--round", "4")   # a local pool is counted
    assert rc == 2 and "pool of 288 prompts" in err


def test_offload_reports_host_memory(capsys):
    t = stages(SPPO, 1, "train.workers=1", "train.strategy=fsdp_offload")["train"]
    assert t.memory.bytes == pytest.approx(2 * 2 * 7.24e9 / 32) and t.memory.host == pytest.approx(12 * 7.24e9)
    rc, out, _ = run(capsys, "--config", SPPO, "train.workers=1", "train.strategy=fsdp_offload")
    assert rc == 0 and "0.8/72.0 ✓ +80.9 host" in out


def test_unknown_model_size_refuses_gpu_configs_only(capsys):
    rc, out, err = run(capsys, "--config", SPPO, "model.num_parameters=0")
    assert rc == 2 and "unknown (set model.num_parameters)" in out + err
    rc, out, err = run(capsys, "--config", "configs/arena_sppo.yaml", "model.policy=org/not-on-disk")
    assert rc == 0 and "unknown (set model.num_parameters)" in out


def test_config_errors_exit_2(capsys):
    rc, _, err = run(capsys, "--config", SPPO, "train.optimizer=lion")
    assert rc == 2 and err.startswith("error: train.optimizer")
    assert run(capsys, "--config", SPPO, "--round", "0")[0] == 2
    rc, _, err = run(capsys, "--config", SPPO, "train.strategy=fsdp_offload", "resources.trainer.num_gpus=0")
    assert rc == 2 and "fsdp_offload" in err


def test_make_plan_target_runs_without_ray_or_vllm():
    # -o: never rebuild the virtual environment from a test (it is older than pyproject.toml when edited)
    r = subprocess.run(["make", "-s", "-o", ".venv/.installed", "plan", f"CONFIG={EGPO}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "LoRA r256" in r.stdout and "✓ round 1 can run as configured" in r.stdout
    code = ("import sys; from pipelines.plan import main; main(['--config', %r]); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'vllm'}))" % SPPO)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_the_assumed_gpu_size_decides_what_fits(capsys):
    """resources.gpu_memory_gb is what the plan budgets against: the one-GPU 7B SPPO that 80 GB refuses
    (94.4 GiB > 72) fits a 141 GB GPU (limit 126.9 GiB)."""
    one_gpu = ["train.workers=1", "train.strategy=ddp"]
    assert run(capsys, "--config", SPPO, *one_gpu)[0] == 2
    rc, out, _ = run(capsys, "--config", SPPO, *one_gpu, "resources.gpu_memory_gb=141")
    assert rc == 0 and "94.4/126.9 ✓" in out
