"""End to end in a browser: a sweep run through the CLI, watched in the Prefect UI with Debian's chromium.

The Prefect server is real and serves its UI; the browser is headless chromium driven by Playwright
(never a downloaded browser: ``executable_path`` is the system's). Screenshots are saved under the
test's tmp dir; the path is printed (``pytest -s``) so they can be looked at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("RUNGFLOW_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
NAME = "UI watch: HB_demo"  # not a valid artifact key as it stands
KEY = "ui-watch-hb-demo"


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install playwright (scripts/setup.sh does)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM}: run scripts/setup.sh as root (apt-get install -y chromium), "
                    "or set RUNGFLOW_CHROMIUM to a chromium binary")
    return sync_playwright


def test_sweep_is_watchable_in_the_prefect_ui(prefect_ui_server: str, tmp_path: Path) -> None:
    sync_playwright = _browser_or_skip()
    from playwright.sync_api import expect
    api = prefect_ui_server
    ui = f"{urlsplit(api).scheme}://{urlsplit(api).netloc}"
    config = tmp_path / "sweep.yaml"
    # Hyperband 1..9 plans 69 budget units at 0.01 GPU-hours each (reported, so independent of machine load):
    # brackets of 0.21, 0.21 and 0.27 GPU-hours. A 0.5 GPU-hour cap stops it before the last bracket,
    # so the summary has a stop and 0.27 GPU-hours of savings to show. One bracket at a time: side by side on three
    # slots, where the cap falls would follow the order the threads finish in.
    config.write_text(
        f"name: '{NAME}'\ntrainable: {{kind: noop, options: {{gpu_seconds_per_unit: 36}}}}\n"
        "search: {algorithm: random, seed: 0}\nscheduler: {kind: hyperband, min_budget: 1, max_budget: 9, eta: 3, max_open_brackets: 1}\n"
        "budget: {max_gpu_hours: 0.5, price_per_gpu_hour: 2.5}\nruntime: {kind: thread, max_concurrent: 3}\n"
    )
    run = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "sweep", str(config), "--out", str(tmp_path / "run")],
                         cwd=REPO, env={**os.environ, "PREFECT_API_URL": api}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["stop_reason"] == "max_gpu_hours"
    assert result["savings"]["gpu_hours"] == pytest.approx(0.27) and result["ledger"]["gpu_hours"] == pytest.approx(0.42)
    best = result["best"]["trial_id"]
    flow_run = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": [NAME]}}}).json()[-1]
    latest = {a["key"]: a["latest_id"] for a in httpx.post(f"{api}/artifacts/latest/filter", json={}).json()}
    assert {f"{KEY}-{k}" for k in ("leaderboard", "budget", "decision", "plot", "summary")} <= set(latest)

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(45_000)

            # The flow run page of the default UI (what http://host:port/ opens): named after the sweep.
            page.goto(f"{ui}/v2/runs/flow-run/{flow_run['id']}")
            page.get_by_text(NAME, exact=True).first.wait_for()
            page.get_by_text("Completed").first.wait_for()
            page.get_by_role("tab", name="Task Runs").click()
            # Task runs say trial, bracket and rung; the list is paged, so search for one.
            page.get_by_placeholder("Search by run name").fill("train-t0000-r")
            page.get_by_text("train-t0000-r0").first.wait_for()
            page.get_by_text("train-t0000-r1").first.wait_for()  # t0000 was promoted: one run per rung
            page.get_by_role("tab", name="Artifacts").click()
            page.get_by_text(f"{KEY}-leaderboard").first.wait_for()
            page.get_by_text(f"{KEY}-summary").first.wait_for()
            page.screenshot(path=shots / "flow-run-artifacts.png", full_page=True)

            # The artifacts page lists the sweep's keys.
            page.goto(f"{ui}/v2/artifacts")
            for kind in ("leaderboard", "plot", "summary", "decision", "budget"):
                page.get_by_text(f"{KEY}-{kind}").first.wait_for()
            page.screenshot(path=shots / "artifacts.png")

            # The leaderboard: a table whose first row is the best trial.
            page.goto(f"{ui}/v2/artifacts/artifact/{latest[f'{KEY}-leaderboard']}")
            page.get_by_role("cell", name=best, exact=True).wait_for()
            first_row = page.get_by_role("row").nth(1).inner_text()
            assert best in first_row and "ok" in first_row
            trials = result["counts"]["trials"]
            page.get_by_text(f"Top {trials} of {trials} trials").first.wait_for()
            page.screenshot(path=shots / "leaderboard.png")

            # The plot: the PNG embedded in markdown is loaded and drawn, in both UIs.
            for prefix in ("/v2", ""):
                page.goto(f"{ui}{prefix}/artifacts/artifact/{latest[f'{KEY}-plot']}")
                image = page.locator("img[src^='data:image/png']").first
                image.wait_for()
                page.wait_for_function("img => img.complete && img.naturalWidth > 300", arg=image.element_handle())
                page.screenshot(path=shots / f"plot{prefix.replace('/', '-') or '-v1'}.png")

            # The summary: best configuration, its cost, the stop reason.
            page.goto(f"{ui}/v2/artifacts/artifact/{latest[f'{KEY}-summary']}")
            page.get_by_role("heading", name=f"Sweep summary: {NAME}").wait_for()
            # The heading can paint before the rest of the markdown (CI once read the page in between):
            # wait for each figure, as a user would, rather than reading the text once.
            body = page.locator("main") if page.locator("main").count() else page.locator("body")
            for figure in (best, f"${result['best']['cost']:.2f}", "max_gpu_hours",
                           f"would have cost {result['savings']['gpu_hours']:.4g} GPU-hours"):
                expect(body).to_contain_text(figure, timeout=45_000)
            page.screenshot(path=shots / "summary.png", full_page=True)
        finally:
            browser.close()
    print(f"screenshots: {shots}")
    assert all(f.stat().st_size > 10_000 for f in shots.iterdir())
