"""The app in a real browser: `streamlit run app.py` on a free port, driven by Playwright with the
system Chromium. Every page must render its charts without an exception; a deep link must
reproduce its settings; bad link settings must show a message. Screenshots go to
test-output/browser/ (gitignored)."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (the CI script installs Debian's chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "browser"
IDLE_TIMEOUT = 120  # seconds: a cold start imports torch and transformers and loads the model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = open(SHOTS / f"streamlit-{port}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--server.port", str(port)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() - t0 > 60:
                raise RuntimeError(f"streamlit did not start (see {log.name})")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1500, "height": 2400})
    yield pg
    pg.close()


def wait_idle(pg, timeout: float = IDLE_TIMEOUT) -> None:
    """Until the app is idle: stApp and a page title present, no running indicator, for 2 s."""
    t0, stable = time.time(), 0
    while time.time() - t0 < timeout:
        busy = pg.locator('[data-testid="stStatusWidget"]').count() > 0
        ready = pg.locator('[data-testid="stApp"]').count() > 0 and pg.locator("h1").count() > 0
        stable = stable + 1 if ready and not busy else 0
        if stable >= 4:
            return
        time.sleep(0.5)
    raise AssertionError(f"the app did not become idle within {timeout} s")


def shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"))


def assert_healthy(pg, charts: bool = True) -> None:
    assert pg.get_by_text("Page not found").count() == 0, "Streamlit could not route the URL"
    assert pg.locator('[data-testid="stException"]').count() == 0, pg.locator('[data-testid="stException"]').first.inner_text()
    if charts:
        assert pg.locator(".js-plotly-plot").count() > 0, "no chart rendered"


# The Explorer is the default page: its address is the root.
@pytest.mark.parametrize("path, title", [
    ("", "Explorer"), ("patterns", "Patterns"), ("compare", "Compare"), ("lsh", "LSH & clustering"),
    ("spectra", "Spectra"), ("sweeps", "Sweeps"), ("real_model", "Real model"), ("cost", "Cost & scaling"),
    ("check", "Check a variant"),
])
def test_page_renders(server, page, path, title):
    page.goto(f"{server}/{path}")
    wait_idle(page)
    if path == "check":  # the battery runs on a button press: press it (quick) and wait for the verdicts
        page.goto(f"{server}/check?chk_variant=sliding_window&chk_quick=true")
        wait_idle(page)
        page.get_by_role("button", name="Run the checks").click()
        page.get_by_text("All checks passed").wait_for(timeout=120_000)
        wait_idle(page)
    shot(page, path or "explorer")
    assert_healthy(page, charts=path != "check")
    assert page.locator("h1").first.inner_text().strip() == title
    # the heatmaps were drawn by plotly (an SVG layer with the heatmap image inside)
    if title == "Explorer":
        assert page.locator(".js-plotly-plot .heatmaplayer image, .js-plotly-plot .hm image").count() >= 3


def test_deep_link_reproduces_settings(server, page):
    query = ("source=synthetic&n=72&d=16&heads=2&seed=5&causal=true&variant=sliding_window"
             "&sliding_window.window=4&head=1")
    page.goto(f"{server}/?{query}")
    wait_idle(page)
    shot(page, "deep_link")
    assert_healthy(page)
    caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()
    assert "N = 72" in caption and "d = 16" in caption and "2 heads" in caption and "causal" in caption
    assert "seed 5" in caption
    # the URL keeps the settings (the widgets are bound to it)
    for part in ("variant=sliding_window", "sliding_window.window=4", "n=72", "seed=5"):
        assert part in page.url, page.url
    # the widgets show the linked values
    assert page.get_by_role("combobox", name="Variant").input_value() == "sliding_window"
    assert page.locator('input[type="range"][aria-label="window"]').get_attribute("value") == "4"
    assert page.locator('input[aria-label="seed"]').input_value() == "5"


def test_bad_link_shows_message(server, page):
    page.goto(f"{server}/?variant=nope&source=synthetic&n=1000000000")
    wait_idle(page)
    shot(page, "bad_link")
    text = page.locator('[data-testid="stAlert"]').all_inner_texts()
    joined = " ".join(text)
    assert "unknown variant 'nope'" in joined and "n = 1000000000" in joined, joined
    assert_healthy(page)


def test_navigation_keeps_settings(server, page):
    page.goto(f"{server}/?source=synthetic&n=40&d=8&heads=1&seed=2")
    wait_idle(page)
    page.get_by_role("link", name="Compare").click()
    page.wait_for_url("**/compare**")
    wait_idle(page)
    shot(page, "navigated_compare")
    assert_healthy(page)
    assert page.locator("h1").first.inner_text().strip() == "Compare"
    caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()
    assert "N = 40" in caption and "seed 2" in caption
    assert "n=40" in page.url and "seed=2" in page.url


def test_real_model_cell_opens_in_the_explorer(server, page):
    page.goto(f"{server}/real_model?rm_layer=3&rm_head=4")
    wait_idle(page)
    page.get_by_role("button", name="Open this cell in the Explorer").click()
    page.wait_for_url(lambda url: "real_model" not in url)
    wait_idle(page)
    assert_healthy(page)
    caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()
    assert "layer 3" in caption, caption
    assert page.locator('input[aria-label="head"]').input_value() == "4"
