"""Sweeps: the error of one or more variants against one of their parameters, against N, or against the logit
scale, each point the mean over several seeds with a ± one standard deviation band. Points are drawn as they
arrive; the Stop button ends the sweep and keeps what was computed (Resume continues it)."""

import numpy as np
import pandas as pd
import streamlit as st
import torch

import xviz
from pages import common
from xviz import appstate
from xviz.analysis import sweeps
from xviz.figures import explain as fx
from xviz.analysis.metrics import METRIC_LABELS, METRIC_NAMES

STATE = "_sweep_state"
AXIS_LABELS = {"param": "a parameter", "n": "N (sequence length)", "scale": "logit scale"}
MATRIX_MAX_N = 2048  # matrix metrics (KL, TV, Frobenius) need N×N weights


ctx = common.context()
common.page_header("Sweeps", ctx)
if not common.require_input(ctx):
    st.stop()
b, h, n, d = ctx.shape
specs = [s for s in xviz.list_variants() if s.name != "exact"]
names = [s.name for s in specs]
raw = st.query_params.to_dict()
messages = appstate.check_choice(raw, "sw_axis", sweeps.AXES) + appstate.check_choice(raw, "sw_metric", METRIC_NAMES)
synthetic = bool(ctx.input_key) and ctx.input_key[0] == "synthetic"

with common.controls("Sweep", ctx):
    c = st.columns([3, 1, 1, 1, 1])
    default = [x for x in ("performer", "nystrom", "linformer") if x in names] or names[:1]
    chosen = c[0].multiselect("variants", names, default=default, key="sw_variants", bind=common.BIND,
                              help="one curve per variant")
    axis = c[1].selectbox("against", list(sweeps.AXES), index=0, key="sw_axis", bind=common.BIND,
                          help="param: each variant's own parameter; n: the sequence length; scale: a multiple of "
                               "the logit scale 1/√d")
    metric = c[2].selectbox("error", list(METRIC_NAMES), index=1, key="sw_metric", bind=common.BIND,
                            help="; ".join(f"{k}: {v}" for k, v in METRIC_LABELS.items()))
    nseeds = int(c[3].number_input("seeds", min_value=1, max_value=10, value=3, step=1, key="sw_seeds",
                                   bind=common.BIND, help="each point is the mean over this many seeds (± std band)"))
    points = int(c[4].number_input("points", min_value=2, max_value=16, value=6, step=1, key="sw_points",
                                   bind=common.BIND, help="x values per curve"))
    series, values = [], {}
    if axis == "param":
        pc = st.columns(max(1, min(4, len(chosen))))
        for i, nm in enumerate(chosen):
            spec = xviz.get_variant(nm)
            nums = [p.name for p in spec.params if p.kind in ("int", "float")]
            if not nums:
                pc[i % len(pc)].caption(f"{spec.display_name}: no numeric parameter to sweep.")
                continue
            first = sweeps.default_param(spec)
            pname = pc[i % len(pc)].selectbox(f"{nm}: parameter", nums, index=nums.index(first),
                                              key=f"sw_param.{nm}", bind=common.BIND)
            s = sweeps.Series(nm, param=pname)
            series.append(s)
            values[s.title] = sweeps.param_values(spec, pname, n, d, count=points)
    else:
        series = [sweeps.Series(nm) for nm in chosen]
        if axis == "n":
            nc = st.columns(2)
            top = n if not synthetic else 8192
            nmax = int(nc[0].number_input("largest N", min_value=8, max_value=max(8, top), value=min(top, 1024 if
                                          synthetic else n), step=8, key="sw_nmax", bind=common.BIND,
                                          help="synthetic inputs are redrawn at each N; other inputs are cut to "
                                               "their first N tokens"))
            nmin = min(nmax, max(8, min(64, nmax // 8)))
            xs = sorted({int(round(nmin * (nmax / nmin) ** (i / max(1, points - 1)))) for i in range(points)})
        else:
            xs = [float(2.0 ** e) for e in np.linspace(-3, 3, points)]
        values = {s.title: xs for s in series}
common.link_messages(messages)

if metric in sweeps.MATRIX_METRICS and (axis == "n" and max(max(v) for v in values.values()) > MATRIX_MAX_N
                                        if values else False):
    st.warning(f"{METRIC_LABELS[metric]} needs N×N matrices: choose rel_out for N above {MATRIX_MAX_N}.")
    st.stop()

# ------------------------------------------------------------------------------------------------ inputs
dev, dt = ctx.device, getattr(torch, ctx.dtype)
if axis == "n" and synthetic:
    from xviz import inputs

    _, kind, _, sd, sh, knobs = ctx.input_key[:6]

    def make_input(nn: int, seed: int):
        x = inputs.synthetic(kind, n=nn, d=sd, heads=sh, seed=seed, **dict(knobs)).to(device=dev, dtype=dt)
        return x.q, x.k, x.v

    input_note = f"synthetic '{kind}' input redrawn at every N and seed"
else:
    make_input = sweeps.fixed_input(ctx.inp.q, ctx.inp.k, ctx.inp.v)
    input_note = ("this input (its first N tokens)" if axis == "n" else "this input") + \
        "; the seeds vary only the variants' own randomness (deterministic variants: no band)"

sig = (ctx.key(), tuple(s.title for s in series), axis, metric, nseeds,
       tuple((k, tuple(v)) for k, v in values.items()))
state = st.session_state.get(STATE)
if state is None or state["sig"] != sig:
    state = {"sig": sig, "points": [], "done": False, "stopped": False}
    st.session_state[STATE] = state
total = sum(len(v) for v in values.values())

bc = st.columns([1, 1, 4])
stop_clicked = bc[0].button("⏹ Stop", key="sw_stop", help="end the sweep; the points so far stay")
resume = state["stopped"] and not state["done"]
again = bc[1].button("▶ Resume" if resume else "↻ Run again", key="sw_run",
                     help="continue from the last point" if resume else "recompute every point")
status = bc[2].empty()
if stop_clicked and not state["done"]:
    state["stopped"] = True
elif again:
    if not resume:
        state.update(points=[], done=False)
    state["stopped"] = False

x_label = {"param": "parameter value", "n": "N (tokens)", "scale": "logit scale × 1/√d"}[axis]
y_label = METRIC_LABELS[metric]
title = f"{y_label} against {AXIS_LABELS[axis]}"
log_y = metric != "topk_recall"
chart = st.empty()
progress = st.empty()


def draw(pts, final: bool) -> None:
    fig = fx.sweep_figure(sweeps.collect(pts), x_label=x_label, y_label=y_label, log_x=True, log_y=log_y,
                          total=total, font_size=ctx.font_size, title=title)
    with chart.container():
        if final:
            common.show_figure(fig, f"sweep_{axis}_{metric}", ctx, key="fig_sweep")
        else:  # the partial curve: no key (a new element each redraw), no download
            st.plotly_chart(fig, config=fx_config, width="stretch")


from xviz import figures  # noqa: E402

fx_config = figures.chart_config(ctx.img, f"sweep_{axis}_{metric}")
if not series:
    st.info("Choose at least one variant with a numeric parameter.")
    st.stop()
if not state["done"] and not state["stopped"]:
    done_keys = {(p.series, p.x) for p in state["points"]}
    seeds = tuple(ctx.seed + i for i in range(nseeds))
    with common.guard("Sweep"):
        draw(state["points"], final=False)
        for p in sweeps.sweep(series, axis, values, make_input, n=n, seeds=seeds, metric=metric, causal=ctx.causal,
                              skip=done_keys):
            state["points"].append(p)
            progress.progress(p.index / max(1, p.total), text=f"{p.index}/{p.total}: {p.series} at x = {p.x:g}")
            draw(state["points"], final=False)
        state["done"] = True
    progress.empty()

pts = state["points"]
draw(pts, final=True)
if state["stopped"] and not state["done"]:
    status.info(f"Stopped after {len(pts)} of {total} points. Resume continues from there.")
elif state["done"]:
    status.caption(f"{len(pts)} points, {nseeds} seed{'s' * (nseeds > 1)} each.")
errors = sorted({f"{p.series} at {p.x:g}: {p.error}" for p in pts if p.error})
if errors:
    with st.expander(f"{len(errors)} points could not be computed", expanded=False):
        for e in errors[:50]:
            st.write(e)
if pts:
    df = pd.DataFrame([{"series": p.series, "x": p.x, "mean": p.mean, "std": p.std, "seeds": len(p.values),
                        "seconds per run": p.seconds, "error": p.error} for p in pts])
    common.download_csv("⬇ CSV", df, f"sweep_{axis}_{metric}", "dl_sweep", ctx)
st.caption(f"Input: {input_note}. Exact attention is recomputed at every N and logit scale. "
           + ("Parameter values span each parameter's range at this N. " if axis == "param" else "")
           + ("Logit scale → 0: every variant returns mean(V); large scales sharpen attention — top-k, hashing and "
              "clustering improve, random features degrade." if axis == "scale" else ""))
