"""``python -m xviz``: the catalog (list, show), runs against exact attention (run), checks, benchmarks, decode.

Every failure the user can cause ends in one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from .core.errors import XvizError


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


def load_input(spec: str, *, n: int, d: int, heads: int, seed: int, layer: int, kv: str = ""):
    """``synthetic:KIND`` | ``sample:NAME`` | ``text:SOME TEXT`` | ``file:PATH`` -> SequenceInput
    (``kv``: a second text whose keys and values the first text's queries attend)."""
    from .inputs.spec import InputSpec

    return InputSpec.parse(spec, n=n, d=d, heads=heads, layer=layer, kv_text=kv).load(seed)


def _cmd_run(args) -> int:
    import numpy as np

    from . import figures
    from .analysis import metrics
    from .core.engine import run
    from .core.errors import ParameterError

    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ParameterError(f"--param {item!r} must look like name=value.")
        params[key] = value
    seq = load_input(args.input, n=args.n, d=args.d, heads=args.heads, seed=args.seed, layer=args.layer, kv=args.kv)
    for note in seq.notices:
        print(f"notice: {note}")
    causal = args.causal or seq.causal
    r = run(args.name, seq.q, seq.k, seq.v, causal=causal, seed=args.seed, **params)
    e = run("exact", seq.q, seq.k, seq.v, causal=causal)
    print(f"input: {seq.provenance} — shape {tuple(seq.q.shape)}{', causal' if causal else ''}")
    print(f"{args.name} {r.params}: {r.cost.flops:.3g} FLOPs, {r.cost.bytes:.3g} bytes (theory)")
    m = metrics.compare(e, r, v=seq.v, with_matrix=r.has_matrix)
    for key, value in m.as_dict().items():
        print(f"  {key}: {value:.4g}")
    print(f"artifacts: {', '.join(r.artifacts) or 'none'}")
    if args.out:
        arrays = {"out": r.out, "exact_out": e.out}
        if r.has_matrix:
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

    from .analysis.bench import device_label, run_engine_bench, targets_text, write_tables

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    ns = [int(x) for x in args.n.split(",")]
    variants = args.variants.split(",") if args.variants else None
    rows = run_engine_bench(variants, ns=ns, d=args.d, heads=args.heads, batch=args.batch, device=device,
                            dtype=dtype, causal=args.causal, repeats=args.repeats,
                            max_quadratic_n=args.max_quadratic_n, progress=lambda m: print(m, flush=True))
    label = device_label(torch.device(device))
    title = f"Engine benchmark on {label}, {args.dtype}, d={args.d}, heads={args.heads}, batch={args.batch}"
    csv_path, md_path = write_tables(rows, args.out, title)
    print(targets_text(rows))
    print(f"wrote {md_path} and {csv_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xviz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the variant catalog").set_defaults(func=_cmd_list)
    show = sub.add_parser("show", help="one variant's parameters and capabilities")
    show.add_argument("name")
    show.set_defaults(func=_cmd_show)
    runp = sub.add_parser("run", help="run a variant on an input; print its error against exact attention")
    runp.add_argument("name")
    runp.add_argument("--input", default="synthetic:clustered",
                      help="synthetic:KIND | sample:NAME | text:TEXT | file:PATH (default synthetic:clustered)")
    runp.add_argument("--n", type=int, default=256)
    runp.add_argument("--d", type=int, default=64)
    runp.add_argument("--heads", type=int, default=4)
    runp.add_argument("--layer", type=int, default=0, help="model layer (text inputs)")
    runp.add_argument("--kv", default="", help="cross-attention: a second text (text inputs) whose keys and values "
                                               "the queries attend")
    runp.add_argument("--seed", type=int, default=0)
    runp.add_argument("--causal", action="store_true")
    runp.add_argument("--param", action="append", default=[], help="name=value (repeatable)")
    runp.add_argument("--head", type=int, default=0, help="head drawn in --html")
    runp.add_argument("--out", help="NPZ with outputs, matrices and artifacts")
    runp.add_argument("--html", help="standalone HTML: exact, approximate, difference")
    runp.set_defaults(func=_cmd_run)
    check = sub.add_parser("check", help="sanity-check a variant: MODULE:NAME (a plugin) or NAME (built-in)")
    check.add_argument("target")
    check.add_argument("--quick", action="store_true", help="skip the sweeps and the complexity fit")
    check.add_argument("--report", help="HTML report path (default xviz-check-NAME.html)")
    check.set_defaults(func=_cmd_check)
    bench = sub.add_parser("bench", help="time and peak memory of every variant against N")
    bench.add_argument("--n", default="1024,2048,4096,8192,16384", help="comma-separated sequence lengths")
    bench.add_argument("--d", type=int, default=64)
    bench.add_argument("--heads", type=int, default=8)
    bench.add_argument("--batch", type=int, default=1)
    bench.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")
    bench.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    bench.add_argument("--causal", action="store_true")
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--variants", help="comma-separated names (default: all)")
    bench.add_argument("--max-quadratic-n", type=int, default=16384, help="largest N for quadratic variants")
    bench.add_argument("--threads", type=int, help="CPU threads (default: torch's; 1 is steadier on a shared machine)")
    bench.add_argument("--out", default="bench-output", help="folder for engine.md and engine.csv")
    bench.set_defaults(func=_cmd_bench)
    from .decode.cli import add_parser as add_decode_parser

    add_decode_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except XvizError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
