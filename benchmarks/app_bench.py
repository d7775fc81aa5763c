"""App benchmark: the Explorer's server time from a settings change to the finished rerun, and
the bytes each chart sends, at N = 1,024 and 4,096 (through Streamlit's AppTest, in-process), plus
the time to open the first page in a real server.

    .venv/bin/python benchmarks/app_bench.py --out bench-output

Targets (issue 6): rerun ≤ 0.5 s at N = 1,024 and ≤ 2 s at N = 4,096 on a 2-core CPU; no chart
over 4 MB; first page under 5 s after the server is up.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def explorer_rerun(n: int, variant: str = "sliding_window") -> dict:
    """Load the Explorer at N, then change one setting (the seed) and time the rerun."""
    at = AppTest.from_file(APP, default_timeout=600)
    for k, v in {"source": "synthetic", "n": str(n), "d": "64", "heads": "4", "variant": variant}.items():
        at.query_params[k] = v
    t = time.perf_counter()
    at.run()
    first = time.perf_counter() - t
    assert not at.exception, [e.message for e in at.exception]
    seed = next(w for w in at.number_input if w.label == "seed")
    t = time.perf_counter()
    seed.set_value(seed.value + 1).run()
    rerun = time.perf_counter() - t
    assert not at.exception, [e.message for e in at.exception]
    charts = [len(el.proto.spec) for el in at.get("plotly_chart")]
    return {"n": n, "variant": variant, "first_run_s": first, "rerun_s": rerun,
            "charts": len(charts), "max_chart_bytes": max(charts), "total_chart_bytes": sum(charts)}


def first_page_seconds() -> float:
    """Seconds from a healthy server to the first page's finished script run (a real browser)."""
    from playwright.sync_api import sync_playwright

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    srv = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true",
                            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
                            "--server.port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                   args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            pg = b.new_page()
            t = time.perf_counter()
            pg.goto(f"http://127.0.0.1:{port}/")
            pg.wait_for_selector(".js-plotly-plot", timeout=120_000)
            while pg.locator('[data-testid="stStatusWidget"]').count():
                time.sleep(0.05)
            elapsed = time.perf_counter() - t
            b.close()
        return elapsed
    finally:
        srv.terminate()
        srv.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-output")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [explorer_rerun(1024), explorer_rerun(4096)]
    opening = first_page_seconds()
    limits = {1024: 0.5, 4096: 2.0}
    lines = ["# App benchmark (server time, AppTest in-process; first page through Chromium)", "",
             "| N | variant | first run (s) | rerun after a change (s) | target | charts | largest chart (MB) | all charts (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['variant']} | {r['first_run_s']:.2f} | {r['rerun_s']:.2f} | ≤ {limits[r['n']]} s "
                     f"({'met' if r['rerun_s'] <= limits[r['n']] else 'MISS'}) | {r['charts']} | "
                     f"{r['max_chart_bytes'] / 1e6:.2f} ({'met' if r['max_chart_bytes'] <= 4e6 else 'MISS'} ≤ 4) | "
                     f"{r['total_chart_bytes'] / 1e6:.2f} |")
    lines += ["", f"First page after the server is up: {opening:.2f} s (target < 5 s: {'met' if opening < 5 else 'MISS'})."]
    (out / "app.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
