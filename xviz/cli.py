"""``python -m xviz``: the catalog, one variant's spec, and runs against exact attention from the shell.

Every failure the user can cause ends in one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from .errors import XvizError


def _cmd_list(args) -> int:
    from .registry import list_variants

    rows = [(s.name, s.family, s.complexity, "yes" if s.causal else "no") for s in list_variants()]
    widths = [max(len(r[i]) for r in rows + [("name", "family", "complexity", "causal")]) for i in range(4)]
    for r in [("name", "family", "complexity", "causal")] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _cmd_show(args) -> int:
    from .registry import get_variant

    s = get_variant(args.name)
    print(f"{s.display_name} ({s.name}) — {s.family}")
    print(f"  paper: {s.paper}")
    print(f"  complexity: {s.complexity}")
    caps = [c for c, on in (("causal", s.causal), ("stochastic", s.stochastic),
                            ("row-stochastic", s.row_stochastic), ("matrix", s.has_matrix)) if on]
    print(f"  capabilities: {', '.join(caps) or 'none'}")
    print(f"  artifacts: {', '.join(s.artifacts) or 'none'}")
    for p in s.params:
        print(f"  --param {p.name}=<{p.kind}>  default {p.default!r}, range {p.range_text()}: {p.help}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xviz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the variant catalog").set_defaults(func=_cmd_list)
    show = sub.add_parser("show", help="one variant's parameters and capabilities")
    show.add_argument("name")
    show.set_defaults(func=_cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except XvizError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
