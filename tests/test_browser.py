"""The app in a real browser: `streamlit run app.py` on a free port, driven by Playwright with the
system Chromium. Every page must render its charts without an exception; a deep link must
reproduce its settings; bad link settings must show a message. Screenshots go to
test-output/browser/ (gitignored)."""
import contextlib
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


@contextlib.contextmanager
def streamlit_server(env: dict | None = None):
    """``streamlit run app.py`` on a free port, until /_stcore/health answers; stopped afterwards."""
    port = free_port()
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = open(SHOTS / f"streamlit-{port}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--server.port", str(port)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
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
def server():
    with streamlit_server() as url:
        yield url


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
    """Until the app is connected and its script not running (Streamlit's own marks on stApp, as its e2e
    suite waits), a page title present, for 1.5 s."""
    idle = ('[data-testid="stApp"][data-test-connection-state="CONNECTED"]'
            '[data-test-script-state="notRunning"]')
    t0, stable = time.time(), 0
    while time.time() - t0 < timeout:
        ready = pg.locator(idle).count() > 0 and pg.locator("h1").count() > 0
        stable = stable + 1 if ready else 0
        if stable >= 3:
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


from pages.ui.routes import ROUTES  # noqa: E402


# Every route on the module's server, the default page (its address is the root) first.
@pytest.mark.parametrize("path, title", [("" if r.default else r.name, r.title) for r in ROUTES],
                         ids=[r.name for r in ROUTES])
def test_page_renders(server, page, path, title):
    page.goto(f"{server}/{path}")
    wait_idle(page)
    if path not in ("check", "cost"):  # the first page after start draws while the model loads, then fills in
        page.locator(".js-plotly-plot").first.wait_for(timeout=IDLE_TIMEOUT * 1000)
        wait_idle(page)
    if path == "check":  # the battery runs on a button press: press it (quick) and wait for the verdicts
        page.goto(f"{server}/check?chk_variant=sliding_window&chk_quick=true")
        wait_idle(page)
        page.get_by_role("button", name="Run the checks").click()
        page.get_by_text("All checks passed").wait_for(timeout=120_000)
        wait_idle(page)
    shot(page, path or "explorer")
    assert_healthy(page, charts=path not in ("check", "cost"))  # their work waits for a button
    assert page.locator("h1").first.inner_text().strip() == title
    if title == "Explorer":  # the linked view drew its map (a canvas, sized by the payload)
        assert page.get_by_test_id("xviz-attention-map").locator("canvas").count() == 1


def test_deep_link_reproduces_settings(server, page):
    query = ("source=synthetic&n=72&d=16&heads=2&seed=5&causal=true&variant=longformer"
             "&longformer.window=4&head=1")
    page.goto(f"{server}/?{query}")
    wait_idle(page)
    shot(page, "deep_link")
    assert_healthy(page)
    caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()
    assert "N = 72" in caption and "d = 16" in caption and "2 heads" in caption and "causal" in caption
    assert "seed 5" in caption
    # the URL keeps the settings (the widgets are bound to it; Streamlit leaves a default value out, so
    # the link names a variant other than the default)
    for part in ("variant=longformer", "longformer.window=4", "n=72", "seed=5"):
        assert part in page.url, page.url
    # the widgets show the linked values
    assert page.get_by_role("combobox", name="Variant").input_value() == "longformer"
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
    # the address bar follows the widgets (written by the browser after the run: under load, a moment later)
    page.wait_for_url(lambda url: "n=40" in url and "seed=2" in url, timeout=10_000)


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


# ------------------------------------------------------------------------------------------- linked view

def sent_frames(pg) -> list:
    """Every websocket frame the page sends from now on (a rerun request is one): the list grows."""
    frames: list = []
    pg.on("websocket", lambda ws: ws.on("framesent", lambda f: frames.append(f)))
    return frames


def test_linked_view_click_pins_the_query_into_the_url(server, page):
    page.goto(f"{server}/?{SMALL}")
    wait_idle(page)
    amap = page.get_by_test_id("xviz-attention-map")
    amap.wait_for(timeout=IDLE_TIMEOUT * 1000)
    amap.scroll_into_view_if_needed()
    n_q, n_k = int(amap.get_attribute("data-n-queries")), int(amap.get_attribute("data-n-keys"))
    assert (n_q, n_k) == (64, 64)  # no pooling at N = 64: a cell is one (query, key)
    box = amap.bounding_box()
    row, col = 41, 17
    page.mouse.click(box["x"] + box["width"] * (col + 0.5) / n_k, box["y"] + box["height"] * (row + 0.5) / n_q)
    page.wait_for_url(lambda url: f"query={row}" in url, timeout=30_000)
    wait_idle(page)
    assert f"qkey={col}" in page.url, page.url
    assert page.locator('input[aria-label="query (inspector)"]').input_value() == str(row)
    for panel in page.get_by_test_id("xviz-linked").all():  # the rerun kept the pin in every panel
        assert panel.get_attribute("data-hover-query") == str(row)


def test_linked_view_hover_links_every_panel_without_a_rerun(server, page):
    frames = sent_frames(page)
    page.goto(f"{server}/?{SMALL}&head=1")
    page.get_by_test_id("xviz-attention-map").wait_for(timeout=IDLE_TIMEOUT * 1000)
    wait_idle(page)
    panels = page.get_by_test_id("xviz-linked")
    assert panels.count() >= 5  # exact, approx, difference, inspector, text
    sent = len(frames)
    assert sent > 0, "the listener missed the page's socket (it sends at least the first run's request)"
    for i in (7, 30):
        page.locator(f'[data-testid="xviz-token"][data-index="{i}"]').first.hover()
        assert {p.get_attribute("data-hover-query") for p in panels.all()} == {str(i)}
    amap = page.get_by_test_id("xviz-attention-map")
    amap.scroll_into_view_if_needed()
    box = amap.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 12.5 / 64, box["y"] + box["height"] * 50.5 / 64)
    assert {(p.get_attribute("data-hover-query"), p.get_attribute("data-hover-key")) for p in panels.all()} == \
        {("50", "12")}
    page.get_by_test_id("xviz-head").select_option("0")  # a head switch is drawn here, too
    assert "head 0" in page.get_by_test_id("xviz-hover-info").inner_text()
    time.sleep(1)
    assert len(frames) == sent, "a hover or a head switch reached the server"
    assert page.locator('[data-testid="stApp"][data-test-script-state="running"]').count() == 0


# ------------------------------------------------------------------------------------------------ links

SMALL = "source=synthetic&n=64&d=8&heads=2"


def test_decoding_linked_view_pins_the_step(server, page):
    """Decoding: the linked view's rows are the decoded steps; a click on one makes it the page's step."""
    page.goto(f"{server}/decoding?source=synthetic&n=64&d=8&heads=2&dec_prefill=32&dec_budget=8"
              "&dec_policies=window&dec_policies=full&dec_focus=window")
    amap = page.get_by_test_id("xviz-attention-map")
    amap.wait_for(timeout=IDLE_TIMEOUT * 1000)
    wait_idle(page)
    amap.scroll_into_view_if_needed()
    n_q, n_k = int(amap.get_attribute("data-n-queries")), int(amap.get_attribute("data-n-keys"))
    assert (n_q, n_k) == (32, 64)  # steps 32 … 63 against keys 0 … 63
    box = amap.bounding_box()
    row = 9
    page.mouse.click(box["x"] + box["width"] * 5.5 / n_k, box["y"] + box["height"] * (row + 0.5) / n_q)
    page.wait_for_url(lambda url: f"dec_step={32 + row}" in url, timeout=30_000)
    wait_idle(page)
    for panel in page.get_by_test_id("xviz-linked").all():
        assert panel.get_attribute("data-hover-query") == str(32 + row)
# One page-level number per page, changed after N in the URL round trip (label, new value).
PAGE_SETTING = {
    "explorer": ("head", "1"), "patterns": ("layers (reachability)", "4"), "compare": ("budget: keys per query", "10"),
    "lsh": ("k (true top-k keys)", "4"), "spectra": ("seeds", "1"), "sweeps": ("points", "3"),
    "decoding": ("budget: cached keys", "12"), "real_model": ("budget: keys per query (0 = a quarter of N)", "6"),
    "cost": ("repeats", "1"), "check": None,
}


def path_of(route) -> str:
    return "" if route.default else route.name


def numbers(pg) -> dict:
    """What a reader compares between two openings of one link: the input caption, every metric, the
    title, and the values of the number inputs."""
    main = pg.locator('[data-testid="stMain"]')
    return {"title": pg.locator("h1").first.inner_text().strip(),
            "input": main.locator('[data-testid="stCaptionContainer"]').first.inner_text(),
            "metrics": main.locator('[data-testid="stMetricValue"]').all_inner_texts(),
            "inputs": [i.input_value() for i in pg.locator('input[type="number"]').all()]}


def set_number(pg, label: str, value: str) -> None:
    box = pg.locator(f'input[aria-label="{label}"]').first
    box.fill(value)
    box.press("Enter")
    time.sleep(0.6)  # the rerun starts
    wait_idle(pg)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_deep_link_on_a_fresh_server(browser, route):
    """The very first request a server gets is a deep link to this page (the case Streamlit's handling of a
    folder named pages/ gets wrong without the router): the page itself comes up, inside the app."""
    with streamlit_server() as url:
        pg = browser.new_page(viewport={"width": 1400, "height": 1800})
        try:
            pg.goto(f"{url}/{path_of(route)}?{SMALL}")
            wait_idle(pg)
            assert_healthy(pg, charts=False)
            assert pg.locator("h1").first.inner_text().strip() == route.title
            nav = pg.locator('[data-testid="stTopNavLink"], [data-testid="stSidebarNavLink"]').all_inner_texts()
            assert any(r.title in " ".join(nav) for r in ROUTES if r is not route), nav  # the app's own navigation
        finally:
            pg.close()


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_url_round_trip(server, browser, route):
    """Change N, then a page setting; the address bar, opened in a fresh browser context, shows the same numbers."""
    ctx1 = browser.new_context(viewport={"width": 1400, "height": 2000})
    pg = ctx1.new_page()
    try:
        pg.goto(f"{server}/{path_of(route)}?{SMALL}")
        wait_idle(pg)
        set_number(pg, "N (tokens)", "80")
        if PAGE_SETTING[route.name]:
            set_number(pg, *PAGE_SETTING[route.name])
        assert_healthy(pg, charts=False)
        link, before = pg.url, numbers(pg)
        assert "n=80" in link, link
    finally:
        ctx1.close()
    ctx2 = browser.new_context(viewport={"width": 1400, "height": 2000})
    pg2 = ctx2.new_page()
    try:
        pg2.goto(link)
        wait_idle(pg2)
        assert_healthy(pg2, charts=False)
        assert numbers(pg2) == before
    finally:
        ctx2.close()


INJECTIONS = {
    "variant": "[CLICK ME TO LOG IN](https://evil.example/login)",
    "kind": "![t](http://127.0.0.1:9/track.png)",
    "head": "**bold** :red[INJECTED] <b>b</b>",
}


def test_link_values_cannot_inject_markup(server, page):
    from urllib.parse import urlencode

    page.goto(f"{server}/?source=synthetic&n=48&d=8&heads=1&{urlencode(INJECTIONS)}")
    wait_idle(page)
    shot(page, "injection")
    assert_healthy(page)
    main = page.locator("section, [data-testid='stMain'], [data-testid='stSidebar']")
    assert page.locator('a[href*="evil.example"]').count() == 0
    assert page.locator('img[src*="track.png"]').count() == 0
    alerts = " ".join(page.locator('[data-testid="stAlert"]').all_inner_texts()).replace("\u2060", "")
    assert "[CLICK ME TO LOG IN](https://evil.example/login)" in alerts  # shown as the literal text
    assert page.locator('[data-testid="stAlert"] strong, [data-testid="stAlert"] b').count() == 0
    assert main.count() > 0


def npz_bytes(**arrays) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("name, make", [
    ("zero_length.npz", lambda np: npz_bytes(q=np.zeros((0, 8), np.float32), k=np.zeros((0, 8), np.float32),
                                             v=np.zeros((0, 8), np.float32))),
    ("zero_dim.npz", lambda np: npz_bytes(q=np.zeros((16, 0), np.float32), k=np.zeros((16, 0), np.float32),
                                          v=np.zeros((16, 0), np.float32))),
    ("bad :red[**INJECTED**] [click](http://evil.example).npz", lambda np: b"not a zip"),
    ("negative.safetensors", lambda np: (lambda h: len(h).to_bytes(8, "little") + h)(
        b'{"q":{"dtype":"F32","shape":[-1,8],"data_offsets":[0,0]}}')),
])
def test_bad_uploads_get_a_sentence(server, page, name, make):
    import numpy as np

    page.goto(f"{server}/?source=upload")
    wait_idle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": name, "mimeType": "application/octet-stream", "buffer": make(np)}])
    time.sleep(1.0)
    wait_idle(page)
    assert_healthy(page, charts=False)
    errors = " ".join(page.locator('[data-testid="stAlert"]').all_inner_texts())
    assert "Input:" in errors, errors
    assert page.locator('a[href*="evil.example"]').count() == 0
    assert page.locator('[data-testid="stAlert"] strong').count() == 0


def test_upload_with_keys_of_another_length_is_cross_attention(server, page):
    """An .npz whose k and v are longer than q: the Explorer draws the N_q × N_k rectangle."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = npz_bytes(q=rng.standard_normal((2, 12, 8), np.float32), k=rng.standard_normal((2, 20, 8), np.float32),
                     v=rng.standard_normal((2, 20, 8), np.float32))
    page.goto(f"{server}/?source=upload&variant=exact")
    wait_idle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": "cross.npz", "mimeType": "application/octet-stream", "buffer": data}])
    time.sleep(1.0)
    wait_idle(page)
    shot(page, "cross_upload")
    assert_healthy(page, charts=False)
    caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()
    assert "N_k = 20" in caption, caption
    view = page.locator('[data-testid="xviz-attention-map"]').first  # the linked view draws the rectangle
    assert (view.get_attribute("data-n-queries"), view.get_attribute("data-n-keys")) == ("12", "20")


def test_eight_sessions_on_a_cold_server(browser):
    """Eight visitors open the app at the same moment on a server that has loaded nothing yet: all get
    their page (the catalog loads once, completely, before anyone reads it)."""
    with streamlit_server() as url:
        ctxs = [browser.new_context(viewport={"width": 1200, "height": 1200}) for _ in range(8)]
        try:
            pages = [c.new_page() for c in ctxs]
            for i, pg in enumerate(pages):
                pg.goto(f"{url}/?source=synthetic&n=64&d=8&heads=2&seed={i}", wait_until="commit")
            for i, pg in enumerate(pages):
                pg.locator(".js-plotly-plot").first.wait_for(timeout=240_000)  # eight runs share two cores
                wait_idle(pg, timeout=240)
                shot(pg, f"cold_session_{i}")
                assert_healthy(pg)
                assert pg.locator("h1").first.inner_text().strip() == "Explorer"
        finally:
            for c in ctxs:
                c.close()


def test_every_page_is_in_the_top_bar_at_1400px(server, browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        pg.goto(f"{server}/?{SMALL}")
        wait_idle(pg)
        nav = pg.locator('[data-testid="stTopNavLink"]')
        labels = [t.strip().split("\n")[-1].strip() for t in nav.all_inner_texts()]  # after the icon's name
        assert labels == [r.label for r in ROUTES], labels  # none hidden behind a "more" menu
        assert all(nav.nth(i).is_visible() for i in range(nav.count()))
    finally:
        pg.close()
