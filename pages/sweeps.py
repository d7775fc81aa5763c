"""Sweeps: the error of one or more variants against one of their parameters, against N, or against the logit
scale, each point the mean over several seeds with a ± one standard deviation band. Points are drawn as they
arrive; the Stop button ends the sweep and keeps what was computed (Resume continues it)."""
import numpy as np
import pandas as pd
import streamlit as st
import torch

import xviz
from pages.ui import display, widgets
from pages.ui.sidebar import context
from xviz import figures, inputs
from xviz.analysis import sweeps
from xviz.app.jobs import Job
from xviz.analysis.metrics import METRIC_LABELS, METRIC_NAMES
from xviz.figures import scaling as fx

STATE = "_sweep_job"
AXIS_LABELS = {"param": "a parameter", "n": "N (sequence length)", "scale": "logit scale"}
X_LABELS = {"param": "parameter value", "n": "N (tokens)", "scale": "logit scale × 1/√d"}
MATRIX_MAX_N = 2048  # matrix metrics (KL, TV, Frobenius) need N×N weights


def series_for(axis: str, chosen: list[str], n: int, d: int, points: int, synthetic: bool):
    """The curves and their x values."""
    if axis == "param":
        series, values = [], {}
        cols = st.columns(max(1, min(4, len(chosen))))
        for i, nm in enumerate(chosen):
            spec = xviz.get_variant(nm)
            nums = [p.name for p in spec.params if p.kind in ("int", "float")]
            if not nums:
                cols[i % len(cols)].caption(f"{spec.display_name}: no numeric parameter to sweep.")
                continue
            pname = widgets.choice(f"{nm}: parameter", nums, f"sw_param.{nm}", sweeps.default_param(spec),
                                   container=cols[i % len(cols)])
            s = sweeps.Series(nm, param=pname)
            series.append(s)
            values[s.title] = sweeps.param_values(spec, pname, n, d, count=points)
        return series, values
    series = [sweeps.Series(nm) for nm in chosen]
    if axis == "n":
        top = 8192 if synthetic else n
        nmax = widgets.number("largest N", "sw_nmax", 8, max(8, top), min(top, 1024 if synthetic else n),
                              help="synthetic inputs are redrawn at each N; other inputs are cut to their first N tokens")
        xs = sweeps.n_values(nmax, points)
    else:
        xs = [float(2.0 ** e) for e in np.linspace(-3, 3, points)]
    return series, {s.title: xs for s in series}


def input_maker(ctx, axis: str):
    """(make_input(n, seed) -> (q, k, v), a sentence saying what it is)."""
    spec = ctx.spec
    dev, dt = ctx.device, getattr(torch, ctx.dtype)
    if axis == "n" and spec.source == "synthetic":
        def make(nn: int, seed: int):
            x = inputs.synthetic(spec.kind, n=nn, d=spec.d, heads=spec.heads, seed=seed, **dict(spec.knobs))
            x = x.to(device=dev, dtype=dt)
            return x.q, x.k, x.v
        return make, f"synthetic '{spec.kind}' input redrawn at every N and seed"
    note = ("this input (its first N tokens)" if axis == "n" else "this input")
    return (sweeps.fixed_input(ctx.inp.q, ctx.inp.k, ctx.inp.v),
            note + "; the seeds vary only the variants' own randomness (deterministic variants: no band)")


def run_sweep(job: Job, chart, series, values, make_input, ctx, axis: str, metric: str, nseeds: int) -> None:
    """The points not computed yet, drawn as they arrive (a rerun or a Stop keeps those already in ``job``)."""
    progress = st.empty()
    total = len(job.items)
    draw(chart, job.ordered(), total, axis, metric, ctx, final=False)
    for p in sweeps.sweep(series, axis, values, make_input, n=ctx.n, seeds=tuple(ctx.seed + i for i in range(nseeds)),
                          metric=metric, causal=ctx.causal, skip=set(job.results)):
        job.results[(p.series, float(p.x))] = p
        progress.progress(p.index / max(1, p.total), text=f"{p.index}/{p.total}: {p.series} at x = {p.x:g}")
        draw(chart, job.ordered(), total, axis, metric, ctx, final=False)
    progress.empty()


def buttons(job: Job) -> tuple:
    """Stop (only while the sweep runs: its slot is emptied when the sweep ends) and Resume / Run again."""
    bc = st.columns([1, 1, 4])
    stop_slot = bc[0].empty()
    if job.running and stop_slot.button("⏹ Stop", key="sw_stop", help="end the sweep; the points so far stay"):
        job.stop()
    resume = job.stopped and not job.done
    if bc[1].button("▶ Resume" if resume else "↻ Run again", key="sw_run",
                    help="continue from the last point" if resume else "recompute every point"):
        job.resume() if resume else job.restart()
    return stop_slot, bc[2].empty()


def draw(chart, pts, total: int, axis: str, metric: str, ctx, final: bool) -> None:
    fig = fx.sweep_figure(sweeps.collect(pts), x_label=X_LABELS[axis], y_label=METRIC_LABELS[metric], log_x=True,
                          log_y=metric != "topk_recall", total=total, font_size=ctx.font_size,
                          title=f"{METRIC_LABELS[metric]} against {AXIS_LABELS[axis]}")
    with chart.container():
        if final:
            display.show_figure(fig, f"sweep_{axis}_{metric}", ctx, key="fig_sweep")
        else:  # a partial curve: no key (a new element each redraw), no download
            st.plotly_chart(fig, config=figures.chart_config(ctx.img, f"sweep_{axis}_{metric}"), width="stretch")


def results_table(pts, ctx, axis: str, metric: str, nseeds: int, status, job: Job) -> None:
    if job.stopped and not job.done:
        status.info(f"Stopped after {len(pts)} of {len(job.items)} points. Resume continues from there.")
    elif job.done:
        status.caption(f"{len(pts)} points, {nseeds} seed{'s' * (nseeds > 1)} each.")
    errors = sorted({f"{p.series} at {p.x:g}: {p.error}" for p in pts if p.error})
    if errors:
        with st.expander(f"{len(errors)} points could not be computed", expanded=False):
            for e in errors[:50]:
                display.say("caption", e)
    if pts:
        df = pd.DataFrame([{"series": p.series, "x": p.x, "mean": p.mean, "std": p.std, "seeds": len(p.values),
                            "seconds per run": p.seconds, "error": p.error} for p in pts])
        display.download_csv("⬇ CSV", df, f"sweep_{axis}_{metric}", "dl_sweep", ctx)


ctx = context()
display.page_header("Sweeps", ctx)
if not display.require_input(ctx):
    st.stop()
b, h, n, d = ctx.shape
names = [s.name for s in xviz.list_variants() if s.name != "exact"]
with display.controls("Sweep", ctx):
    c = st.columns([3, 1, 1, 1, 1])
    chosen = widgets.choices("variants", names, "sw_variants", ["performer", "nystrom", "linformer"], container=c[0],
                             help="one curve per variant")
    axis = widgets.choice("against", list(sweeps.AXES), "sw_axis", "param", container=c[1],
                          help="param: each variant's own parameter; n: the sequence length; scale: a multiple of the "
                               "logit scale 1/√d")
    metric = widgets.choice("error", list(METRIC_NAMES), "sw_metric", "rel_out", container=c[2],
                            help="; ".join(f"{k}: {v}" for k, v in METRIC_LABELS.items()))
    nseeds = widgets.number("seeds", "sw_seeds", 1, 10, 3, container=c[3],
                            help="each point is the mean over this many seeds (± std band)")
    points = widgets.number("points", "sw_points", 2, 16, 6, container=c[4], help="x values per curve")
    series, values = series_for(axis, chosen, n, d, points, ctx.spec.source == "synthetic")
if not series:
    st.info("Choose at least one variant with a numeric parameter.")
    st.stop()
if metric in sweeps.MATRIX_METRICS and axis == "n" and max(max(v) for v in values.values()) > MATRIX_MAX_N:
    st.warning(f"{METRIC_LABELS[metric]} needs N×N matrices: choose rel_out for N above {MATRIX_MAX_N}.")
    st.stop()
make_input, input_note = input_maker(ctx, axis)
items = [(s.title, float(x)) for s in series for x in values[s.title]]
job = Job.current(st.session_state.get(STATE), (ctx.key(), axis, metric, nseeds, tuple(items)), items)
st.session_state[STATE] = job
stop_slot, status = buttons(job)
chart = st.empty()
if job.running:
    with display.guard("Sweep"):
        run_sweep(job, chart, series, values, make_input, ctx, axis, metric, nseeds)
if not job.running:
    stop_slot.empty()  # finished (or stopped): nothing to stop
pts = job.ordered()
draw(chart, pts, len(items), axis, metric, ctx, final=True)
results_table(pts, ctx, axis, metric, nseeds, status, job)
display.say("caption", f"Input: {input_note}. Exact attention is recomputed at every N and logit scale. "
            + ("Parameter values span each parameter's range at this N. " if axis == "param" else "")
            + ("Logit scale → 0: every variant returns mean(V); large scales sharpen attention — top-k, hashing and "
               "clustering improve, random features degrade." if axis == "scale" else ""))
