"""``python -m xviz decode POLICY``: replay decoding of an input under a KV-cache policy.

Prints the summary (final and mean kept mass, mean and max output error, cache bytes) and writes
the per-step table (CSV), the arrays (NPZ) and the figures (HTML). Every user error is an XvizError
(one line, exit code 2, from ``xviz.cli.main``).
"""
from __future__ import annotations

import argparse

import os

from ..inputs.catalog import cli_forms


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the ``decode`` subcommand to ``xviz.cli``'s subparsers."""
    p = sub.add_parser("decode", help="replay causal decoding under a KV-cache policy; error against the full cache")
    p.add_argument("policy", help="full, window, sinks, h2o, tova, snapkv, quest, or a plugin's")
    p.add_argument("--input", default="synthetic:needle",
                   help=f"one of {cli_forms()} (default synthetic:needle)")
    # budget and prefill are read as text so that a bad value is one XvizError line, like --param
    p.add_argument("--budget", default="64", help="cached positions a step reads, its own included (default 64)")
    p.add_argument("--prefill", default=None, help="prompt length before the first step (default N // 2)")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layer", type=int, default=0, help="model layer (text inputs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param", action="append", default=[], help="policy parameter name=value (repeatable)")
    p.add_argument("--head", type=int, default=0, help="head drawn in --html")
    p.add_argument("--out", help="NPZ: per-step mass, error, kept counts, bytes, eviction steps")
    p.add_argument("--csv", help="CSV: one row per batch, head and step")
    p.add_argument("--html", help="standalone HTML: curves over steps, the cache and the attention at the last step")
    p.set_defaults(func=run_decode)
    return p


def _whole(name: str, text: str | None) -> int | None:
    from ..core.errors import ParameterError

    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ParameterError(f"--{name} {text!r:.40} must be a whole number.") from None


def _params(items: list[str]) -> dict:
    from ..core.errors import ParameterError

    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ParameterError(f"--param {item!r:.60} must look like name=value.")
        params[key] = value
    return params


def _write_html(path: str, result, seq, head: int) -> None:
    from ..figures.decode import cache_strip, decode_curves, step_attention

    last = result.n - 1
    marks = {key: seq.meta[key] for key in ("needle", "query") if isinstance(seq.meta.get(key), int)}
    figs = [decode_curves([result]), cache_strip(result, last, marks=marks),
            step_attention(result, last, head=head, tokens=seq.tokens)]
    body = "".join(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
                   for i, fig in enumerate(figs))
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"<!doctype html><html><head><meta charset='utf-8'><title>xviz decode: {result.policy}</title>"
                f"</head><body style='font-family:sans-serif'>{body}</body></html>")


def run_decode(args) -> int:
    import numpy as np

    from ..core.errors import ParameterError
    from ..inputs import InputSpec, fmt_bytes
    from .registry import get_policy
    from .replay import simulate
    from .result import needle_found

    spec = get_policy(args.policy)
    budget, prefill = _whole("budget", args.budget), _whole("prefill", args.prefill)
    seq = InputSpec.parse(args.input, n=args.n, d=args.d, heads=args.heads, layer=args.layer).load(args.seed)
    for note in seq.notices:
        print(f"notice: {note}")
    if args.html and not 0 <= args.head < seq.q.shape[1]:
        raise ParameterError(f"--head {args.head} must be in [0, {seq.q.shape[1] - 1}] (the input has "
                             f"{seq.q.shape[1]} heads).")
    r = simulate(spec.name, seq.q, seq.k, seq.v, budget=budget, prefill=prefill, **_params(args.param))
    print(f"input: {seq.provenance} — shape {tuple(seq.q.shape)}")
    if not seq.causal:
        print("note: this input is not causal as given; decoding reads it causally (each step sees only "
              "the positions before it and itself).")
    used = "" if spec.uses_budget else " (ignored by this policy)"
    print(f"policy {spec.name} {r.params}: budget {r.budget}{used}, prefill {r.prefill}, "
          f"{r.n - r.prefill} steps decoded")
    s = r.summary()
    print(f"  final kept mass: {s['final_mass']:.4g}")
    print(f"  mean kept mass: {s['mean_mass']:.4g}")
    print(f"  mean output error: {s['mean_error']:.4g}")
    print(f"  max output error: {s['max_error']:.4g}")
    held = " read per step; the whole cache stays resident" if spec.reads_only else ""
    print(f"  cache bytes: {s['final_cache_bytes']} at the last step ({fmt_bytes(s['final_cache_bytes'])}{held}), "
          f"peak {s['peak_cache_bytes']}, full cache {s['full_cache_bytes']} ({fmt_bytes(s['full_cache_bytes'])})")
    if {"needle", "query"} <= set(seq.meta) and r.prefill <= seq.meta["query"]:
        found = needle_found(r, seq.meta["needle"], seq.meta["query"])
        print(f"  needle at {seq.meta['needle']}, query at {seq.meta['query']}: found in "
              f"{int(found.sum())} of {found.numel()} heads")
    if args.out:
        np.savez_compressed(args.out, **r.arrays())
        print(f"wrote {args.out}")
    if args.csv:
        rows = r.rows()
        write_csv(args.csv, rows)
    if args.html:
        _write_html(args.html, r, seq, args.head)
        print(f"wrote {args.html}")
    return 0


def output_file(text: str) -> str:
    """A path whose folder exists (checked before any work starts, not after it): the argparse type of every
    output option of the command line (xviz/cli.py takes it from here)."""
    folder = os.path.dirname(os.path.abspath(text))
    if not text or os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is a folder, not a file name")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"the folder of {text[:80]!r} does not exist; create it first")
    return text


def write_csv(path: str, rows: list[dict]) -> None:
    """One CSV of ``rows`` (dicts with the same keys), said on stdout: every command's --csv."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def add_generate_parser(sub) -> argparse.ArgumentParser:
    """Add the ``generate`` subcommand: a real decoder generating under a KV-cache policy."""
    p = sub.add_parser("generate", help="generate text with a real decoder whose KV cache a policy prunes; "
                                        "KL against the full cache per step")
    p.add_argument("policy", help="full, window, sinks, h2o, tova, snapkv, quest, or a plugin's")
    p.add_argument("--model", default="smollm2-135m", help="a decoder: smollm2-135m (bundled) or an allowed folder")
    p.add_argument("--prompt", required=True, help="the prompt (tokenized as the model's tokenizer does, no template)")
    p.add_argument("--budget", default="64", help="cached positions a step reads, its own included (default 64)")
    p.add_argument("--max-new-tokens", default="32", help="tokens to generate (default 32)")
    p.add_argument("--param", action="append", default=[], help="policy parameter name=value (repeatable)")
    p.add_argument("--csv", type=output_file,
                   help="CSV: one row per step (token, KL, cache bytes, kept keys per layer)")
    p.add_argument("--html", type=output_file, help="standalone HTML: the texts, KL over the steps, kept keys per "
                                                     "layer and head")
    p.set_defaults(func=run_generate)
    return p


def generation_rows(result) -> list[dict]:
    """One row per generated token: step, token id and text, KL(full ‖ policy), cache bytes, and the keys
    kept per layer (summed over key/value heads)."""
    counts = result.kept_counts.sum(-1)  # (T, L)
    return [dict(step=s, token=t, text=label, kl=float(result.kl[s]), cache_bytes=int(result.cache_bytes[s]),
                 **{f"kept_layer_{layer}": int(counts[s, layer]) for layer in range(counts.shape[1])})
            for s, (t, label) in enumerate(zip(result.tokens, result.labels))]


def run_generate(args) -> int:
    from ..inputs import fmt_bytes
    from .generate import generate
    from .registry import get_policy

    spec = get_policy(args.policy)
    budget, steps = _whole("budget", args.budget), _whole("max-new-tokens", args.max_new_tokens)
    r = generate(spec.name, args.prompt, model=args.model, max_new_tokens=steps, budget=budget,
                 **_params(args.param))
    for note in r.notices:
        print(f"notice: {note}")
    used = "" if spec.uses_budget else " (ignored by this policy)"
    print(f"model: {r.model}; prompt {r.prefill} tokens; policy {spec.name} {r.params}: budget {r.budget}{used}")
    print(f"text: {r.text}")
    s = r.summary()
    print(f"  KL(full || policy) per step: mean {s['mean_kl']:.4g}, max {s['max_kl']:.4g} nats")
    print(f"  cache: {fmt_bytes(int(r.cache_bytes[-1]))} at the last step (all layers and key/value heads)")
    if args.csv:
        rows = generation_rows(r)
        write_csv(args.csv, rows)
    if args.html:
        from ..figures.generation import generation_html

        with open(args.html, "w", encoding="utf-8") as f:
            f.write(generation_html([r]))
        print(f"wrote {args.html}")
    return 0
