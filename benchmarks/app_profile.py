"""Where the server's time goes: ``streamlit run app.py`` under py-spy while a real browser changes the
seed and the window of the Explorer at one N (the changes of benchmarks/app_bench.py), then the top
frames by inclusive and by own samples, as markdown.

    .venv/bin/python benchmarks/app_profile.py --n 4096 --out bench-output

py-spy is a benchmark-only tool (requirements-bench.txt); it samples the server process and its threads
(the script runs in a thread of its own) every 10 ms.
"""
from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_bench import launch_chromium, start_server, timed_change, wait_idle  # noqa: E402

SKIP = ("threading.py", "concurrent/futures", "asyncio/", "selectors.py", "tornado/", "uvicorn/", "starlette/",
        "anyio/", "queue.py", "socket.py")


def serve_under_py_spy(raw: Path):
    spy = Path(sys.executable).with_name("py-spy")
    return start_server(prefix=(str(spy), "record", "--format", "raw", "--rate", "100", "--idle", "-o", str(raw), "--"))


def server_pid(spy: subprocess.Popen) -> int:
    """The streamlit process py-spy started (its child)."""
    kids = Path(f"/proc/{spy.pid}/task/{spy.pid}/children").read_text().split()
    return int(kids[0])


def summarise(raw: Path, top: int = 25) -> str:
    """Inclusive and own samples per frame over the script thread's stacks (idle frames dropped)."""
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or "ScriptRunner._run_script " not in stack:
            continue
        frames = [f for f in stack.split(";") if not any(s in f for s in SKIP)]
        n = int(count)
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    rows = ["| frame | inclusive | own |", "|---|---|---|"]
    for f, n in inclusive.most_common(top):
        rows.append(f"| `{f}` | {n / total:.0%} | {own[f] / total:.0%} |")
    rows += ["", "Own samples, the leaves where the script thread spends its time:", "", "| frame | own |", "|---|---|"]
    for f, n in own.most_common(15):
        rows.append(f"| `{f}` | {n / total:.0%} |")
    return f"{total} samples of the script thread (10 ms each).\n\n" + "\n".join(rows)


def main() -> int:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--out", default="bench-output")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"app_profile_{args.n}.txt"
    spy, url = serve_under_py_spy(raw)
    try:
        pid = server_pid(spy)
        with sync_playwright() as p:
            browser = launch_chromium(p)
            pg = browser.new_page(viewport={"width": 1500, "height": 1200})
            pg.goto(f"{url}/?source=synthetic&n={args.n}&d=64&heads=8&variant=sliding_window&budget=65")
            wait_idle(pg)
            for label, value in (("seed", "1"), ("window", "24"), ("seed", "2"), ("window", "30")):
                wall, cpu = timed_change(pg, pid, label, value)
                print(f"{label} -> {value}: {wall:.2f} s wall, {cpu:.2f} s server CPU", flush=True)
            browser.close()
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy stops its child and writes the profile
        spy.wait(timeout=60)
    text = summarise(raw)
    (out / f"app_profile_{args.n}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
