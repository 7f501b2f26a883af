"""The README's three "how to add" examples, run as written in a copy of the repository: an algorithm copied
from dpo.py plus one config (listed by --help, accepted by make plan, a round runs, make test-fast covers it),
a judge module, a backend module. Nothing else is edited: the registries find them."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ("data.prompts_per_round=8 data.eval_limit=8 generation.k=2 generation.max_new_tokens=8 train.epochs=1 "
        "wandb.mode=disabled")


def readme_example(title: str) -> tuple[dict[str, str], list[str]]:
    """The files (a python block whose first line is `# <path>`) and shell commands of README section `title`."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    files, commands = {}, []
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        if lang == "python":
            first, rest = body.split("\n", 1)
            files[first.removeprefix("# ").strip()] = rest
        elif lang == "bash":
            commands += [ln for ln in body.splitlines() if ln.strip() and not ln.startswith("#")]
    return files, commands


@pytest.fixture
def repo(tmp_path):
    """A copy of the repository's files (git's view, mtimes kept so make sees .venv as up to date), its .venv
    linked, the arena assets read from this checkout's."""
    from selfplay.data import assets_root, resolve_builtin
    resolve_builtin("builtin:arena")                     # built here once, read by the copy
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    dest = tmp_path / "repo"
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    env = {**os.environ, "SELFPLAY_ASSETS": str(assets_root().resolve().parent), "KEEP_RAY": "0",
           "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    return dest, env


def run(repo, command: str, **extra_env) -> subprocess.CompletedProcess:
    """A README command in the copy; `make iterate` gets the tiny sizes added to its ARGS."""
    dest, env = repo
    if command.startswith("make iterate"):
        command = command.replace('ARGS="', f'ARGS="{TINY} ') if 'ARGS="' in command else f'{command} ARGS="{TINY}"'
    return subprocess.run(["bash", "-c", command], cwd=dest, env={**env, **extra_env}, capture_output=True,
                          text=True, timeout=1200)


def _write(repo, files: dict[str, str]) -> None:
    for rel, body in files.items():
        (repo[0] / rel).write_text(body)


@pytest.mark.slow
def test_adding_an_algorithm_as_the_readme_shows(repo):
    files, commands = readme_example("How to add an algorithm")
    assert not files and [c.split()[0] for c in commands] == ["cp", "sed", "python", "make", "make", "make"]
    for command in commands[:2]:
        assert run(repo, command).returncode == 0, command
    listed = run(repo, commands[2])
    assert listed.returncode == 0 and "mydpo" in listed.stdout, listed.stdout + listed.stderr
    plan = run(repo, commands[3])
    assert plan.returncode == 0 and "✓ round 1 can run as configured" in plan.stdout, plan.stdout + plan.stderr
    assert "mydpo" in plan.stdout
    iterate = run(repo, commands[4])
    assert iterate.returncode == 0, iterate.stdout[-3000:] + iterate.stderr[-3000:]
    metrics = json.loads((repo[0] / "runs/arena_mydpo/round_1/eval/metrics.json").read_text())
    assert metrics["algorithm"] == "mydpo" and 0 <= metrics["winrate_vs_initial"]["mean"] <= 1
    # make test-fast, as the README says, narrowed to the tests the new algorithm joins (the registry's)
    fast = run(repo, commands[5], PYTEST_ADDOPTS="-k mydpo -p no:cacheprovider")
    said = fast.stdout + fast.stderr
    passed = re.search(r"(\d+) passed", said)
    assert fast.returncode == 0 and passed and int(passed[1]) >= 4 and " failed" not in said, said[-3000:]


@pytest.mark.slow
def test_adding_a_judge_as_the_readme_shows(repo):
    files, commands = readme_example("How to add a judge")
    assert list(files) == ["judges/shortest.py"] and len(commands) == 1
    _write(repo, files)
    done = run(repo, commands[0])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((repo[0] / "runs/shortest/round_1/eval/metrics.json").read_text())
    assert metrics["judge"]["judge"] == "shortest" and metrics["judge"]["pairs"] > 0


@pytest.mark.slow
def test_adding_a_backend_as_the_readme_shows(repo):
    import datasets
    files, commands = readme_example("How to add a backend")
    assert list(files) == ["selfplay/backends/topicwords.py"] and len(commands) == 1
    _write(repo, files)
    done = run(repo, commands[0])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    from selfplay.arena import TOPICS, prompt_topic
    rows = datasets.load_from_disk(str(repo[0] / "runs/topicwords/round_1/generations")).to_list()
    want = {(r["prompt"], " ".join(TOPICS[prompt_topic(r["prompt"])][: 1 + r["sample_idx"]])) for r in rows}
    assert rows and {(r["prompt"], r["response"]) for r in rows} == want   # its answers, as written
