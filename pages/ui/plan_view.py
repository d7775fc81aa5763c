"""The Real model page's per-head planner: for each layer × head of a decoder on the page's text, the head's
measured pattern and the cheapest catalog variant meeting an error target (``xviz.analysis.planner``), as a
layer × head map whose cell opens the head in the Explorer. Planning waits for a click and reports progress;
the plan is kept on (text, model, target), so the page is a function of its URL once it exists."""
from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from xviz.analysis import planner
from xviz.figures.generation import plan_map

from . import compute, display, widgets
from .selection import open_selected

TARGETS = ("0.01", "0.02", "0.05", "0.1", "0.2")


def plan_section(ctx, layers, text: str, model: str) -> None:
    st.subheader("Per-head plan: each head's pattern and the cheapest variant that meets a target")
    if not layers[0].causal:
        st.caption("The planner measures a decoder's causal heads: pick SmolLM2-135M as the model in the sidebar.")
        return
    c = st.columns([1, 1, 3])
    target = float(widgets.choice("error target (relative output error)", list(TARGETS), "plan_target", "0.05",
                                  container=c[0]))
    key = ("plan", text, model, target)
    rows = compute.REPLAYS.peek(key)
    if rows is None:
        c[2].caption(f"{len(layers)} layers × {layers[0].q.shape[1]} heads, a dozen candidate variants each.")
        if not c[1].button("Plan every head", key="plan_run"):
            return
        bar = st.progress(0.0, text="planning…")
        with display.guard("Planner"):
            rows = planner.plan_layers(layers, target=target, progress=lambda done, total: bar.progress(
                done / total, text=f"layer {done} of {total}"))
            compute.REPLAYS.put(key, rows)
        bar.empty()
        if rows is None:
            return
    display.show_figure(plan_map(rows, font_size=ctx.font_size), f"plan_{target}", ctx, key="fig_plan",
                        on_select=partial(open_selected, text, model, None, "fig_plan"))
    s = planner.summary(rows)
    st.caption("Patterns: " + ", ".join(f"{k} {v}" for k, v in s["patterns"].items() if v) + ". Chosen: " +
               ", ".join(f"{k} {v}" for k, v in s["variants"].items()) +
               f". The plan's attention FLOPs are {s['flops_ratio']:.0%} of exact attention's on every head. "
               "How a pattern is measured: mass on token 0 (sink), on the latest N/8 keys (local), on the top "
               "columns and diagonals (vertical-slash), on each query's best blocks (block-sparse), 90 % coverage; "
               "else global. Click a cell to open that head in the Explorer.")
    df = pd.DataFrame(rows)
    display.download_csv("⬇ CSV", df, f"plan_{target}", "dl_plan", ctx)
