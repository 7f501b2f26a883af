"""The dashboard as a person sees it: real headless Chromium, every chart rendered, no JS errors.

Without Debian's chromium + chromium-driver the browser test fails, unless SELFPLAY_SKIP_BROWSER=1.
Set DASHBOARD_SCREENSHOT_DIR to keep the screenshot.
"""
import base64
import json
import os
import shutil
from pathlib import Path

import pytest

from pipelines.dashboard import CHARTS, build_dashboard, main

ROUND_AXIS_CHARTS = ("chart-winrate", "chart-length", "chart-loss", "chart-judge", "chart-stages")
SAMPLES_PER_ROUND = {1: 2, 3: 2}            # round 2 is an old, sparse round without samples


def _metrics(n: int) -> dict:
    names = [f"round_{i}" for i in range(n + 1)]
    w = [[0.5 if i == j else 0.5 + 0.06 * (i - j) for j in range(n + 1)] for i in range(n + 1)]

    def wr(m: float) -> dict:
        return {"mean": m, "ci_low": m - 0.03, "ci_high": m + 0.03, "n": 96, "method": "bootstrap",
                "tie_rate": 0.02, "abstain_rate": 0.0, "lc": m - 0.05}

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


def _write(run: Path, n: int | str, body: str) -> None:
    d = run / f"round_{n}" / "eval"
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(body)


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    for n in (1, 3):
        _write(run, n, json.dumps(_metrics(n)))
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
    page = build_dashboard(tmp_path).read_text()
    assert all(f'id="{cid}"' in page for cid in CHARTS) and "<table id='samples'>" in page
    assert "window.DASHBOARD_ROUNDS = 3;" in page and "<meta name='rounds' content='3'>" in page


def test_empty_run_and_cli(tmp_path: Path, capsys):
    main(["--run-dir", str(tmp_path)])
    assert Path(capsys.readouterr().out.strip()) == tmp_path / "dashboard.html"
    assert "window.DASHBOARD_ROUNDS = 0;" in (tmp_path / "dashboard.html").read_text()


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


def _screenshot(drv, tmp_path: Path) -> Path:
    """The whole page, not just the viewport (Chrome DevTools' captureBeyondViewport)."""
    w, h = drv.execute_script("const e = document.documentElement; return [e.scrollWidth, e.scrollHeight]")
    png = drv.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                         "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}})
    shot = Path(os.environ.get("DASHBOARD_SCREENSHOT_DIR") or tmp_path) / "dashboard.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.write_bytes(base64.b64decode(png["data"]))
    return shot


def open_rendered(drv, page: Path, rounds: int) -> None:
    """Load the page, wait for its charts, and check each one drew and the page counts `rounds` rounds."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    drv.get(page.as_uri())
    WebDriverWait(drv, 30).until(lambda d: d.execute_script("return window.DASHBOARD_READY === true"))
    for cid in CHARTS:
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
            ticks = drv.execute_script(f"return [...document.querySelectorAll('#{cid} .xtick text')]"
                                       ".map(t => t.textContent)")
            assert ticks == ["1", "2", "3"], cid
        raw = drv.execute_script("return document.getElementById('chart-winrate').data"
                                 ".find(t => t.name === 'vs initial (raw)').y")
        assert raw == pytest.approx([0.56, 0.6, 0.68])
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
