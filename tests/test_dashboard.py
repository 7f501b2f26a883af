"""The dashboard as a person sees it: real headless Chromium, every chart rendered, no JS errors."""
import json
import os
import shutil
from pathlib import Path

import pytest

from pipelines.dashboard import CHARTS, build_dashboard

pytestmark = pytest.mark.browser


def _metrics(n: int) -> dict:
    names = [f"round_{i}" for i in range(n + 1)]
    w = [[0.5 if i == j else (0.5 + 0.06 * (i - j)) for j in range(n + 1)] for i in range(n + 1)]
    wr = lambda m: {"mean": m, "ci_low": m - 0.03, "ci_high": m + 0.03, "n": 96, "method": "bootstrap", "lc": m - 0.05}  # noqa: E731
    return {"round": n, "algorithm": "sppo", "winrate_vs_initial": wr(0.5 + 0.06 * n), "winrate_vs_previous": wr(0.56),
            "winrate_matrix": {"policies": names, "winrate": w},
            "ratings": {"policies": names, "elo": [1000 + 40 * i for i in range(n + 1)],
                        "ci_low": [990 + 40 * i for i in range(n + 1)], "ci_high": [1010 + 40 * i for i in range(n + 1)]},
            "cycles": [], "mean_response_tokens": 8 - n, "train_loss": 3 - 0.3 * n,
            "judge": {"pairs": 1920, "pairs_per_s": 1e5, "abstain_rate": 0.0, "position_disagreement_rate": 0.01},
            "stage_seconds": {"generate": 4, "judge": 2, "preferences": 1, "train": 5, "evaluate": 4},
            "samples": [{"prompt": "Describe the <b>forest</b>.", "response": f"pine moss {n}", "policy": f"round_{n}"}]}


@pytest.fixture()
def page(tmp_path):
    for n in (1, 2, 3):
        d = tmp_path / f"round_{n}" / "eval"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(_metrics(n)))
    (tmp_path / "round_2" / "eval" / "metrics.json").write_text(json.dumps({"round": 2}))  # an old, sparse round
    return build_dashboard(tmp_path)


def _driver():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.environ.get("SELFPLAY_SKIP_BROWSER") == "1":
            pytest.skip("SELFPLAY_SKIP_BROWSER=1 and no chromium")
        pytest.fail("Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2400"):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def test_page_renders_every_chart_without_js_errors(page, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    drv = _driver()
    try:
        drv.get(page.as_uri())
        WebDriverWait(drv, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")) >= len(CHARTS))
        for cid in CHARTS:
            assert drv.find_elements(By.CSS_SELECTOR, f"#{cid}.js-plotly-plot .main-svg"), cid
        assert drv.execute_script("return window.DASHBOARD_ROUNDS") == 3
        # the win-rate chart has one point per round on its raw vs-initial trace
        xs = drv.execute_script("return document.getElementById('chart-winrate').data[1].x")
        assert xs == [1, 2, 3]
        rows = drv.find_elements(By.CSS_SELECTOR, "#samples tr[data-round]")
        assert sorted({r.get_attribute("data-round") for r in rows}) == ["1", "3"]   # round 2 has no samples
        assert "<b>forest</b>" in rows[0].text                                         # escaped, not rendered
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        shot = Path(os.environ.get("DASHBOARD_SCREENSHOT_DIR", tmp_path)) / "dashboard.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        drv.quit()
