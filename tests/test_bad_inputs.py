"""Every bad input gets one clear message, exit 2 (the invocation cannot run as asked) or 1 (a failure:
a corrupt earlier artifact, a failed stage), no traceback, and leaves the run dir as it was.

Covered elsewhere, not repeated here: each bad config value's message (tests/test_config.py
test_bad_values_give_one_clear_message: unknown keys, wrong types, ranges, unknown algorithm and judge,
a missing prompt file), rounds past the prompt pool (tests/test_prompts_per_round.py), a closed judge
endpoint without retries (tests/test_judge_llm.py test_endpoint_server_error_stops_the_stage), a NaN
loss that stops the stage before saving (tests/test_console.py test_a_failing_stage_shows_its_error_and_log_tail).
"""
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fixtures_round import TINY, copy_run, finished_round, tree_digest
from pipelines.round import main
from selfplay.artifacts import Manifest, hash_dir, remember_verified, verify_artifact

CONFIG = "configs/arena_sppo.yaml"


def run_main(capsys, *args: str) -> tuple[int, str]:
    rc = main(["--round", *args])
    return rc, capsys.readouterr().err


def one_error(err: str) -> str:
    """The single `error:` line a refused invocation prints (and nothing that looks like a traceback)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def fake_artifact(d: Path, files: dict[str, bytes], stage: str = "x") -> Path:
    """A finished artifact dir: files plus a manifest whose output_hash is theirs."""
    d.mkdir(parents=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    Manifest(stage=stage, key="k", config_hash="c", seeds={}, inputs={}, output_hash=hash_dir(d)).write(d)
    return d


def fake_round_1(run: Path) -> Path:
    """round_0 and round_1 dirs with the manifests a round-2 invocation checks (small files, real hashes)."""
    for k in (0, 1):
        fake_artifact(run / f"round_{k}/policy", {"model.safetensors": os.urandom(4096)})
        fake_artifact(run / f"round_{k}/eval", {"metrics.json": b"{}"})
    return run


# ---------------------------------------------------------------- the invocation and the config

@pytest.mark.parametrize("spec", ["-1", "abc", "3-1", "0", "1-", ""])
def test_bad_round_values(capsys, tmp_path, spec):
    rc, err = run_main(capsys, spec, "--config", CONFIG, f"run_dir={tmp_path / 'run'}")
    assert rc == 2
    assert one_error(err) == (f"error: --round / ROUND: expected a round number n >= 1 or a range a-b with "
                              f"1 <= a <= b, got {spec!r} (round 0, the initial policy, is made by round 1)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, message", [
    ("train: {lr: 1e-4\n", "not valid YAML"),                                  # syntax
    ("- train\n- data\n", "the config must be a mapping of sections, got a YAML list"),
    ("trian: {lr: 0.1}\n", "unknown key trian"),
    ("generation: {k: two}\n", "generation.k: expected int, got 'two'"),
    ("generation: {temperature: 0}\n", "generation.temperature: must be in (0, 10]"),
    ("algorithm: ppo\n", "algorithm: unknown 'ppo'"),
    ("judge: {name: gpt5}\n", "judge.name: unknown 'gpt5'"),
    ("generation: {backend: tgi}\n", "generation.backend: unknown 'tgi'"),
    ("judge: {backend: tgi}\n", "judge.backend: unknown 'tgi'"),
])
def test_bad_config_files(capsys, tmp_path, text, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    rc, err = run_main(capsys, "1", "--config", str(cfg), f"run_dir={tmp_path / 'run'}")
    assert rc == 2 and message in one_error(err), err
    assert not (tmp_path / "run").exists()


def test_verbose_shows_the_traceback_too(capsys, tmp_path):
    rc = main(["--round", "1", "--config", CONFIG, f"run_dir={tmp_path}", "generation.k=1", "-v"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: generation.k")


def test_missing_earlier_round(capsys, tmp_path):
    rc, err = run_main(capsys, "3", "--config", CONFIG, f"run_dir={tmp_path}")
    assert rc == 2 and one_error(err) == (f"error: round 2 is not complete in {tmp_path} (missing policy, eval); "
                                          "run ROUND=2 first")


# ---------------------------------------------------------------- prompt files

def _prompts(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("key", ["data.train_prompts", "data.eval_prompts"])
@pytest.mark.parametrize("name, text, message", [
    ("empty.jsonl", "", "the file is empty (no prompts)"),
    ("blank.jsonl", "\n  \n", "the file is empty (no prompts)"),
    ("bad.jsonl", '{"prompt": "a"}\n{"prompt": \n', "line 2 is not valid JSON"),
    ("list.jsonl", "[1, 2]\n", "line 1 is a JSON list, not an object with named columns"),
    ("space.jsonl", '{"prompt": "a"}\n{"prompt": "   "}\n', "1 empty prompt(s), first id '1'"),
    ("nocol.jsonl", '{"text": "a"}\n', "no column 'prompt'"),
    ("dup.jsonl", '{"prompt_id": "x", "prompt": "a"}\n{"prompt_id": "x", "prompt": "b"}\n', "duplicate values"),
    ("p.txt", "hello\n", "unsupported file type '.txt'"),
])
def test_bad_prompt_files(capsys, tmp_path, key, name, text, message):
    src = _prompts(tmp_path, name, text)
    rc, err = run_main(capsys, "1", "--config", CONFIG, f"run_dir={tmp_path / 'run'}", f"{key}={src}",
                       "data.prompts_per_round=1")
    line = one_error(err)
    assert rc == 2 and str(src) in line and message in line, err
    assert not (tmp_path / "run").exists()


def test_an_overlong_prompt_is_refused_before_anything_runs(capsys, tmp_path):
    """A prompt that takes model.max_length tokens leaves no response token to train on (selfplay/data.py)."""
    from selfplay.assets import build_assets
    from selfplay.data import assets_root
    build_assets(assets_root())   # the check reads the starting policy's tokenizer (cached: free once built)
    src = _prompts(tmp_path, "p.jsonl", '{"prompt": "Describe the forest."}\n'
                   + json.dumps({"prompt": "Describe the forest " + "and the sea " * 40}) + "\n")
    rc, err = run_main(capsys, "1", "--config", CONFIG, f"run_dir={tmp_path / 'run'}", f"data.train_prompts={src}",
                       "data.prompts_per_round=2", "model.max_length=64")
    line = one_error(err)
    assert rc == 2 and "1 of 2 prompts take model.max_length=64 tokens or more" in line and "id '1'" in line, err
    assert not (tmp_path / "run").exists()
    assert run_main(capsys, "1", "--config", CONFIG, f"run_dir={tmp_path / 'run'}", f"data.train_prompts={src}",
                    "data.prompts_per_round=2", "model.max_length=512", "--print-config")[0] == 0


def test_prompt_length_counts_the_chat_template(tmp_path):
    from transformers import AutoTokenizer

    from fixtures_policy import build_tiny_policy
    from selfplay.data import DataError, check_prompt_lengths, prompt_token_counts
    from selfplay.logprobs import encode_pairs
    from selfplay.records import PromptRow
    tok = AutoTokenizer.from_pretrained(build_tiny_policy(tmp_path))
    rows = [PromptRow("a", "short"), PromptRow("b", "long " * 30)]
    counts = prompt_token_counts(tok, [r.prompt for r in rows])
    # what the trainer sees: the response mask starts right after these tokens
    _, _, mask = encode_pairs(tok, [r.prompt for r in rows], ["ok", "ok"], max_length=1000)
    assert counts == [int(m.nonzero()[0]) for m in mask]
    check_prompt_lengths(rows, tok, counts[1] + 1, "x")          # room for one response token: accepted
    with pytest.raises(DataError, match=f"x: 1 of 2 prompts take model.max_length={counts[1]} tokens"):
        check_prompt_lengths(rows, tok, counts[1], "x")


# ---------------------------------------------------------------- the run directory

def test_a_file_in_place_of_a_round_dir(capsys, tmp_path):
    run = fake_round_1(tmp_path / "run")
    (run / "round_2").write_text("not a directory")
    before = tree_digest(run)
    rc, err = run_main(capsys, "2", "--config", CONFIG, f"run_dir={run}")
    assert rc == 2 and one_error(err) == (f"error: {run / 'round_2'} is a file, not a directory: move it away, "
                                          "or choose another run_dir")
    assert tree_digest(run) == before


def test_a_file_in_place_of_the_run_dir(capsys, tmp_path):
    (tmp_path / "run").write_text("x")
    rc, err = run_main(capsys, "1", "--config", CONFIG, f"run_dir={tmp_path / 'run' / 'sub'}")
    assert rc == 2 and "is a file, not a directory" in one_error(err)


def _make_immutable(d: Path) -> list[str]:
    """chattr +i as root (chmod does not stop root), chmod 0555 otherwise; the command that undoes it."""
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(d)], check=True)
        return ["chattr", "-i", str(d)]
    d.chmod(0o555)
    return ["chmod", "755", str(d)]


def test_an_immutable_run_dir(capsys, tmp_path):
    run = fake_round_1(tmp_path / "run")
    before = tree_digest(run)
    undo = _make_immutable(run / "round_1")   # round 2 reads round 1 but writes run/round_2 and run/logs ...
    try:
        (run / "logs").mkdir()
        undo2 = _make_immutable(run)           # ... which it cannot make here
        try:
            rc, err = run_main(capsys, "2", "--config", CONFIG, f"run_dir={run}")
        finally:
            subprocess.run(undo2, check=True)
    finally:
        subprocess.run(undo, check=True)
    line = one_error(err)
    assert rc == 2 and line.startswith(f"error: cannot write in {run}: ") and "errno" in line, err
    (run / "logs").rmdir()
    assert tree_digest(run) == before


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 1 MiB tmpfs, mounted here (root only), filled up once the test has put its files on it."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN); the ENOSPC case is not testable without it")

    def fill() -> None:
        with open(mnt / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
    yield mnt, fill
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_run_dir(capsys, full_tmpfs):
    mnt, fill = full_tmpfs
    run = fake_round_1(mnt / "run")
    before = tree_digest(run)
    fill()
    rc, err = run_main(capsys, "2", "--config", CONFIG, f"run_dir={run}")
    line = one_error(err)
    assert rc == 2 and line.startswith(f"error: cannot write in {run}: No space left on device"), err
    assert tree_digest(run) == before


# ---------------------------------------------------------------- earlier artifacts: verified, not trusted

def test_a_corrupt_manifest_of_an_earlier_round(capsys, tmp_path):
    run = fake_round_1(tmp_path / "run")
    (run / "round_1/policy/manifest.json").write_text('{"stage": "train", "key": ')
    before = tree_digest(run)
    rc, err = run_main(capsys, "2", "--config", CONFIG, f"run_dir={run}")
    line = one_error(err)
    assert rc == 1 and line.startswith(f"error: {run}/round_1/policy/manifest.json is not a valid manifest"), err
    assert tree_digest(run) == before


def test_verification_hashes_once_and_names_the_changed_file(tmp_path, monkeypatch):
    import selfplay.artifacts as art
    d = fake_artifact(tmp_path / "round_1" / "policy", {"model.safetensors": os.urandom(1 << 16), "config.json": b"{}"})
    calls = []
    monkeypatch.setattr(art, "hash_dir", lambda p, *rest: calls.append(p) or hash_dir(p, *rest))
    h = verify_artifact(d)
    assert verify_artifact(d) == verify_artifact(d) == h and len(calls) == 1   # then the signature cache answers
    f = d / "model.safetensors"
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[100] ^= 1                                     # one bit, same size, and the old mtime put back
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(art.ArtifactError, match=r"its files do not match its manifest"):
        verify_artifact(d)                             # ctime changed: hashed again, caught
    f.write_bytes(bytes(data[:-10]))                   # truncated: named from the last verified signature
    with pytest.raises(art.ArtifactError, match=r"changed: model\.safetensors$"):
        verify_artifact(d)


def test_the_driver_records_what_it_just_hashed(tmp_path, monkeypatch):
    """remember_verified (run_stage calls it after a commit) spares the next stage a hash of the same files."""
    import selfplay.artifacts as art
    d = fake_artifact(tmp_path / "round_1" / "policy", {"a": b"1"})
    remember_verified(d, json.loads((d / "manifest.json").read_text())["output_hash"])
    monkeypatch.setattr(art, "hash_dir", lambda p, *rest: pytest.fail("hashed again"))
    assert verify_artifact(d)


# ---------------------------------------------------------------- judges

class _Counting(http.server.BaseHTTPRequestHandler):
    times: list = []

    def do_POST(self):  # noqa: N802
        type(self).times.append(time.monotonic())
        self.send_response(503)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_an_unreachable_judge_endpoint_is_retried_with_backoff_then_named():
    from judges.llm import ChatEndpoint
    server = http.server.HTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        with pytest.raises(RuntimeError, match=f"llm judge endpoint {url}/chat/completions answered HTTP 503"):
            ChatEndpoint(url, "m", retries=2, timeout_s=5).request("q")
    finally:
        server.shutdown()
    t = _Counting.times
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert len(t) == 3 and 0.45 < gaps[0] < gaps[1] and gaps[1] > 0.95, gaps   # 0.5 s, then 1 s
    closed = "http://127.0.0.1:9/v1"                   # nothing listens on port 9
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=f"llm judge endpoint {closed}/chat/completions unreachable"):
        ChatEndpoint(closed, "m", retries=2, timeout_s=2).request("q")
    assert time.monotonic() - t0 >= 1.5                # the same backoff before giving up


def test_a_judge_that_abstains_on_every_pair_stops_the_round_before_training(tmp_path):
    import datasets

    from pipelines.stages import preferences
    from pipelines.config import load_config
    nan = float("nan")
    rows = [{"prompt_id": str(i), "prompt": f"q{i}", "responses": ["a", "b", "c"], "n_tokens": [1, 1, 1],
             "matrix": [[0.5, nan, nan], [nan, 0.5, nan], [nan, nan, 0.5]], "judge": "llm"} for i in range(4)]
    judged = tmp_path / "judgments"
    datasets.Dataset.from_list(rows).save_to_disk(str(judged))
    Manifest(stage="judge", key="k", config_hash="c", seeds={}, inputs={}, output_hash=hash_dir(judged),
             extra={"judge": "llm", "pairs": 24, "abstain_rate": 1.0}).write(judged)
    cfg = load_config(CONFIG)
    with pytest.raises(ValueError, match=r"round 1: the judge \(llm\) abstained on every one of the 24 comparisons "
                                         r"it was asked \(abstain_rate 100%\); refusing to train on nothing"):
        preferences(judged, cfg, 1, [], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- cases on a finished round 1 (slow)

@pytest.fixture(scope="module")
def done(tmp_path_factory):
    return finished_round(tmp_path_factory.mktemp("finished"))


def _round(run: Path, n: str, *extra: str) -> list[str]:
    return ["--round", n, "--config", CONFIG, f"run_dir={run}", *TINY, "wandb.mode=disabled", *extra]


def _flip(f: Path) -> None:
    data = bytearray(f.read_bytes())
    for i in range(0, len(data), max(1, len(data) // 1024)):
        data[i] ^= 1                                          # 1,024 low bits, same size
    f.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("damage", [
    _flip,
    lambda f: f.write_bytes(os.urandom(f.stat().st_size)),   # garbled, same size
    lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),   # truncated
])
def test_a_damaged_checkpoint_stops_the_next_round(capsys, tmp_path, done, damage):
    run = copy_run(done.run_dir, tmp_path / "run")
    weights = run / "round_1/policy/model.safetensors"
    damage(weights)
    before = tree_digest(run)
    rc = main(_round(run, "2"))
    line = one_error(capsys.readouterr().err)
    assert rc == 1, line
    assert line.startswith(f"error: {run}/round_1/policy: its files do not match its manifest"), line
    assert "changed: model.safetensors" in line
    assert line.endswith(f"Regenerate it: delete {run}/round_1/policy and run `python -m pipelines.round --round 1 "
                         f"--config {CONFIG} run_dir={run} {' '.join(TINY)} wandb.mode=disabled`"), line
    assert tree_digest(run) == before and not (run / "round_2").exists()


@pytest.mark.slow
def test_a_corrupt_manifest_of_a_finished_round(capsys, tmp_path, done):
    run = copy_run(done.run_dir, tmp_path / "run")
    m = run / "round_1/eval/manifest.json"
    m.write_text(m.read_text()[:40])
    before = tree_digest(run)
    rc = main(_round(run, "2"))
    line = one_error(capsys.readouterr().err)
    assert rc == 1 and line.startswith(f"error: {m} is not a valid manifest (JSONDecodeError"), line
    assert tree_digest(run) == before


@pytest.mark.slow
@pytest.mark.parametrize("n, change, named", [
    ("1", "data.eval_limit=4", "data.eval_limit: 8 → 4"),               # round 0's eval samples
    ("1", "judge.batch_size=8", "eval_judge.batch_size: 32 → 8"),         # the eval judge follows judge:
    ("1", "seed=7", "seed: 0 → 7"),
    ("2", "seed=7", "seed: 0 → 7"),                                       # another config entirely
    ("2", "algorithm=dpo", "algorithm: 'sppo' → 'dpo'"),
])
def test_a_config_change_that_would_rewrite_history_is_refused(capsys, tmp_path, done, n, change, named):
    run = copy_run(done.run_dir, tmp_path / "run")
    before = tree_digest(run)
    rc = main(_round(run, n, change))
    line = one_error(capsys.readouterr().err)
    assert rc == 2 and named in line and "A run dir holds one history: use a new run_dir" in line, line
    assert "--force" in line
    assert tree_digest(run) == before


@pytest.mark.slow
def test_force_keeps_the_replaced_artifact_beside_the_new_one(capsys, tmp_path, done, ray_local):
    run = copy_run(done.run_dir, tmp_path / "run")
    old_eval = tree_digest(run / "round_0/eval")
    # (a model card, README.md, reports its policy's evaluation: redone, it reports the new one)
    keep = {k: v for k, v in tree_digest(run).items() if not k.startswith(("round_0/eval", "round_1/eval", "logs",
                                                                          "config.yaml", "dashboard"))
            and not k.endswith("/policy/README.md")}
    assert main(_round(run, "1", "eval.samples_per_prompt=1", "--force")) == 0
    replaced = sorted(run.glob("round_0/eval.replaced-*"))
    assert len(replaced) == 1 and tree_digest(replaced[0]) == old_eval        # the old one, byte for byte
    m = json.loads((run / "round_0/eval/manifest.json").read_text())
    assert m["extra"]["samples"] == 8 and tree_digest(run / "round_0/eval") != old_eval   # 8 prompts × 1 sample
    now = tree_digest(run)
    assert [k for k, v in keep.items() if now.get(k) != v] == []              # round 1's policy etc. untouched
    capsys.readouterr()
    assert main(_round(run, "1", "eval.samples_per_prompt=1")) == 0          # the new history is now the run's


@pytest.mark.slow
def test_an_artifact_damaged_inside_the_rounds_being_run(capsys, tmp_path, done, ray_local):
    """Round 1's own generations, changed after they were written: re-running round 1 stops at the first stage
    that would read them (run_stage verifies every input), before anything is rewritten."""
    run = copy_run(done.run_dir, tmp_path / "run")
    f = next((run / "round_1/generations").glob("*.arrow"))
    _flip(f)
    before = tree_digest(run, skip=("logs", "config.yaml"))
    rc = main(_round(run, "1"))
    err = capsys.readouterr().err
    line = one_error(err)
    assert rc == 1 and line.startswith(f"error: {run}/round_1/generations: its files do not match"), err
    assert line.endswith(f"Regenerate it: delete {run}/round_1/generations and run the command again"), line
    assert tree_digest(run, skip=("logs", "config.yaml")) == before


@pytest.mark.slow
def test_a_disk_that_fills_up_during_a_round(capsys, tmp_path, done, ray_local):
    mnt = tmp_path / "small"
    mnt.mkdir()
    size = sum(f.stat().st_size for f in done.run_dir.rglob("*") if f.is_file() and "wandb" not in f.parts)
    opts = f"size={size + (1 << 20)}"   # the run plus 1 MiB: the checks pass, round 2's files do not fit
    if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        run = copy_run(done.run_dir, mnt / "run")
        before = tree_digest(run, skip=("logs", "config.yaml", "round_2"))
        rc = main(_round(run, "2", "generation.k=8", "data.eval_limit=8"))
        err = capsys.readouterr().err
        assert rc == 1 and "No space left on device" in err and "Traceback" not in err.split("--- last")[0], err
        assert tree_digest(run, skip=("logs", "config.yaml", "round_2")) == before
        assert not list(run.glob("round_2/.*.tmp-*"))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ---------------------------------------------------------------- values and files a user may hand over

@pytest.mark.parametrize("override, said", [
    ("train.lr=[1", "'[1' is not a YAML value"),
    ('train.lr=!!python/object/apply:os.system ["id > pwned"]', "could not determine a constructor for the tag"),
])
def test_an_override_that_is_not_a_yaml_value(capsys, tmp_path, override, said):
    rc, err = run_main(capsys, "1", "--config", CONFIG, f"run_dir={tmp_path / 'run'}", override)
    line = one_error(err)
    assert rc == 2 and line.startswith(f"error: override {override!r}: ") and said in line, line
    assert not (tmp_path / "run").exists() and not Path("pwned").exists()


def test_a_huge_round_range_is_refused_at_once(capsys, tmp_path):
    t0 = time.monotonic()
    rc, err = run_main(capsys, "1-100000000", "--config", CONFIG, f"run_dir={tmp_path / 'run'}")
    line = one_error(err)
    assert rc == 2 and "asks for 100000000 rounds in one invocation; at most 1000" in line, line
    assert time.monotonic() - t0 < 10 and not (tmp_path / "run").exists()


def test_an_eval_prompt_longer_than_the_model_is_refused(capsys, tmp_path):
    """A 4,000-token eval prompt for the arena's 256-position policy: named before anything runs."""
    src = _prompts(tmp_path, "long.jsonl", json.dumps({"prompt_id": "long", "prompt": "wave " * 4000}) + "\n"
                   + json.dumps({"prompt_id": "ok", "prompt": "Describe the ocean."}) + "\n")
    rc, err = run_main(capsys, "1", "--config", CONFIG, f"run_dir={tmp_path / 'run'}", f"data.eval_prompts={src}",
                       "eval_judge.name=oracle")
    line = one_error(err)
    assert rc == 2 and f"{src}: 1 of 2 prompts leave no room for generation.max_new_tokens=24" in line, line
    assert "in the policy's 256 positions (first: id 'long'" in line and not (tmp_path / "run").exists()


def test_model_max_length_past_the_model_is_refused(capsys, tmp_path):
    rc, err = run_main(capsys, "1", "--config", CONFIG, f"run_dir={tmp_path / 'run'}", "model.max_length=4096")
    line = one_error(err)
    assert rc == 2 and "model.max_length=4096 is more than the 256 positions the policy has" in line, line


@pytest.mark.parametrize("key", ["data.train_prompts", "data.eval_prompts"])
@pytest.mark.parametrize("name, data, said", [
    ("latin1.jsonl", b'{"prompt": "a"}\n{"prompt": "caf\xe9 au lait"}\n', "line 2 is not UTF-8 text (byte 0xe9"),
    ("null.jsonl", b'{"prompt": "a"}\n{"prompt": null}\n', "the 'prompt' of row 2 (id '1') is null"),
    ("number.jsonl", b'{"prompt": "a"}\n{"prompt": 7}\n', "the 'prompt' of row 2 (id '1') is a int, not text"),
])
def test_prompt_files_that_are_not_text(capsys, tmp_path, key, name, data, said):
    src = tmp_path / name
    src.write_bytes(data)
    rc, err = run_main(capsys, "1", "--config", CONFIG, f"run_dir={tmp_path / 'run'}", f"{key}={src}",
                       "data.prompts_per_round=1")
    line = one_error(err)
    assert rc == 2 and line.startswith(f"error: {src}") and said in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_stage_redone_for_an_unreadable_manifest_says_so(caplog, tmp_path, done, ray_local):
    import logging
    run = copy_run(done.run_dir, tmp_path / "run")
    m = run / "round_1/eval/manifest.json"
    m.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="selfplay"):
        assert main(_round(run, "1")) == 0
    said = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert said and f"its manifest {m} is unreadable" in said[0] and "running the stage again" in said[0], said
    assert json.loads(m.read_text())["stage"] == "evaluate"


def test_a_dashboard_that_cannot_be_written_is_a_warning(caplog, tmp_path, monkeypatch):
    """A full disk at the dashboard after a finished round: one warning line; the round stays a success."""
    import errno
    import logging

    import pipelines.dashboard as dash
    from pipelines.dashboard_refresh import DashboardRefresher

    def full(run_dir):
        raise dash.PageWriteError(errno.ENOSPC, f"cannot write the dashboard {run_dir}/dashboard.html: "
                                                "No space left on device")
    monkeypatch.setattr(dash, "build_dashboard", full)
    refresher = DashboardRefresher()
    with caplog.at_level(logging.WARNING, logger="selfplay"):
        refresher.refresh(tmp_path)
        refresher.close()   # raises nothing: the rounds are finished and kept
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "No space left on device" in warning and "make dashboard writes it again" in warning, warning
