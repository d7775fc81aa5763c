"""Real model: a text through the model, every layer's and head's attention as thumbnails (a click picks
one), the picked layer in the linked view against a variant, a cell opened in the Explorer, and a layer ×
head map of any variant's error on the model's own heads."""
from functools import partial

import numpy as np
import pandas as pd
import streamlit as st

import xviz
from pages.ui import compute, display, linked_view, router, widgets
from pages.ui.selection import OPEN_CELL, open_cell, open_selected, select_cell
from pages.ui.plan_view import plan_section
from pages.ui.sidebar import context, model_info
from xviz import figures
from xviz.app import settings as appstate
from xviz.analysis import spectra
from xviz.analysis.keys_per_query import budget_params
from xviz.analysis.metrics import METRIC_LABELS, METRIC_NAMES
from xviz.core.registry import Shape
from xviz.figures import linked
from xviz.figures import spectra as fx

THUMB_CELLS = 32  # each thumbnail is mean-pooled to at most this many cells a side
ERROR_GUARD_FLOPS = 2e11  # a variant over every layer above this waits for a click
def controls(ctx, own: bool, names: list[str]):
    text = ctx.spec.text if own else None
    if not own:
        text = st.text_area("Text for the model", value=appstate.DEFAULT_TEXT, key="rm_text", bind=widgets.BIND,
                            height=90, help="the sidebar's input is not a text: the model reads this one")
    else:
        st.caption("The model reads the sidebar's text (change it there).")
    c = st.columns([2, 1, 1])
    default = "performer" if "performer" in names else names[0]
    name = widgets.choice("Variant (error map)", names, "rm_variant", default, container=c[0])
    metric = widgets.choice("error", list(METRIC_NAMES), "rm_metric", "rel_out", container=c[1],
                            help="; ".join(f"{k}: {v}" for k, v in METRIC_LABELS.items()))
    budget = widgets.number("budget: keys per query (0 = a quarter of N)", "rm_budget", 0, 4096, 0, container=c[2],
                            help="the variant's parameters are matched to sparse attention with this many keys per "
                                 "query, by its own cost model")
    return text, name, metric, budget


def thumbnails(ctx, layers, text: str, model: str) -> tuple[int, int]:
    st.subheader("Attention of every layer and head")
    L, H = len(layers), layers[0].q.shape[1]
    mats = [spectra.attention_of(x) for x in layers]
    sel = st.columns([1, 1, 2, 3])
    layer = widgets.number("layer", "rm_layer", 0, L - 1, 0, container=sel[0])
    head = widgets.number("head", "rm_head", 0, H - 1, 0, container=sel[1])
    sel[2].button("Open this cell in the Explorer", key="rm_open", on_click=open_cell,
                  args=(text, model, layer, head, None),
                  help="the sidebar switches to this text and layer; the Explorer shows this head")
    with display.guard("Thumbnails"):
        fig = fx.thumbnail_grid(mats, list(layers[0].tokens), max_cells=THUMB_CELLS, font_size=ctx.font_size,
                                selected=(layer, head))
        display.show_figure(fig, "layer_head_thumbnails", ctx, key="fig_rm_thumbs",
                            on_select=partial(select_cell, "fig_rm_thumbs", "rm_layer", "rm_head"))
        st.caption("Click a thumbnail (its middle) to look at that layer and head below.")
    return layer, head


def variant_params(ctx, layers, spec, budget_in: int) -> tuple[int, dict]:
    """The budget (0: a quarter of N) and the variant's parameters matched to it on this model's shape."""
    nt, dt, H = layers[0].n, layers[0].q.shape[-1], layers[0].q.shape[1]
    budget = budget_in or compute.default_budget(nt)
    return budget, budget_params(spec, nt, dt, H, keys_per_row=min(budget, nt), causal=bool(ctx.causal)).params


def one_layer(ctx, layers, spec, budget_in: int, text: str, model: str, cell) -> None:
    """The chosen layer in the linked view: the model's attention against the variant's, every head (the
    head switches in the browser; a click on a map pins the head into the URL)."""
    layer, head = cell
    inp = layers[layer]
    st.subheader(f"Layer {layer}: the model's attention against {spec.display_name}")
    if not spec.has_matrix:
        st.info(f"{spec.display_name} has no effective attention matrix to draw; its error is in the map below.")
        return
    _, params = variant_params(ctx, layers, spec, budget_in)
    causal = bool(ctx.causal)

    def make():
        exact = spectra.attention_of(inp, causal)
        approx = xviz.run(spec.name, inp.q, inp.k, inp.v, causal=causal, seed=ctx.seed, **params).matrix()[0]
        return linked.linked_view_data(exact, approx, list(inp.tokens), names=(f"{model_info(model)['name']}",
                                                                                spec.display_name))

    data = compute.derived(("rm_linked", text, model, layer, spec.name, tuple(sorted(params.items())), causal,
                            ctx.seed), make)
    linked_view.linked_view({**data, **linked.clamp_view(data, 0, 0, head), "font_size": ctx.font_size + 1},
                            key="rm_linked",
                            targets=(None, None, "rm_head"))


def error_map(ctx, layers, spec, metric: str, budget_in: int, text: str, model: str, cell) -> None:
    L, H = len(layers), layers[0].q.shape[1]
    nt, dt = layers[0].n, layers[0].q.shape[-1]
    causal = bool(ctx.causal)
    budget, params = variant_params(ctx, layers, spec, budget_in)
    flops = spec.cost(Shape(1, H, nt, dt, dt, causal), **params).flops * L
    if flops > ERROR_GUARD_FLOPS and not st.checkbox(
            f"Run {spec.display_name} on all {L} layers ({appstate.format_flops(flops)}FLOPs)", key="rm_force"):
        return
    key = ("rm_errors", text, model, spec.name, tuple(sorted(params.items())), metric, causal, ctx.seed)
    with st.spinner(f"{spec.display_name} on {L} layers…"):
        z, msgs = compute.derived(key, lambda: spectra.layer_head_errors(layers, spec.name, params, metric=metric,
                                                                          causal=causal, seed=ctx.seed))
    recall = metric == "topk_recall"
    fmt = ".1%" if recall else ".3g"
    fig = fx.layer_head_figure(z, title=f"{METRIC_LABELS[metric]} of {spec.display_name}"
                                        f"({appstate.describe_params(params)})", colorbar=metric,
                               zmin=0 if recall else None, zmax=1 if recall else None,
                               colorscale="Viridis" if recall else "Reds", fmt=fmt, selectable=True,
                               font_size=ctx.font_size)
    st.plotly_chart(fig, config=figures.chart_config(ctx.img, f"layer_head_{spec.name}_{metric}"),
                    key="fig_rm_errors", on_select=partial(open_selected, text, model, spec.name, "fig_rm_errors"),
                    selection_mode=("points",), width="stretch")
    if np.all(np.isnan(z)):
        st.info(f"{METRIC_LABELS[metric]} needs an effective attention matrix, which {spec.display_name} does not "
                "have: choose rel_out.")
    else:
        worst = np.unravel_index(np.nanargmax(-z if recall else z), z.shape)
        st.caption(f"Click a cell to open it in the Explorer with {spec.display_name}. "
                   f"{'Lowest' if recall else 'Largest'}: layer {worst[0]}, head {worst[1]} ({z[worst]:{fmt}}); "
                   f"mean {np.nanmean(z):{fmt}}. Budget {budget} keys per query.")
    for m in msgs[:3]:
        display.say("warning", m)
    df = pd.DataFrame([{"layer": li, "head": hh, metric: float(z[li, hh])} for li in range(L) for hh in range(H)])
    display.download_csv("⬇ CSV", df, f"layer_head_{spec.name}_{metric}", "dl_rm_errors", ctx)
    st.columns([3, 1])[1].button(f"Open layer {cell[0]}, head {cell[1]} with {spec.display_name}",
                                 key="rm_open_variant", on_click=open_cell, args=(text, model, *cell, spec.name))


ctx = context()
if OPEN_CELL in st.session_state:
    router.go("explorer", **st.session_state.pop(OPEN_CELL))
display.page_header("Real model", ctx)
own = ctx.spec is not None and ctx.spec.source == "text"
model = ctx.spec.model if own else ""
names = [s.name for s in xviz.list_variants() if s.name != "exact"]
with display.controls("Text and variant", ctx):
    text, name, metric, budget_in = controls(ctx, own, names)
spec = xviz.get_variant(name)
try:
    info = model_info(model)
except xviz.XvizError as exc:
    display.say("error", f"Model: {exc}")
    st.stop()
if not (text or "").strip():
    st.error("The text is empty; give at least one word.")
    st.stop()
layers = None
with display.guard("Model"), st.spinner(f"Running {info['name']} on the text, every layer…"):
    layers = compute.model_layers(text, model)
if not layers:
    st.stop()
for note in layers[0].notices:
    display.say("info", note)
st.caption(f"{info['name']}: {len(layers)} layers × {layers[0].q.shape[1]} heads, d = {layers[0].q.shape[-1]}; "
           f"{layers[0].n} tokens{' (causal model)' if layers[0].causal else ''}.")
cell = thumbnails(ctx, layers, text, model)
if not (ctx.causal and not spec.causal):
    with display.guard("Layer view"):
        one_layer(ctx, layers, spec, budget_in, text, model, cell)
st.subheader(f"{spec.display_name}: error on every layer and head")
if ctx.causal and not spec.causal:
    st.error(f"{spec.display_name} cannot be causal; untick 'causal' in the sidebar or pick another variant.")
else:
    with display.guard("Error map"):
        error_map(ctx, layers, spec, metric, budget_in, text, model, cell)
with display.guard("Per-head plan"):
    plan_section(ctx, layers, text, model)
