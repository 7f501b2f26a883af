"""The dashboard as a person sees it: real headless Chromium, every chart rendered, no JS errors.

Without Debian's chromium + chromium-driver the browser test fails, unless SELFPLAY_SKIP_BROWSER=1.
Set DASHBOARD_SCREENSHOT_DIR to keep the screenshot.
"""
import base64
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.dashboard import CHARTS, COMPARE_CHARTS, PageWriteError, build_comparison, build_dashboard, main

ROUND_AXIS_CHARTS = ("chart-length", "chart-loss", "chart-judge", "chart-throughput", "chart-stages")
SAMPLES_PER_ROUND = {1: 2, 3: 2}            # round 2 is an old, sparse round without samples
STEPS_PER_ROUND = {1: 6, 2: 3, 3: 5}        # train_log.jsonl lines; round 4's log is being written
REPO = Path(__file__).resolve().parents[1]
CONFIG_YAML = """run_dir: {run}
seed: 0
algorithm: {algorithm}
generation:
  backend: hf
  k: 5
  temperature: 1.0
train:
  lr: {lr}
  epochs: 3
  warmup_ratio: 0.1
eval:
  samples_per_prompt: 2
  ci_method: bootstrap
"""


def _metrics(n: int) -> dict:
    names = [f"round_{i}" for i in range(n + 1)]
    w = [[0.5 if i == j else 0.5 + 0.06 * (i - j) for j in range(n + 1)] for i in range(n + 1)]

    def wr(m: float) -> dict:
        return {"mean": m, "ci_low": m - 0.03, "ci_high": m + 0.03, "n": 96, "method": "bootstrap",
                "tie_rate": 0.02, "abstain_rate": 0.0, "lc": m - 0.05, "lc_ci_low": m - 0.09, "lc_ci_high": m - 0.01}

    return {"round": n, "algorithm": "sppo", "winrate_vs_initial": wr(0.5 + 0.06 * n), "winrate_vs_previous": wr(0.56),
            "winrate_matrix": {"policies": names, "winrate": w},
            "ratings": {"policies": names, "elo": [1000 + 40 * i for i in range(n + 1)],
                        "ci_low": [1000] + [980 + 40 * i for i in range(1, n + 1)],
                        "ci_high": [1000] + [1020 + 40 * i for i in range(1, n + 1)]},
            "cycles": [], "mean_response_tokens": 8 - n, "train_loss": 3 - 0.3 * n,
            "train_loss_curve": [3.6 - 0.3 * n, 3.2 - 0.3 * n, 3 - 0.3 * n],
            "judge": {"pairs": 1920, "pairs_per_s": 1e5 * n, "abstain_rate": 0.01 * n,
                      "position_disagreement_rate": 0.05, "mean_winner_chars": 60.0 + n, "mean_loser_chars": 55.0},
            "eval_judge": {"pairs": 768, "pairs_per_s": 2e5, "abstain_rate": 0.0, "position_disagreement_rate": 0.02},
            "stage_seconds": {"generate": 4, "judge": 2, "preferences": 1, "train": 5 + n, "evaluate": 4},
            "samples": [{"prompt": "Describe the <b>forest</b>.", "response": f"pine moss {n}\nand fern",
                         "policy": f"round_{n}"},
                        {"prompt": "Say hi & bye", "response": "<script>window.PWNED = 1</script>",
                         "policy": f"round_{n}"}]}


def _write(run: Path, n: int | str, body: str, name: str = "eval/metrics.json") -> None:
    f = run / f"round_{n}" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(body)


def _versus(n: int) -> dict:
    """Round n's versus.json: its win rate (raw and LC, with intervals) against each earlier round."""
    return {f"round_{k}": {"mean": 0.5 + 0.06 * (n - k), "ci_low": 0.45 + 0.06 * (n - k),
                           "ci_high": 0.56 + 0.06 * (n - k), "lc": 0.48 + 0.05 * (n - k),
                           "lc_ci_low": 0.41 + 0.05 * (n - k), "lc_ci_high": 0.55 + 0.05 * (n - k), "n": 96}
            for k in range(n)}


def _train_log(n: int, steps: int, loss0: float = 0.69) -> str:
    return "".join(json.dumps({"step": i + 1, "phase": "train", "loss": loss0 - 0.02 * i - 0.05 * n, "lr": 3e-4,
                               "grad_norm": 1.0 / (i + 1), "chosen_logratio": 0.01 * i, "rejected_logratio": -0.02 * i,
                               "margin": 0.03 * i, "accuracy": min(1.0, 0.5 + 0.08 * i)}) + "\n"
                   for i in range(steps))


def _fill_run(run: Path, algorithm: str = "sppo", lr: float = 3e-4, loss0: float = 0.69) -> Path:
    """Config, per-step train logs, versus.json and generation throughput beside the metrics."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(CONFIG_YAML.format(run=run, algorithm=algorithm, lr=lr))
    for n, steps in STEPS_PER_ROUND.items():
        _write(run, n, _train_log(n, steps, loss0), "policy/train_log.jsonl")
    _write(run, 4, _train_log(4, 2, loss0) + '{"step": 3, "lo', "policy/train_log.jsonl")
    for n in (1, 3):
        _write(run, n, json.dumps(_versus(n)), "eval/versus.json")
        _write(run, n, json.dumps({"extra": {"tokens_per_s": 900.0 + 100 * n}}), "generations/manifest.json")
    return run


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    for n in (1, 3):
        _write(run, n, json.dumps(_metrics(n)))
    _fill_run(run)
    # an older round: fewer keys, a NaN (json.dumps writes NaN, as old evaluate.py did), no samples
    _write(run, 2, json.dumps({"round": 2, "winrate_vs_initial": {"mean": 0.6, "ci_low": float("nan")},
                               "stage_seconds": {"train": 7.0}, "judge": {"abstain_rate": None}}))
    _write(run, 4, '{"round": 4, "winrate')     # the round being written right now
    _write(run, "tmp", json.dumps(_metrics(9)))  # not a round directory
    return run


def test_sparse_and_odd_metrics_do_not_crash(tmp_path: Path):
    _write(tmp_path, 1, json.dumps({"round": 1}))
    _write(tmp_path, 2, json.dumps({"round": "2", "winrate_vs_initial": 0.7, "ratings": {"elo": [1000, None]},
                                    "winrate_matrix": {"winrate": [[0.5, "x"], [None, 0.5]]},
                                    "train_loss_curve": "n/a", "samples": ["not a dict", {"response": 3}]}))
    _write(tmp_path, 3, json.dumps({"round": 3, "winrate_matrix": {"winrate": 5, "policies": 2}, "samples": {"a": 1},
                                    "stage_seconds": ["train"], "judge": [], "ratings": {"elo": [1000], "policies": 1},
                                    "cycles": None, "algorithm": None}))
    _write(tmp_path, 1, '[1, 2]\n{"loss": "x", "phase": null}\n{"step": "a", "loss": 0.5, "round": "z"}\n',
           "policy/train_log.jsonl")
    _write(tmp_path, 2, '{"round_0": 0.7, "round_1": {"mean": "x", "lc_ci_low": null}}', "eval/versus.json")
    _write(tmp_path, 3, "[1, 2", "eval/versus.json")
    _write(tmp_path, 3, '{"extra": {"tokens_per_s": "fast"}}', "generations/manifest.json")
    (tmp_path / "config.yaml").write_text("- not\n- a mapping <b>\n")
    page = build_dashboard(tmp_path).read_text()
    assert all(f'id="{cid}"' in page for cid in CHARTS) and "<table id='samples'>" in page
    assert "window.DASHBOARD_STEPS = 2;" in page and "- a mapping &lt;b&gt;" in page
    assert "window.DASHBOARD_ROUNDS = 3;" in page and "<meta name='rounds' content='3'>" in page


def test_empty_run_and_cli(tmp_path: Path, capsys):
    main(["--run-dir", str(tmp_path)])
    assert Path(capsys.readouterr().out.strip()) == tmp_path / "dashboard.html"
    page = (tmp_path / "dashboard.html").read_text()
    assert "window.DASHBOARD_ROUNDS = 0;" in page and "no config.yaml" in page
    with pytest.raises(SystemExit):
        main(["--run-dir", str(tmp_path / "nowhere")])


def test_cli_takes_several_runs_and_writes_beside_them(tmp_path: Path, capsys):
    a, b, c = (_fill_run(tmp_path / "runs" / x) for x in ("a", "b", "c"))
    for argv in (["--run-dir", str(a), str(b)], ["--run-dir", f"{a} {b}"], ["--run-dir", str(a), "--run-dir", str(b)]):
        main(argv)
        assert Path(capsys.readouterr().out.strip()) == tmp_path / "runs" / "dashboard.html", argv
        assert "window.DASHBOARD_RUNS = {\"a\": 0, \"b\": 0};" in (tmp_path / "runs" / "dashboard.html").read_text()
    main(["--run-dir", str(a), str(b), str(c), "--out", str(tmp_path / "x" / "cmp.html")])
    assert Path(capsys.readouterr().out.strip()) == tmp_path / "x" / "cmp.html"
    main(["--run-dir", str(a), "--out", str(tmp_path / "one.html")])            # one run, elsewhere
    assert "window.DASHBOARD_STEPS = 16;" in (tmp_path / "one.html").read_text()
    twin = _fill_run(tmp_path / "elsewhere" / "a")                               # two runs both called a
    page = build_comparison([a, twin], tmp_path / "twins.html").read_text()
    assert '"runs/a": 0' in page and '"elsewhere/a": 0' in page


class FullDisk:
    """Stands in for the page module's `open`: the file it opens sits on a disk that fills up halfway
    through the page (ENOSPC after half of it is written). `seen` keeps the directory's hidden files at
    that moment, so a test can check the partial file was really there before it was cleaned up."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def __call__(self, *args, **kwargs):
        return _HalfWritten(open(*args, **kwargs), self.seen)


class _HalfWritten:
    def __init__(self, f, seen: list) -> None:
        self.f, self.seen = f, seen

    def write(self, s: str) -> int:
        self.f.write(s[:len(s) // 2])
        self.f.flush()
        d = Path(os.readlink(f"/proc/self/fd/{self.f.fileno()}")).parent
        self.seen += [(p.name, p.stat().st_size) for p in d.iterdir() if p.name.startswith(".")]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


def full_disk(monkeypatch) -> FullDisk:
    from pipelines.dashboard import page
    fake = FullDisk()
    monkeypatch.setattr(page, "open", fake, raising=False)   # module globals come before builtins
    return fake


@pytest.mark.parametrize("had_page", [True, False])
def test_a_full_disk_leaves_the_old_page_whole_and_no_temp_file(run_dir: Path, monkeypatch, had_page: bool):
    out = run_dir / "dashboard.html"
    if had_page:
        build_dashboard(run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    _write(run_dir, 5, json.dumps(_metrics(5)))          # a new round: the page would change
    disk = full_disk(monkeypatch)
    with pytest.raises(PageWriteError) as e:
        build_dashboard(run_dir)
    assert str(e.value) == f"cannot write the dashboard {out}: No space left on device"
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    [(tmp, size)] = disk.seen                            # the half-written temp file did exist ...
    assert tmp.startswith(".dashboard.html.") and tmp.endswith(".tmp") and size > 1_000_000
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before                               # ... and is gone; the old page (or none) is as it was
    assert ("dashboard.html" in after) is had_page
    monkeypatch.undo()                                   # the disk has room again: the new page replaces it whole
    assert "window.DASHBOARD_ROUNDS = 4;" in build_dashboard(run_dir).read_text()
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []


def test_a_killed_writers_temp_file_is_removed_once_it_is_old(run_dir: Path):
    """A writer killed mid-write leaves its temp file (a page's size) under a name no later write reuses."""
    from pipelines.dashboard.page import ORPHAN_AFTER_S
    orphan, busy = run_dir / ".dashboard.html.0123456789ab.tmp", run_dir / ".dashboard.html.ba9876543210.tmp"
    other = run_dir / ".league.html.0123456789ab.tmp"
    for f in (orphan, busy, other):
        f.write_text("<!doctype html><html><head>")
    long_ago = orphan.stat().st_mtime - ORPHAN_AFTER_S - 5
    for f in (orphan, other):
        os.utime(f, (long_ago, long_ago))
    build_dashboard(run_dir)
    assert not orphan.exists() and busy.exists() and other.exists()   # a live writer's, and another page's, stay


def test_the_cli_says_in_one_line_that_the_page_could_not_be_written(run_dir: Path, tmp_path: Path, capsys,
                                                                    monkeypatch):
    full_disk(monkeypatch)
    out = tmp_path / "cmp" / "both.html"
    with pytest.raises(SystemExit) as e:
        main(["--run-dir", str(run_dir), str(_fill_run(tmp_path / "other")), "--out", str(out)])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: cannot write the comparison dashboard {out}: No space left on device"
    assert not any("Traceback" in ln for ln in err) and list(out.parent.iterdir()) == []


def test_a_write_the_kernel_cuts_short_leaves_the_old_page(run_dir: Path):
    """No stand-in: a child process whose file size limit (RLIMIT_FSIZE, 1 MiB) stops the 4 MB page midway
    (EFBIG, 'File too large'), as a disk filling up would."""
    old = build_dashboard(run_dir).read_bytes()
    _write(run_dir, 5, json.dumps(_metrics(5)))
    child = ("import resource, signal, sys\n"
             "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead\n"
             "resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
             "from pipelines.dashboard import main\n"
             "main(['--run-dir', sys.argv[1]])\n")
    p = subprocess.run([sys.executable, "-c", child, str(run_dir)], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1, p.stderr[-2000:]
    assert p.stderr.splitlines()[-1] == f"error: cannot write the dashboard {run_dir / 'dashboard.html'}: File too large"
    assert (run_dir / "dashboard.html").read_bytes() == old
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"] == []


def _driver():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        why = "the dashboard test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("SELFPLAY_SKIP_BROWSER") == "1":
            pytest.skip(f"SELFPLAY_SKIP_BROWSER=1: {why}")
        pytest.fail(f"{why}; set SELFPLAY_SKIP_BROWSER=1 to skip it", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.binary_location = chromium
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(chromedriver), options=opts)


def _screenshot(drv, tmp_path: Path, name: str = "dashboard.png") -> Path:
    """The whole page, not just the viewport (Chrome DevTools' captureBeyondViewport)."""
    w, h = drv.execute_script("const e = document.documentElement; return [e.scrollWidth, e.scrollHeight]")
    png = drv.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                         "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}})
    shot = Path(os.environ.get("DASHBOARD_SCREENSHOT_DIR") or tmp_path) / name
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.write_bytes(base64.b64decode(png["data"]))
    return shot


def open_rendered(drv, page: Path, rounds: int, charts: tuple[str, ...] = CHARTS) -> None:
    """Load the page, wait for its charts, and check each one drew and the page counts `rounds` rounds."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    drv.get(page.as_uri())
    WebDriverWait(drv, 30).until(lambda d: d.execute_script("return window.DASHBOARD_READY === true"))
    for cid in charts:
        assert drv.find_elements(By.CSS_SELECTOR, f"#{cid}.js-plotly-plot .main-svg"), f"{cid} not rendered"
    assert drv.execute_script("return window.DASHBOARD_ROUNDS") == rounds


@pytest.mark.browser
def test_page_renders_every_chart_without_js_errors(run_dir: Path, tmp_path: Path):
    from selenium.webdriver.common.by import By
    page = build_dashboard(run_dir)
    drv = _driver()
    try:
        open_rendered(drv, page, rounds=3)
        assert drv.find_element(By.CSS_SELECTOR, "meta[name=rounds]").get_attribute("content") == "3"
        for cid in ROUND_AXIS_CHARTS:   # one x tick per evaluated round, sparse round 2 included
            assert _ticks(drv, cid) == ["1", "2", "3"], cid
        assert _ticks(drv, "chart-winrate") == ["0", "1", "2", "3"]           # round 0: the initial policy
        raw = _trace(drv, "chart-winrate", "vs initial (raw)")
        assert raw["y"] == pytest.approx([0.56, 0.6, 0.68])
        assert raw["customdata"][0] == pytest.approx([0.53, 0.59])             # its interval, for the hover
        start = _trace(drv, "chart-winrate", "round 0 (initial policy)")
        assert (start["x"], start["y"]) == ([0], [0.5])
        metrics = {n: _metrics(n) for n in (1, 3)}
        for key, label in (("winrate_vs_initial", "vs initial"), ("winrate_vs_previous", "vs previous")):
            lc = _trace(drv, "chart-winrate", f"{label} (length-controlled)")
            assert lc["x"] == [1, 2, 3]
            for i, n in ((0, 1), (2, 3)):                                      # round 2 has no LC: no bar
                want = metrics[n][key]
                assert lc["y"][i] + lc["error_y"]["array"][i] == pytest.approx(want["lc_ci_high"])
                assert lc["y"][i] - lc["error_y"]["arrayminus"][i] == pytest.approx(want["lc_ci_low"])
                assert lc["customdata"][i] == pytest.approx([want["lc_ci_low"], want["lc_ci_high"]])
            assert lc["y"][1] is None and lc["error_y"]["array"][1] is None
        assert len(drv.find_elements(By.CSS_SELECTOR, "#chart-winrate path.yerror")) == 4   # drawn: 2 LC curves × 2
        summary = drv.find_element(By.CSS_SELECTOR, "#summary").text
        assert "0.630 [0.590, 0.670]" in summary                              # round 3's LC vs initial interval
        hover = drv.execute_script("return document.getElementById('chart-matrix').data[0].text")
        assert hover[3][1] == "raw 0.620 [0.570, 0.680]<br>LC 0.580 [0.510, 0.650]<br>96 prompts"   # round_3/versus
        assert hover[1][3] == "raw 0.380 [0.320, 0.430]<br>LC 0.420 [0.350, 0.490]<br>96 prompts"   # its complement
        assert hover[2][0].startswith("no interval") and hover[0][0] == "the same policy"
        steps = drv.execute_script("return document.getElementById('chart-steps').data"
                                   ".filter(t => t.name === 'loss').map(t => t.x)")
        logged = [x for f in run_dir.glob("round_*/policy/train_log.jsonl") for x in f.read_text().splitlines()]
        complete = sum(STEPS_PER_ROUND.values()) + 2        # round 4 is training: its third line is half-written
        assert len(logged) == complete + 1
        assert [x for xs in steps for x in xs] == list(range(1, complete + 1))   # a point a line, one step axis
        assert len(steps) == 4                                                    # a trace per round
        first = _trace(drv, "chart-steps", "loss")
        assert first["y"] == pytest.approx([json.loads(x)["loss"] for x in _train_log(1, 6).splitlines()])
        pref = {t for t in drv.execute_script("return document.getElementById('chart-steps-pref').data"
                                              ".map(t => t.name)")}
        assert {"accuracy", "margin (chosen − rejected log-ratio)"} <= pref
        assert _trace(drv, "chart-throughput", "generation: tokens/s")["y"] == [1000, None, 1200]
        assert "warmup_ratio" in drv.find_element(By.ID, "config").text
        assert len(drv.find_elements(By.CSS_SELECTOR, "#chart-matrix .hm, #chart-matrix image")) >= 1
        assert len(drv.find_elements(By.CSS_SELECTOR, "#chart-ratings .point")) == 4
        assert len(drv.find_elements(By.CSS_SELECTOR, "#summary tr")) == 1 + 3
        rows = drv.find_elements(By.CSS_SELECTOR, "#samples tr[data-round]")
        per_round = {int(r): sum(x.get_attribute("data-round") == r for x in rows) for r in ("1", "3")}
        assert per_round == SAMPLES_PER_ROUND and len(rows) == sum(SAMPLES_PER_ROUND.values())
        assert "<b>forest</b>" in rows[0].text                                    # escaped, not rendered
        assert drv.execute_script("return window.PWNED") is None                  # a response's <script> is inert
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        assert _screenshot(drv, tmp_path).stat().st_size > 50_000
    finally:
        drv.quit()


def _ticks(drv, cid: str) -> list[str]:
    return drv.execute_script(f"return [...document.querySelectorAll('#{cid} .xtick text')].map(t => t.textContent)")


def _trace(drv, cid: str, name: str) -> dict:
    t = drv.execute_script(f"return document.getElementById('{cid}').data.find(t => t.name === {json.dumps(name)})")
    assert t is not None, (cid, name)
    return t


@pytest.mark.browser
def test_two_runs_overlaid_in_one_page(run_dir: Path, tmp_path: Path):
    """`make dashboard RUN_DIR="a b"`: one page, a trace per run named by its directory, the config keys that differ."""
    from selenium.webdriver.common.by import By
    other = tmp_path / "other"
    for n in (1, 2):
        m = _metrics(n)
        m["winrate_vs_initial"] |= {"mean": 0.7 + 0.05 * n, "ci_low": 0.65 + 0.05 * n, "ci_high": 0.75 + 0.05 * n}
        m["algorithm"] = "dpo"
        _write(other, n, json.dumps(m))
    _fill_run(other, algorithm="dpo", lr=1e-4, loss0=0.9)
    out = tmp_path / "cmp" / "both.html"
    subprocess.run(["make", "-s", "-o", "setup", "dashboard", f"RUN_DIR={run_dir} {other}", f"OUT={out}"], cwd=REPO,
                   check=True, capture_output=True, timeout=120)
    drv = _driver()
    try:
        open_rendered(drv, out, rounds=3, charts=COMPARE_CHARTS)
        assert drv.execute_script("return window.DASHBOARD_RUNS") == {"run": 3, "other": 2}
        for cid in ("chart-winrate", "chart-previous", "chart-length", "chart-elo", "chart-steps"):
            names = drv.execute_script(f"return document.getElementById('{cid}').data.filter(t => t.showlegend "
                                       "!== false && !t.name.endsWith(' (LC)')).map(t => t.name)")
            assert names == ["run", "other"], cid
        a, b = (_trace(drv, "chart-winrate", n) for n in ("run", "other"))
        assert a["x"] == [0, 1, 2, 3] and a["y"] == pytest.approx([0.5, 0.56, 0.6, 0.68])   # round 0 included
        assert b["x"] == [0, 1, 2] and b["y"] == pytest.approx([0.5, 0.75, 0.8])
        lc = _trace(drv, "chart-winrate", "other (LC)")
        assert lc["y"][2] + lc["error_y"]["array"][2] == pytest.approx(_metrics(2)["winrate_vs_initial"]["lc_ci_high"])
        bands = drv.execute_script("return document.getElementById('chart-winrate').data"
                                   ".filter(t => t.fill === 'toself').map(t => t.legendgroup)")
        assert bands == ["run", "other"]
        steps = drv.execute_script("return document.getElementById('chart-steps').data.map(t => [t.name, t.x.length])")
        per_run = {}
        for name, k in steps:
            per_run[name] = per_run.get(name, 0) + k
        assert per_run == {"run": sum(STEPS_PER_ROUND.values()) + 2, "other": sum(STEPS_PER_ROUND.values()) + 2}
        diff = {r.find_elements(By.TAG_NAME, "td")[0].text: [c.text for c in r.find_elements(By.TAG_NAME, "td")[1:]]
                for r in drv.find_elements(By.CSS_SELECTOR, "#config-diff tr") if r.find_elements(By.TAG_NAME, "td")}
        assert diff["algorithm"] == ["sppo", "dpo"] and diff["train.lr"] == ["0.0003", "0.0001"]
        assert "train.epochs" not in diff and "run_dir" in diff
        assert len(drv.find_elements(By.CSS_SELECTOR, "#summary tr[data-run]")) == 2
        assert [e for e in drv.get_log("browser") if e["level"] == "SEVERE"] == []
        assert _screenshot(drv, tmp_path, "dashboard_compare.png").stat().st_size > 30_000
    finally:
        drv.quit()


def test_the_exploitability_chart_shows_its_floor_and_the_plugin_beside_the_estimate():
    """Every figure with its floor: what an exact Nash policy reads with the same samples, and the biased
    plug-in, drawn beside the estimate, with the values metrics.json holds."""
    from pipelines.dashboard.arena_figures import exploitability_figure
    points = [{"round": r, "mean_quality": 1.0,
               "exploitability": {"mean": m, "ci_low": m - 0.01, "ci_high": m + 0.01, "plugin": p, "floor": 0.0,
                                  "quality_part": m, "style_part": 0.0}}
              for r, m, p in ((0, 0.41, 0.43), (1, 0.2, 0.25), (2, 0.05, 0.11))]
    traces = {t.name: t for t in exploitability_figure(points).data}
    assert list(traces["exploitability"].y) == [0.41, 0.2, 0.05]
    assert list(traces["plug-in estimate (biased upward)"].y) == [0.43, 0.25, 0.11]
    assert list(traces["floor: what an exact Nash policy reads"].y) == [0.0, 0.0, 0.0]
    old = [{**p, "exploitability": {k: v for k, v in p["exploitability"].items() if k not in ("plugin", "floor")}}
           for p in points]   # metrics.json written before the estimator had them: no floor line, no error
    assert "floor: what an exact Nash policy reads" not in {t.name for t in exploitability_figure(old).data}
