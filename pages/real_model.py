"""Real model: a text through the model, every layer's and head's attention as thumbnails (token labels on
hover), a cell opened in the Explorer, and a layer × head map of any variant's error on the model's own heads."""

import numpy as np
import pandas as pd
import streamlit as st

import xviz
from pages import common
from xviz import appstate, figures
from xviz.core.registry import Shape
from xviz.analysis import spectra
from xviz.analysis.budget import budget_params
from xviz.figures import explain as fx
from xviz.analysis.metrics import METRIC_LABELS, METRIC_NAMES

THUMB_CELLS = 32  # each thumbnail is mean-pooled to at most this many cells a side
ERROR_GUARD_FLOPS = 2e11  # a variant over every layer above this waits for a click


def open_cell(text: str, model: str, layer: int, head: int, variant: str | None) -> None:
    """Callback (runs before the next script run, so the sidebar's widgets can still be set): the sidebar
    switches to this text and layer, the Explorer to this head and variant."""
    st.session_state.update({"source": "text", "text": text, "model": model, "layer": int(layer),
                             "head": int(head), "_rm_open": True})
    if variant:
        st.session_state["variant"] = variant


def open_selected(text: str, model: str, variant: str | None) -> None:
    ev = st.session_state.get("fig_rm_errors")
    pts = getattr(getattr(ev, "selection", None), "points", None) or (
        ev.get("selection", {}).get("points") if isinstance(ev, dict) else None)
    if pts:
        cd = pts[0].get("customdata")
        if isinstance(cd, (list, tuple)) and len(cd) == 2:
            open_cell(text, model, int(cd[0]), int(cd[1]), variant)


ctx = common.context()
if st.session_state.pop("_rm_open", False):
    st.switch_page("pages/explorer.py", query_params={})
common.page_header("Real model", ctx)
if ctx.input_key and ctx.input_key[0] == "text":
    text, model, own = st.session_state.get("text", appstate.DEFAULT_TEXT), st.session_state.get("model", "") or "", True
else:
    text, model, own = None, "", False
raw = st.query_params.to_dict()
specs = [s for s in xviz.list_variants() if s.name != "exact"]
names = [s.name for s in specs]
default_variant = "performer" if "performer" in names else names[0]
_, messages = appstate.check_variant(raw.get("rm_variant"), names, default_variant)
messages += appstate.check_choice(raw, "rm_metric", METRIC_NAMES)

with common.controls("Text and variant", ctx):
    if not own:
        text = st.text_area("Text for the model", value=appstate.DEFAULT_TEXT, key="rm_text", bind=common.BIND,
                            height=90, help="the sidebar's input is not a text: the model reads this one")
    else:
        st.caption("The model reads the sidebar's text (change it there).")
    c = st.columns([2, 1, 1])
    name = c[0].selectbox("Variant (error map)", names, index=names.index(default_variant), key="rm_variant",
                          bind=common.BIND)
    metric = c[1].selectbox("error", list(METRIC_NAMES), index=1, key="rm_metric", bind=common.BIND,
                            help="; ".join(f"{k}: {v}" for k, v in METRIC_LABELS.items()))
    budget_in = int(c[2].number_input("budget: keys per query (0 = a quarter of N)", min_value=0, max_value=4096,
                                      value=0, step=1, key="rm_budget", bind=common.BIND,
                                      help="the variant's parameters are matched to sparse attention with this many "
                                           "keys per query, by its own cost model"))
common.link_messages(messages)
spec = xviz.get_variant(name)

try:
    info = common.model_info(model)
except xviz.XvizError as exc:
    st.error(f"Model: {exc}")
    st.stop()
if not (text or "").strip():
    st.error("The text is empty; give at least one word.")
    st.stop()
layers = None
with common.guard("Model"), st.spinner(f"Running {info['name']} on the text, every layer…"):
    layers = common.model_layers(text, model)
if not layers:
    st.stop()
L, H = len(layers), layers[0].q.shape[1]
nt, dt = layers[0].n, layers[0].q.shape[-1]
tokens = list(layers[0].tokens)
for note in layers[0].notices:
    st.info(note)
st.caption(f"{info['name']}: {L} layers × {H} heads, d = {dt}; {nt} tokens"
           f"{' (causal model)' if layers[0].causal else ''}.")

# ------------------------------------------------------------------------------------------------ thumbnails
st.subheader("Attention of every layer and head")
mats = [spectra.attention_of(x) for x in layers]
sel = st.columns([1, 1, 2, 3])
cell_layer = int(sel[0].number_input("layer", min_value=0, max_value=L - 1, value=0, step=1, key="rm_layer",
                                     bind=common.BIND))
cell_head = int(sel[1].number_input("head", min_value=0, max_value=H - 1, value=0, step=1, key="rm_head",
                                    bind=common.BIND))
sel[2].button("Open this cell in the Explorer", key="rm_open", on_click=open_cell,
              args=(text, model, cell_layer, cell_head, None),
              help="the sidebar switches to this text and layer; the Explorer shows this head")
with common.guard("Thumbnails"):
    fig = fx.thumbnail_grid(mats, tokens, max_cells=THUMB_CELLS, font_size=ctx.font_size,
                            selected=(cell_layer, cell_head))
    common.show_figure(fig, "layer_head_thumbnails", ctx, key="fig_rm_thumbs")

# ------------------------------------------------------------------------------------------------ error map
st.subheader(f"{spec.display_name}: error on every layer and head")
causal = bool(ctx.causal)
if causal and not spec.causal:
    st.error(f"{spec.display_name} cannot be causal; untick 'causal' in the sidebar or pick another variant.")
else:
    with common.guard("Error map"):
        budget = budget_in or common.default_budget(nt)
        params = budget_params(spec, nt, dt, H, keys_per_row=min(budget, nt), causal=causal).params
        flops = spec.cost(Shape(1, H, nt, dt, dt, causal), **params).flops * L
        go_on = flops <= ERROR_GUARD_FLOPS or st.checkbox(
            f"Run {spec.display_name} on all {L} layers ({appstate.format_flops(flops)}FLOPs)", key="rm_force")
        if go_on:
            key = ("rm_errors", text, model, name, tuple(sorted(params.items())), metric, causal, ctx.seed)
            with st.spinner(f"{spec.display_name} on {L} layers…"):
                z, msgs = common.cached(key, lambda: spectra.layer_head_errors(layers, name, params, metric=metric,
                                                                         causal=causal, seed=ctx.seed))
            fmt = ".1%" if metric == "topk_recall" else ".3g"
            fig = fx.layer_head_figure(z, title=f"{METRIC_LABELS[metric]} of {spec.display_name}"
                                                f"({appstate.describe_params(params)})", colorbar=metric,
                                       zmin=0 if metric == "topk_recall" else None,
                                       zmax=1 if metric == "topk_recall" else None,
                                       colorscale="Viridis" if metric == "topk_recall" else "Reds", fmt=fmt,
                                       selectable=True, font_size=ctx.font_size)
            st.plotly_chart(fig, config=figures.chart_config(ctx.img, f"layer_head_{name}_{metric}"), key="fig_rm_errors",
                            on_select=lambda: open_selected(text, model, name), selection_mode=("points",),
                            width="stretch")
            if np.all(np.isnan(z)):
                st.info(f"{METRIC_LABELS[metric]} needs an effective attention matrix, which {spec.display_name} "
                        "does not have: choose rel_out.")
            else:
                worst = np.unravel_index(np.nanargmax(z if metric != "topk_recall" else -z), z.shape)
                st.caption(f"Click a cell to open it in the Explorer with {spec.display_name}. "
                           f"{'Lowest' if metric == 'topk_recall' else 'Largest'}: layer {worst[0]}, head {worst[1]} "
                           f"({z[worst]:{fmt}}); mean {np.nanmean(z):{fmt}}. Budget {budget} keys per query.")
            for m in msgs[:3]:
                st.warning(m)
            df = pd.DataFrame([{"layer": li, "head": hh, metric: float(z[li, hh])} for li in range(L) for hh in range(H)])
            common.download_csv("⬇ CSV", df, f"layer_head_{name}_{metric}", "dl_rm_errors", ctx)
            c = st.columns([3, 1])
            c[1].button(f"Open layer {cell_layer}, head {cell_head} with {spec.display_name}", key="rm_open_variant",
                        on_click=open_cell, args=(text, model, cell_layer, cell_head, name))
