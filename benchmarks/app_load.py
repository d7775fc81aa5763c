"""The app under load, measured on a real server with real browsers (Chromium driven by Playwright):

1. **Cold start**: eight sessions open the app at the same moment on a fresh server; how many load.
2. **A heavy neighbour**: seven sessions each change their seed while an eighth runs a sweep; each
   change's time from key press to idle, against the same change with nobody else working.
3. **Memory**: the server's resident memory (RSS) before any session, after 100 reruns of one session
   (the seed changed each time: a session keeps only the matrices of the input it shows), and after
   every session closed: the session state goes 30 s after its tab closes, shared cache entries once
   unused for ``XVIZ_APP_CACHE_IDLE_S`` (set to IDLE_S here; 600 s by default).

    .venv/bin/python benchmarks/app_load.py --out docs/reliability-app.md

Prints and writes a Markdown section that ``benchmarks/reliability.py`` folds into docs/reliability.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_bench import IDLE, launch_chromium, start_server, timed_change, wait_idle  # noqa: E402

SMALL = "source=synthetic&n=512&d=32&heads=4&variant=sliding_window"
IDLE_S = 45  # XVIZ_APP_CACHE_IDLE_S for this server (the default, 600 s, would make the wait ten minutes)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cold_start(browser) -> tuple[int, int]:
    proc, url = start_server()
    ctxs = [browser.new_context() for _ in range(8)]
    try:
        pages = [c.new_page() for c in ctxs]
        for i, pg in enumerate(pages):
            pg.goto(f"{url}/?{SMALL}&seed={i}", wait_until="commit")
        ok = 0
        for pg in pages:
            try:
                pg.locator(".js-plotly-plot").first.wait_for(timeout=300_000)
                wait_idle(pg)
                ok += int(pg.locator('[data-testid="stException"]').count() == 0)
            except Exception:  # noqa: BLE001  a session that never loads counts as failed
                pass
        return ok, len(pages)
    finally:
        for c in ctxs:
            c.close()
        proc.terminate()
        proc.wait(timeout=20)


def seed_changes(pages, pid: int, rounds: int = 3) -> list[float]:
    times = []
    for r in range(rounds):
        for i, pg in enumerate(pages):
            wall, _ = timed_change(pg, pid, "seed", str(100 + 10 * r + i))
            times.append(wall)
    return times


def neighbour_and_memory(browser, reruns: int) -> dict:
    proc, url = start_server(env={"XVIZ_APP_CACHE_IDLE_S": str(IDLE_S)})
    out = {}
    try:
        out["rss_idle_mb"] = rss_mb(proc.pid)
        ctxs = [browser.new_context() for _ in range(8)]
        pages = [c.new_page() for c in ctxs]
        for i, pg in enumerate(pages):
            pg.goto(f"{url}/?{SMALL}&seed={i}")
            wait_idle(pg)
        quiet = seed_changes(pages[:7], proc.pid)
        # the eighth session starts a heavy sweep (every seed of three variants against N up to 2,048)
        heavy = pages[7]
        heavy.goto(f"{url}/sweeps?source=synthetic&n=2048&d=64&heads=8&sw_axis=n&sw_nmax=2048&sw_points=8"
                   "&sw_seeds=4&sw_variants=performer&sw_variants=nystrom&sw_variants=linformer", wait_until="commit")
        time.sleep(3.0)
        busy = seed_changes(pages[:7], proc.pid)
        still_running = heavy.locator(IDLE).count() == 0
        out.update(quiet_median_s=statistics.median(quiet), busy_median_s=statistics.median(busy),
                   busy_max_s=max(busy), sweep_still_running=still_running)
        out["rss_8_sessions_mb"] = rss_mb(proc.pid)
        one = pages[0]
        for r in range(reruns):
            timed_change(one, proc.pid, "seed", str(1000 + r))
        out["rss_after_reruns_mb"] = rss_mb(proc.pid)
        for c in ctxs:
            c.close()
        # a closed tab's session state goes after server.disconnectedSessionTTL (30 s, .streamlit/config.toml),
        # shared cache entries after IDLE_S unused, freed memory back to the system every 30 s
        time.sleep(IDLE_S + 45)
        out["rss_after_close_mb"] = rss_mb(proc.pid)
        out["reruns"] = reruns
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return out


def section(cold: tuple[int, int], m: dict) -> str:
    return "\n".join([
        "## App under load", "",
        "Measured by `benchmarks/app_load.py`: a real server (`streamlit run app.py`) and real Chromium sessions "
        f"on this machine (2 cores, the browsers on the same cores); inputs `{SMALL}`.", "",
        "| measure | value |", "|---|---|",
        f"| eight sessions opening at once on a cold server | {cold[0]} of {cold[1]} loaded |",
        f"| seed change, seven sessions, nobody else working (median) | {m['quiet_median_s']:.2f} s |",
        f"| the same while an eighth session runs a sweep (median / worst) | {m['busy_median_s']:.2f} s / "
        f"{m['busy_max_s']:.2f} s{' (the sweep still running)' if m['sweep_still_running'] else ''} |",
        f"| server RSS: idle / eight sessions open | {m['rss_idle_mb']:.0f} MB / {m['rss_8_sessions_mb']:.0f} MB |",
        f"| server RSS after {m['reruns']} reruns of one session | {m['rss_after_reruns_mb']:.0f} MB |",
        f"| server RSS {IDLE_S + 45} s after every session closed (cache entries expire after {IDLE_S} s unused) | {m['rss_after_close_mb']:.0f} MB |", ""])


def main() -> int:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/reliability-app.md")
    ap.add_argument("--reruns", type=int, default=100)
    args = ap.parse_args()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        cold = cold_start(browser)
        print(f"cold start: {cold[0]} of {cold[1]}", flush=True)
        m = neighbour_and_memory(browser, args.reruns)
        browser.close()
    text = section(cold, m)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
