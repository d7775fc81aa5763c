"""Computation the pages share, cached on explicit keys and bounded by bytes.

Three layers, each on its own key, so a change recomputes only what depends on it: the input (its
provenance, device, dtype), the runs (input + variant + parameters), and the views built from them
(pooled figures, metrics). The process-wide caches hold inputs and results without their N×N
matrices; a session keeps the matrices of the view it is looking at, within a per-session budget,
and drops them when it looks elsewhere or ends. Work over the guard waits for a click and counts
against the session's allowance of heavy work.
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any, Callable, Mapping

import streamlit as st
import torch

import xviz
from xviz.analysis import metrics as metrics_lib
from xviz.analysis.keys_per_query import budget_params, real_group_params
from xviz.app.allowance import Allowance
from xviz.analysis.exact_chunks import exact_in_chunks
from xviz.app.cache import BoundedCache, release_memory_every
from xviz.core.errors import BudgetError, XvizError
from xviz.core.registry import Shape
from xviz.inputs import InputSpec, SequenceInput

GiB = 2**30
INPUTS = BoundedCache(int(float(os.environ.get("XVIZ_APP_INPUT_CACHE_GB", 1)) * GiB))
RESULTS = BoundedCache(int(float(os.environ.get("XVIZ_APP_RESULT_CACHE_GB", 1.5)) * GiB))
SMALL = BoundedCache(256 * 2**20)  # metrics, pooled views, anything derived and small
MEASURED = BoundedCache(64 * 2**20)  # finished benchmark measurements (of this machine: shown to every session)
REPLAYS = BoundedCache(512 * 2**20)  # decoding replays: per-step curves, one eviction step per key
# a session keeps the matrices it looks at: the exact and one variant at N = 4,096 with 8 heads (2 × 512 MiB)
SESSION_MATRIX_BYTES = int(float(os.environ.get("XVIZ_APP_SESSION_MATRIX_GB", 1.25)) * GiB)
METRIC_ROWS = 1024  # above this many queries, the matrix metrics are measured on this many, evenly spaced
GUARD_FLOPS = 4e11  # work above this waits for a click (tens of seconds on a CPU)
HEAVY_ALLOWANCE = float(os.environ.get("XVIZ_APP_HEAVY_FLOPS", 2e13))  # per session per 10 minutes
RELEASE_MEMORY_S = 30  # how often freed memory goes back to the system (sessions end without a hook)
CACHE_IDLE_S = float(os.environ.get("XVIZ_APP_CACHE_IDLE_S", 600))  # shared entries unused this long are dropped
MATRIX_MAX_N = 4096  # matrix-based metrics and heatmaps up to this N (memory: B·H·N² floats)
DTYPES = ("float32", "bfloat16", "float16")
release_memory_every(RELEASE_MEMORY_S, (INPUTS, RESULTS, SMALL, REPLAYS), CACHE_IDLE_S)


@st.cache_resource(show_spinner=False)
def device_dtypes(device: str) -> tuple[str, ...]:
    """The dtypes this device can run attention in (a tiny softmax and matmul probe each)."""
    ok = []
    for name in DTYPES:
        try:
            x = torch.ones(2, 4, 4, dtype=getattr(torch, name), device=device)
            torch.softmax(torch.matmul(x, x.transpose(-1, -2)), -1).sum().item()
            ok.append(name)
        except Exception:  # noqa: BLE001  an unsupported dtype on this device
            pass
    return tuple(ok) or ("float32",)


def load_input(spec: InputSpec, seed: int, device: str, dtype: str) -> SequenceInput:
    return INPUTS.get((spec.key(seed), device, dtype),
                      lambda: spec.load(seed).to(device=device, dtype=getattr(torch, dtype)))


def run(ctx, name: str, params: Mapping[str, Any]):
    """(AttentionResult, seconds of its first run) on the context's input; cached across sessions."""
    items = tuple(sorted(params.items()))

    def make():
        t0 = time.perf_counter()
        r = xviz.run(name, ctx.inp.q, ctx.inp.k, ctx.inp.v, causal=ctx.causal, seed=ctx.seed, **dict(items))
        if r.out.device.type == "cuda":
            torch.cuda.synchronize()
        return r, time.perf_counter() - t0

    return RESULTS.get(ctx.key(name, items), make)


def run_exact(ctx):
    """The exact reference: one fused call when it is cheap, else in query chunks behind a progress bar,
    so that a rerun or the session ending interrupts it between chunks (cached once finished)."""
    if exact_cost(ctx) <= GUARD_FLOPS:
        return run(ctx, "exact", {})
    key = ctx.key("exact", ())
    done = RESULTS.peek(key)
    if done is not None:
        return done
    bar = st.progress(0.0, text="Exact attention, in chunks of queries…")
    t0 = time.perf_counter()
    r = exact_in_chunks(ctx.inp.q, ctx.inp.k, ctx.inp.v, causal=ctx.causal,
                        progress=lambda e, n: bar.progress(e / n, text=f"Exact attention: {e} of {n} queries"))
    bar.empty()
    RESULTS.put(key, (r, time.perf_counter() - t0))
    return r, time.perf_counter() - t0


def shape(ctx) -> Shape:
    b, h, n, d = ctx.shape
    return Shape(b, h, n, d, ctx.inp.v.shape[-1], ctx.causal, ctx.inp.k.shape[-2])


def cost(ctx, spec, params: Mapping[str, Any]) -> float:
    """FLOPs of ``spec`` at ``params`` on this input (0 when the parameters are invalid: the run says why)."""
    try:
        return float(spec.cost_at(shape(ctx), params).flops)
    except XvizError:
        return 0.0


def exact_cost(ctx) -> float:
    return cost(ctx, xviz.get_variant("exact"), {})


def allowance() -> Allowance:
    if "_heavy" not in st.session_state:
        st.session_state["_heavy"] = Allowance(HEAVY_ALLOWANCE)
    return st.session_state["_heavy"]


def allowed(label: str, flops: float, key: str) -> bool:
    """Work over the guard waits for a click, and counts against the session's heavy allowance."""
    if flops <= GUARD_FLOPS:
        return True
    from xviz.app.settings import format_flops, seconds_estimate

    if not st.checkbox(f"Run {label} ({format_flops(flops)}FLOPs, about {seconds_estimate(flops):.0f} s here)",
                       value=False, key=key):
        return False
    why = allowance().take(flops, time.time())
    if why:
        from .display import say

        say("warning", f"{label} not started: {why}")
        return False
    return True


def budget_match(ctx, spec, budget: int):
    """``analysis.keys_per_query.Budgeted``: the parameters matched to ``budget`` keys per query (None when the
    variant's parameters cannot be resolved at this shape)."""
    b, h, n, d = ctx.shape
    try:
        return budget_params(spec, ctx.inp.k.shape[-2], d, h, keys_per_row=budget, causal=ctx.causal,
                             dv=ctx.inp.v.shape[-1])
    except XvizError:
        return None


def budget_defaults(ctx, spec, budget: int) -> dict:
    got = budget_match(ctx, spec, budget)
    params = got.params if got is not None else {p.name: p.fit_default(ctx.n, ctx.shape[-1]) for p in spec.params}
    return {**params, **real_group_params(spec, ctx.inp)}  # a grouped-query model's own groups


def default_budget(n: int) -> int:
    """Keys per query the pages give every variant by default: a quarter of N, at least 16 (or N) so
    that a short sentence still gets patterns, features and ranks that look like themselves, at most 64."""
    return max(min(n, 16), min(64, (n + 3) // 4))


# --------------------------------------------------------------------------------------------- matrices
def matrix_of(ctx, key: tuple, result) -> torch.Tensor:
    """The effective matrix of one run, kept for this session under the run's own key (the exact
    reference's survives a change of variant, not a change of input); the least recently used are
    dropped to stay within SESSION_MATRIX_BYTES. Raises BudgetError when it alone would not fit."""
    kept = st.session_state.setdefault("_matrices", OrderedDict())
    here = ctx.key()
    for old in [k for k in kept if k[:len(here)] != here]:  # another input (a new seed): not coming back soon
        del kept[old]
    if key in kept:
        kept.move_to_end(key)
        return kept[key][0]
    b, h, n, _ = ctx.shape
    need = b * h * n * ctx.inp.k.shape[-2] * 4
    if need > SESSION_MATRIX_BYTES:
        raise BudgetError(f"the attention matrix takes {need / GiB:.2f} GiB, over this session's "
                          f"{SESSION_MATRIX_BYTES / GiB:.2f} GiB; use a shorter input or fewer heads.")
    while kept and sum(size for _, size in kept.values()) + need > SESSION_MATRIX_BYTES:
        kept.popitem(last=False)  # free the oldest before building a new one
    m = result.matrix(keep=False)
    kept[key] = (m, need)
    return m


def matrices(ctx, results: Mapping[str, tuple]) -> dict[str, torch.Tensor]:
    """label -> matrix for label -> (run key, AttentionResult); see ``matrix_of``."""
    return {label: matrix_of(ctx, key, r) for label, (key, r) in results.items()}


def sampled_rows(n: int) -> torch.Tensor | None:
    """The queries the matrix metrics are measured on: all up to METRIC_ROWS, else METRIC_ROWS evenly spaced."""
    return None if n <= METRIC_ROWS else torch.linspace(0, n - 1, METRIC_ROWS).round().long()


def metrics(ctx, key: tuple, exact, approx, mats: Mapping[str, torch.Tensor] | None, topk: int,
            head: int | None = None):
    """The error panel (cached on the view's key): matrix metrics when the matrices are here (on
    ``sampled_rows`` at large N; the output error always on every query), else the output error only;
    of one ``head`` (the shown one: an eighth of the work at 8 heads), or of every head (None)."""
    def pick(t):
        return t if head is None or t is None else t[:, head:head + 1]

    def make():
        if mats is not None and mats.get("approx") is not None:
            rows = sampled_rows(ctx.n)
            a, b = pick(mats["exact"]), pick(mats["approx"])
            if rows is not None:
                a, b = a[:, :, rows], b[:, :, rows]
            return metrics_lib.compare(a, b, k=topk, outputs=(pick(exact.out), pick(approx.out)))
        return metrics_lib.compare(SimpleNamespace(out=pick(exact.out)), SimpleNamespace(out=pick(approx.out)),
                                   with_matrix=False)
    return SMALL.get(key + ("metrics", topk, mats is not None, head), make)


@st.cache_resource(max_entries=4, show_spinner=False)
def model_layers(text: str, model: str):
    """Every layer's Q/K/V of the model on ``text`` (Spectra and Real model share it)."""
    from xviz.analysis import spectra

    return spectra.model_layers(text, model or None)


def derived(key: tuple, make: Callable[[], Any]) -> Any:
    """Anything small derived from a run (a pooled figure, a table), cached on ``key``."""
    return SMALL.get(key, make)
