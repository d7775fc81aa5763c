"""Reliability, measured: run the fuzz suites' strategies and tally every case into docs/reliability.md.

    python benchmarks/reliability.py --out docs/reliability.md            # the quick (CI) profile
    XVIZ_FUZZ=long python benchmarks/reliability.py --out docs/reliability.md   # or --profile long

The cases are those of tests/test_fuzz_registry.py, tests/test_fuzz_inputs.py and
tests/test_fuzz_cli.py at the chosen profile (the same strategies, derandomized, and the same example
counts), plus their regression lists. Between runs of this script the split into results and errors
moved by under 1 % for the loaders and the CLI (temporary paths differ); escapes stayed at 0. Each case ends as a clean result, a clean error (an XvizError of one sentence
naming the culprit; exit 2 with one line for the CLI), or an escape (must be 0). Nothing here fails a
build: the tests do; this measures and writes the table. The "App under load" section is
docs/reliability-app.md, written by benchmarks/app_load.py, folded in when present.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

APP_LOAD = ROOT / "docs" / "reliability-app.md"  # benchmarks/app_load.py --out docs/reliability-app.md


def _tally(strategy, classify, examples: int, extra=()) -> dict:
    """Run ``classify`` on ``extra`` and on ``examples`` derandomized draws of ``strategy``."""
    from hypothesis import HealthCheck, given, settings

    counts, escapes = collections.Counter(), []

    def record(label, o):
        counts[o.kind] += 1
        if o.kind == "escape":
            escapes.append(f"{label}: {o.detail}"[:400])

    for label, case in extra:
        record(label, classify(case))

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(item):
        label, case = item
        record(label, classify(case))

    t = time.perf_counter()
    run()
    return dict(counts=counts, escapes=escapes, seconds=time.perf_counter() - t)


def registry_suite(factor: int) -> dict:

    from tests import test_fuzz_registry as R

    regressions = [(f"regression {c.name}", c) for c in R.REGRESSIONS]
    picks = iter(range(10**9))
    bounds = [(f"{c.name} {c.dtype} (bound sweep)", c)
              for c in R.bound_cases(lambda options: options[next(picks) % len(options)])]
    label = lambda c: f"{c.name} {c.dtype}"  # noqa: E731
    out = _tally(R.cases().map(lambda c: (label(c), c)), R.classify, R.ANY_CASE_EXAMPLES * factor,
                 regressions + bounds)
    out["what"] = (f"{len(R.NAMES)} built-in variants; shapes B ∈ 0–2, H ∈ 0–3, N and N_k ∈ 0–40 (N_q ≠ N_k for "
                   f"cross variants), d ∈ 0–8, d_v ∈ 0–6; every parameter at its default, bounds, inside, one "
                   f"past each bound and of the wrong type; float64/float32/bfloat16/float16; causal on and off; "
                   f"scale none or 1e-4…1e4 (and 0, −1, NaN, ∞); q, k magnitudes 0…3e38, v 0…1e300; plus "
                   f"{len(bounds)} single-parameter bound cases and {len(regressions)} regressions")
    return out


def inputs_suite(factor: int) -> dict:

    from tests import test_fuzz_inputs as I

    regressions = [(f"regression {name}", (name, data)) for name, data in I.REGRESSIONS]
    pair = lambda u: (os.path.splitext(u[0])[1] or u[0][-12:], u)  # noqa: E731
    classify = lambda u: I.outcome(*u)  # noqa: E731
    any_upload = _tally(I.uploads().map(pair), classify, I.UPLOAD_EXAMPLES * factor, regressions)
    arrays = _tally(I.ARRAY_UPLOADS.map(pair), classify, I.ARRAY_EXAMPLES * factor)
    any_upload["counts"] += arrays["counts"]
    any_upload["escapes"] += arrays["escapes"]
    any_upload["seconds"] += arrays["seconds"]
    any_upload["what"] = ("uploads through inputs.load_upload: .npz/.npy/.safetensors with zero, negative and "
                          "huge dimensions, lying headers and offsets, wrong and object dtypes, truncations, "
                          "NaN and 1e308 values; .txt of control characters, 100k tokens, emoji, bytes; .csv "
                          "with 1e308, NaN, malformed cells; .png garbage, truncated, every mode; file names "
                          "of up to 400 characters with control characters; plus "
                          f"{len(regressions)} regressions")
    return any_upload


def cli_suite(factor: int) -> dict:

    from tests import test_fuzz_cli as C

    folder = tempfile.mkdtemp(prefix="xviz-reliability-")
    regressions = [(" ".join(a[:2]), [x.replace("{tmp}", folder) for x in a]) for a in C.REGRESSION_ARGV]
    with C.broken_plugins():
        out = _tally(C.command_lines(folder).map(lambda argv: (" ".join(argv[:2]), argv)), C.outcome,
                     C.CLI_EXAMPLES * factor, regressions)
    out["what"] = ("python -m xviz run/bench/show/list and bad subcommands, in process: numbers that are not "
                   "numbers, zero and negative sizes, unknown variants and inputs, malformed input files, bad "
                   "--param, output paths in missing folders or that are folders, --head out of range, "
                   "--device cuda without CUDA, and plugins returning the wrong shape, dtype, NaN, a "
                   f"non-Output, a bad matrix, or raising; plus {len(regressions)} regressions")
    return out


def render(runs: dict, seconds: float) -> str:
    """runs: {profile: {suite: result}}."""
    import torch

    from tests.test_fuzz_registry import PROFILES

    profiles = ", ".join(f"**{p}** (examples ×{PROFILES[p]})" for p in runs)
    lines = ["# Reliability", "",
             f"Regenerate: `python benchmarks/reliability.py --out docs/reliability.md` (`make reliability`; "
             f"`--profile quick,long` or `PROFILE=quick,long` for both; `make fuzz` runs the long profile as "
             f"tests). This file: profiles {profiles}, torch {torch.__version__}, {os.cpu_count()} CPU cores, "
             f"{seconds:.0f} s in all.", "",
             "Each generated case ends as a **clean result** (finished, finite, shape and dtype right, "
             "`matrix() @ v == out` within a dtype-aware tolerance, rows summing to 1 where declared "
             "row-stochastic; for loaders: valid engine inputs), a **clean error** (an `XvizError` of one "
             "line naming the parameter or input; for the CLI: exit 2 with one `error:` line), or an "
             "**escape** (anything else: a traceback, a NaN, a broken identity, a multi-line message).", "",
             "| suite | profile | cases | clean results | clean errors | escapes | seconds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for profile, results in runs.items():
        for name, r in results.items():
            c = r["counts"]
            lines.append(f"| {name} | {profile} | {sum(c.values()):,} | {c['result']:,} | {c['error']:,} | "
                         f"**{c['escape']}** | {r['seconds']:.0f} |")
    results = list(runs.values())[-1]
    lines += ["", "## What each suite tries", ""]
    lines += [f"- **{name}**: {r['what']}." for name, r in results.items()]
    lines += ["", "## Escapes", ""]
    escapes = [(f"{name} ({p})", e) for p, res in runs.items() for name, r in res.items() for e in r["escapes"]]
    lines += [f"- {name}: `{e}`" for name, e in escapes[:50]] or ["None."]
    app = APP_LOAD.read_text(encoding="utf-8").strip() if APP_LOAD.exists() else (
        "## App under load\n\nNot measured in this run: `python benchmarks/app_load.py --out docs/reliability-app.md`.")
    lines += ["", app, ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/reliability.md", help="markdown file to write")
    parser.add_argument("--profile", default=None,
                        help="quick, long or quick,long (default: $XVIZ_FUZZ or quick)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from tests.test_fuzz_registry import PROFILES

    wanted = (args.profile or os.environ.get("XVIZ_FUZZ") or "quick").split(",")
    bad = [p for p in wanted if p not in PROFILES]
    if bad:
        parser.error(f"unknown profile {bad[0]!r}; choose from {', '.join(PROFILES)}")
    t = time.perf_counter()
    runs = {}
    for name in wanted:
        runs[name] = {}
        for label, suite in (("registry", registry_suite), ("loaders", inputs_suite), ("CLI", cli_suite)):
            print(f"{label} ({name})…", flush=True)
            runs[name][label] = r = suite(PROFILES[name])
            print(f"  {sum(r['counts'].values())} cases: {dict(r['counts'])} in {r['seconds']:.0f} s", flush=True)
            for e in r["escapes"][:5]:
                print(f"  escape: {e}", flush=True)
    text = render(runs, time.perf_counter() - t)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
