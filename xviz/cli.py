"""``python -m xviz``: the catalog (list, show), runs against exact attention (run), checks, benchmarks, decode,
generate (a real decoder under a KV-cache policy), plan (a per-head variant plan for a real model).

Every failure the user can cause ends in one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

from .core.errors import ParameterError, XvizError
from .decode.cli import output_file, write_csv
from .inputs.catalog import cli_forms


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line on stderr and exit code 2 (argparse would add the usage)."""

    def error(self, message: str):
        first = message.splitlines()[0] if message else "bad arguments"
        self.exit(2, f"error: {first} (see {self.prog} --help).\n")


def _int(low: int, what: str = "a whole number"):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {what}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}; it must be at least {low}")
        return value
    return parse


def _int_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a comma-separated list of whole numbers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: every N must be at least 1")
    return values


def _output_folder(text: str) -> str:
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is a file, not a folder")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"the folder that would hold {text[:80]!r} does not exist; create it first")
    return text


def _cmd_list(args) -> int:
    from .core.registry import list_variants

    rows = [(s.name, s.family, s.complexity, "yes" if s.causal else "no") for s in list_variants()]
    widths = [max(len(r[i]) for r in rows + [("name", "family", "complexity", "causal")]) for i in range(4)]
    for r in [("name", "family", "complexity", "causal")] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _cmd_show(args) -> int:
    from .core.registry import get_variant

    s = get_variant(args.name)
    print(f"{s.display_name} ({s.name}) — {s.family}")
    print(f"  paper: {s.paper}")
    print(f"  complexity: {s.complexity}")
    caps = [c for c, on in (("causal", s.causal), ("stochastic", s.stochastic),
                            ("row-stochastic", s.row_stochastic), ("matrix", s.has_matrix)) if on]
    print(f"  capabilities: {', '.join(caps) or 'none'}")
    print(f"  artifacts: {', '.join(f'{a.name} ({a.kind})' for a in s.artifacts) or 'none'}")
    for p in s.params:
        print(f"  --param {p.name}=<{p.kind}>  default {p.default!r}, range {p.range_text()}: {p.help}")
    return 0


def _cmd_run(args) -> int:
    import numpy as np

    from . import figures
    from .analysis import metrics
    from .core.engine import run
    from .core.result import matrix_budget
    from .inputs import InputSpec

    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ParameterError(f"--param {item!r} must look like name=value.")
        params[key] = value
    seq = InputSpec.parse(args.input, n=args.n, d=args.d, heads=args.heads, layer=args.layer, kv=args.kv).load(
        args.seed)
    for note in seq.notices:
        print(f"notice: {note}")
    b, h, n = seq.q.shape[0], seq.q.shape[1], seq.q.shape[-2]
    if args.html and not 0 <= args.head < h:
        raise ParameterError(f"--head {args.head} is outside 0–{h - 1}: the input has {h} heads.")
    causal = args.causal or seq.causal
    # Decided before any work: N×N matrices (metrics on A, --out matrices, --html) only within the budget.
    with_matrix = 2 * b * h * n * n * 4 <= matrix_budget()
    if not with_matrix:
        print(f"notice: at N = {n:,} the {h} × N² attention matrices would exceed the matrix budget "
              f"({matrix_budget() / 2**30:.1f} GiB); only the output error is computed and no matrices are "
              f"written (raise it with XVIZ_MATRIX_BUDGET_BYTES).", flush=True)
        if args.html:
            raise ParameterError(f"--html needs the N × N matrices, which at N = {n:,} exceed the matrix budget; "
                                 f"drop --html or use a shorter input (--n).")
    r = run(args.name, seq.q, seq.k, seq.v, causal=causal, seed=args.seed, **params)
    e = run("exact", seq.q, seq.k, seq.v, causal=causal)
    print(f"input: {seq.provenance} — shape {tuple(seq.q.shape)}{', causal' if causal else ''}")
    print(f"{args.name} {r.params}: {r.cost.flops:.3g} FLOPs, {r.cost.bytes:.3g} bytes (theory)")
    m = metrics.compare(e, r, v=seq.v, with_matrix=r.has_matrix and with_matrix)
    for key, value in m.as_dict().items():
        print(f"  {key}: {value:.4g}")
    print(f"artifacts: {', '.join(r.artifacts) or 'none'}")
    if args.out:
        arrays = {"out": r.out, "exact_out": e.out}
        if r.has_matrix and with_matrix:
            arrays.update(matrix=r.matrix(), exact_matrix=e.matrix())
        for key in r.artifacts:
            value = r.artifacts[key]
            if hasattr(value, "detach"):
                arrays[f"artifact_{key}"] = value
        np.savez_compressed(args.out, **{k: v.detach().float().cpu().numpy() if v.is_floating_point()
                                         else v.detach().cpu().numpy() for k, v in arrays.items()})
        print(f"wrote {args.out}")
    if args.html and r.has_matrix:
        fig = figures.compare_heatmaps(e.matrix()[0, args.head], r.matrix()[0, args.head], seq.tokens,
                                       names=("exact", args.name))
        with open(args.html, "wb") as f:
            f.write(figures.to_html(fig))
        print(f"wrote {args.html}")
    return 0


def _cmd_check(args) -> int:
    from .analysis.check import FAIL, check_variant, load_target
    from .figures.report import report_html

    name = load_target(args.target)
    print(f"checking {name} ({'quick' if args.quick else 'full'} battery)", flush=True)
    results = check_variant(name, quick=args.quick, progress=lambda r: print(r.line(), flush=True))
    from pathlib import Path

    report = Path(args.report or f"xviz-check-{name}.html")
    report.write_text(report_html(name, results))
    failed = [r.check for r in results if r.status == FAIL]
    print(f"{len(results) - len(failed)} passed or informational, {len(failed)} failed; report: {report}")
    return 1 if failed else 0


def _cmd_bench(args) -> int:
    import torch

    from .analysis.bench import device_label, parse_config, run_engine_bench, write_tables
    from .analysis.targets import targets_text
    from .core.registry import get_variant

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParameterError("--device cuda: this machine has no CUDA device (torch.cuda.is_available() is "
                             "False); use --device cpu.")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    ns = args.n
    variants = [x.strip() for x in args.variants.split(",") if x.strip()] if args.variants else None
    for name in variants or ():
        get_variant(parse_config(name)[0])  # an unknown name is refused before the first timing, not after
    rows = run_engine_bench(variants, ns=ns, d=args.d, heads=args.heads, batch=args.batch, device=device,
                            dtype=dtype, causal=args.causal, repeats=args.repeats,
                            max_quadratic_n=args.max_quadratic_n, progress=lambda m: print(m, flush=True))
    label = device_label(torch.device(device))
    title = f"Engine benchmark on {label}, {args.dtype}, d={args.d}, heads={args.heads}, batch={args.batch}"
    csv_path, md_path = write_tables(rows, args.out, title)
    print(targets_text(rows))
    print(f"wrote {md_path} and {csv_path}")
    return 0


def _cmd_plan(args) -> int:
    from .analysis import planner

    try:
        target = float(args.target)
    except ValueError:
        raise ParameterError(f"--target {args.target!r:.40} must be a number between 0 and 1.") from None
    rows = planner.plan(args.text, model=args.model, target=target,
                        progress=lambda done, total: print(f"layer {done}/{total}", flush=True))
    s = planner.summary(rows)
    print(f"{s['heads']} heads; patterns: " + ", ".join(f"{k} {v}" for k, v in s["patterns"].items() if v))
    print("cheapest variant meeting the target: " + ", ".join(f"{k} {v}" for k, v in s["variants"].items()))
    print(f"the plan's attention FLOPs: {s['flops_ratio']:.2f}x exact attention's on every head")
    if args.csv:
        write_csv(args.csv, rows)
    if args.html:
        from . import figures
        from .figures.generation import plan_map

        with open(args.html, "wb") as f:
            f.write(figures.to_html(plan_map(rows)))
        print(f"wrote {args.html}")
    return 0


def _add_plan_parser(sub) -> None:
    plan = sub.add_parser("plan", help="per layer and head of a real model: its attention pattern and the cheapest "
                                       "variant meeting an error target")
    plan.add_argument("--model", default="smollm2-135m", help="smollm2-135m (bundled), empty for all-MiniLM-L6-v2, "
                                                               "or an allowed model folder")
    plan.add_argument("--text", required=True, help="the text the model reads")
    plan.add_argument("--target", default="0.05",
                      help="relative output error a head's variant must meet (default 0.05)")
    plan.add_argument("--csv", type=output_file, help="CSV: one row per layer and head")
    plan.add_argument("--html", type=output_file, help="standalone HTML: the layer x head map")
    plan.set_defaults(func=_cmd_plan)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m xviz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the variant catalog").set_defaults(func=_cmd_list)
    show = sub.add_parser("show", help="one variant's parameters and capabilities")
    show.add_argument("name")
    show.set_defaults(func=_cmd_show)
    runp = sub.add_parser("run", help="run a variant on an input; print its error against exact attention")
    runp.add_argument("name")
    runp.add_argument("--input", default="synthetic:clustered",
                      help=f"one of {cli_forms()} (default synthetic:clustered)")
    runp.add_argument("--n", type=_int(1), default=256)
    runp.add_argument("--d", type=_int(1), default=64)
    runp.add_argument("--heads", type=_int(1), default=4)
    runp.add_argument("--layer", type=_int(0), default=0, help="model layer (text inputs)")
    runp.add_argument("--kv", default="", help="cross-attention: a second text (text inputs) whose keys and values "
                                               "the queries attend")
    runp.add_argument("--seed", type=_int(0), default=0)
    runp.add_argument("--causal", action="store_true")
    runp.add_argument("--param", action="append", default=[], help="name=value (repeatable)")
    runp.add_argument("--head", type=_int(0), default=0, help="head drawn in --html")
    runp.add_argument("--out", type=output_file, help="NPZ with outputs, matrices and artifacts")
    runp.add_argument("--html", type=output_file, help="standalone HTML: exact, approximate, difference")
    runp.set_defaults(func=_cmd_run)
    check = sub.add_parser("check", help="sanity-check a variant: MODULE:NAME (a plugin) or NAME (built-in)")
    check.add_argument("target")
    check.add_argument("--quick", action="store_true", help="skip the sweeps and the complexity fit")
    check.add_argument("--report", type=output_file, help="HTML report path (default xviz-check-NAME.html)")
    check.set_defaults(func=_cmd_check)
    bench = sub.add_parser("bench", help="time and peak memory of every variant against N")
    bench.add_argument("--n", type=_int_list, default=[1024, 2048, 4096, 8192, 16384],
                       help="comma-separated sequence lengths")
    bench.add_argument("--d", type=_int(1), default=64)
    bench.add_argument("--heads", type=_int(1), default=8)
    bench.add_argument("--batch", type=_int(1), default=1)
    bench.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")
    bench.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    bench.add_argument("--causal", action="store_true")
    bench.add_argument("--repeats", type=_int(1), default=3)
    bench.add_argument("--variants", help="comma-separated names (default: all)")
    bench.add_argument("--max-quadratic-n", type=_int(1), default=16384, help="largest N for quadratic variants")
    bench.add_argument("--threads", type=_int(1), help="CPU threads (default: torch's; 1 is steadier on a shared "
                                                        "machine)")
    bench.add_argument("--out", type=_output_folder, default="bench-output", help="folder for engine.md and engine.csv")
    bench.set_defaults(func=_cmd_bench)
    from .decode.cli import add_generate_parser, add_parser as add_decode_parser

    add_decode_parser(sub)
    add_generate_parser(sub)
    _add_plan_parser(sub)
    return parser


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plugin_frame(exc: BaseException) -> str | None:
    """The module of the innermost frame outside xviz (and the standard library) where ``exc`` was
    raised, when there is one: a plugin's own bug, reported in one line like any user error."""
    here = os.path.dirname(os.path.abspath(__file__))
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = os.path.abspath(frame.filename)
        if path.startswith(here) or "site-packages" in path or path.startswith(os.path.dirname(os.__file__)):
            continue
        return f"{os.path.basename(path)}:{frame.lineno}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except XvizError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output that cannot be written (disk full, permissions): the user's to fix
        what = os.path.basename(str(exc.filename or ""))  # the file's name only, never a server path
        print(f"error: {_one_line(exc.strerror or type(exc).__name__)}{': ' + what[:80] if what else ''}.",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 — a plugin that raises is named in one line; an xviz bug is not hidden
        where = _plugin_frame(exc)
        if where is None:
            raise
        msg = f"the plugin code at {where} raised {type(exc).__name__}: {exc}"
        print(f"error: {_one_line(msg)}", file=sys.stderr)
        return 2
