"""Explorer: one variant against exact attention on the current input — the error panel, exact,
approximate and difference heatmaps on one scale, a query inspector, the variant's artifacts, and the
state of a recurrence."""
import dataclasses
import math

import pandas as pd
import streamlit as st
import torch

import xviz
from pages.ui import compute, display, linked_view, widgets
from pages.ui.sidebar import context
from xviz import figures
from xviz.app import settings as appstate
from xviz.figures import state as state_figures
from xviz.figures import linked
from xviz.analysis import state
from xviz.analysis.metrics import METRIC_LABELS, METRIC_NAMES
from xviz.core.errors import BudgetError
from xviz.core.registry import FAMILIES

COLOUR_CAPS = {"full": None, "q99": 0.99, "q999": 0.999}
INTRO = ("Efficient attention replaces softmax(QKᵀ/√d)V with something cheaper: a sparse pattern, a low-rank "
         "product, random features, a recurrence. Pick a variant below and see, on this input, where its "
         "effective attention differs from exact attention — the error panel, the two maps and their difference, "
         "one query's weights, and what the variant builds (masks, buckets, landmarks, states). The sidebar "
         "chooses the input: a sentence through a real model, synthetic Q/K/V, a sample file or your upload. "
         "Every setting is in the address bar.")
KL_HELP = ("KL(exact ‖ approx) per query, averaged; the approximation's weights are floored at 1e-12, so a "
           "sparse pattern that drops a key exact attention uses gets a large value (KL is unbounded there). "
           "Total variation is the bounded measure of the same thing. Both are defined between distributions "
           "only: for signed or unnormalised weights (RetNet, Mamba-2, Nyström) they show —; the output error "
           "after the best scale per head and the correlation of the weights compare those.")


def pick_variant(ctx, specs):
    """The variant, picked within a family (the catalog's grouping); its display name, family, cost and
    paper beside it. Options are the catalog names, the values the URL carries."""
    raw = st.query_params.to_dict()
    top = st.columns([1, 2, 1, 3])
    families = ["all"] + [f for f in FAMILIES if any(s.family == f for s in specs)]
    family = widgets.choice("Family", families, "family", "all", container=top[0],
                            help="the survey's families: fixed and combined patterns, learnable patterns, low "
                                 "rank, kernels, memory, recurrence, prior")
    names = [s.name for s in specs if family == "all" or s.family == family]
    default = "sliding_window" if "sliding_window" in names else next((x for x in names if x != "exact"), names[0])
    _, messages = appstate.check_variant(raw.get("variant"), names, default)
    display.link_messages(messages)
    name = top[1].selectbox("Variant", names, index=names.index(default), key="variant", bind=widgets.BIND,
                            help="the variants of this family (xviz.list_variants()); the display name is beside")
    spec = xviz.get_variant(name)
    n = ctx.inp.k.shape[-2]
    budget = widgets.number("budget: keys per query", "budget", 1, n, compute.default_budget(n), container=top[2],
                            help="parameters default to the values at which the variant's own cost model matches "
                                 "sparse attention with this many keys per query")
    top[3].markdown(f"**{display.escape(spec.display_name)}** · {display.escape(spec.family)} · "
                    f"{display.escape(spec.complexity)}  \n{display.escape(spec.paper)}")
    return spec, budget, raw


def pick_params(ctx, spec, budget: int, raw) -> dict:
    """The variant's parameters; a new budget (or shape) moves them to the values matched to it, a
    link's own values win on the first run."""
    b, h, n, d = ctx.shape
    match = compute.budget_match(ctx, spec, budget)
    defaults = compute.budget_defaults(ctx, spec, budget)
    if match is not None and match.knob is not None and not match.matched:
        st.caption(f"{spec.display_name} cannot be made as cheap as {budget} keys per query at this N: its "
                   f"parameters are set to the nearest it can do ({appstate.format_flops(match.flops)}FLOPs).")
    sig = (spec.name, budget, n, d, h, ctx.causal)
    prev = st.session_state.get("_explorer_budget_sig")
    if prev is not None and prev[0] == spec.name and prev != sig:
        for p in spec.params:
            if p.name in defaults:
                st.session_state[appstate.param_key(spec.name, p.name)] = defaults[p.name]
    st.session_state["_explorer_budget_sig"] = sig
    display.link_messages(appstate.check_params(raw, spec.name, spec.params, ctx.inp.k.shape[-2], d)[1])
    return widgets.param_widgets(spec, ctx.inp.k.shape[-2], d, defaults)


def pick_view(ctx) -> dict:
    b, h, n, _ = ctx.shape
    nk = ctx.inp.k.shape[-2]
    c = st.columns(6)
    view = dict(head=widgets.number("head", "head", 0, h - 1, 0, container=c[0]),
                query=widgets.number("query (inspector)", "query", 0, n - 1, n // 2, container=c[1]),
                key=widgets.number("key (marked)", "qkey", 0, nk - 1, 0, container=c[5],
                                   help="the cell (query, key) boxed in the three maps; a click on a map sets both"),
                topk=widgets.number("k for top-k recall", "topk", 1, nk, 8, container=c[2]),
                zoom=widgets.number("zoom: window size", "zs", 1, max(n, nk), max(n, nk), container=c[3],
                                    help=f"a window of this many queries and keys; ≤ {figures.SIDE_BY_SIDE_CELLS} is "
                                         "drawn at full resolution, a larger one is mean-pooled"),
                colour=widgets.choice("colour scale", list(COLOUR_CAPS), "colour", "q99" if n > 64 else "full",
                                      container=c[4], help="full: up to the largest value; q99 / q999: saturate "
                                                           "at the 99th / 99.9th percentile"))
    view["window"] = None
    if view["zoom"] < max(n, nk):
        zc = st.columns(2)
        r0 = widgets.number("zoom: first query", "zr", 0, n - 1, 0, container=zc[0])
        c0 = widgets.number("zoom: first key", "zc", 0, nk - 1, 0, container=zc[1])
        view["window"] = (r0, r0 + view["zoom"], c0, c0 + view["zoom"])
    return view


@display.section("Second variant")
def second_variant(ctx, specs, exact, budget: int, view: dict, tokens, measured: int | None) -> None:
    """A second variant beside the first, at its own budget-matched parameters: its error panel and maps."""
    names = ["none"] + [s.name for s in specs if s.name != "exact"]
    other = widgets.choice("Side by side with", names, "variant2", "none",
                           help="a second variant at the same budget (its parameters matched to it)")
    if other == "none" or exact is None:
        return
    spec2 = xviz.get_variant(other)
    if ctx.causal and not spec2.causal:
        display.say("info", f"{spec2.display_name} has no causal form: untick causal to see it.")
        return
    params2 = compute.budget_defaults(ctx, spec2, budget)
    if not compute.allowed(spec2.display_name, compute.cost(ctx, spec2, params2), "force_approx2"):
        return
    r2, _ = compute.run(ctx, other, params2)
    st.subheader(f"{spec2.display_name}({appstate.describe_params(r2.params)}), at the same budget")
    key2 = ctx.key(other, tuple(sorted(params2.items())), "second")
    mats2 = None
    if ctx.n <= compute.MATRIX_MAX_N and r2.has_matrix:
        try:
            mats2 = compute.matrices(ctx, {"exact": (ctx.key("exact"), exact), "approx": (key2, r2)})
        except BudgetError as exc:
            display.say("info", f"Matrix metrics skipped: {exc}")
    error_panel(compute.metrics(ctx, key2, exact, r2, mats2, view["topk"], measured), spec2, other, ctx, suffix="2")
    if mats2 is not None:
        head = min(view["head"], mats2["approx"].shape[1] - 1)
        fig = compute.derived(key2 + ("heat", head, view["window"], view["colour"]), lambda: figures.compare_heatmaps(
            mats2["exact"][0, head], mats2["approx"][0, head], tokens, names=("exact", spec2.display_name),
            window=view["window"], font_size=ctx.font_size, cap=COLOUR_CAPS[view["colour"]]))
        display.show_figure(fig, f"attention_{other}_head{head}", ctx, key="fig_heat2")


def error_panel(m, spec, name: str, ctx, suffix: str = "") -> None:
    """The measures of ``m``: of one head when it holds one (``m.per_head`` of length 1), else of every
    head, listed per head in an expander."""
    per_row = (len(METRIC_NAMES) + 1) // 2  # two rows: six in one cut the longer labels ("mean row KL(exac…")
    cols = [c for _ in range(2) for c in st.columns(per_row)]
    fmt = {"topk_recall": "{:.1%}", "kl": "{:.3g}", "max_abs": "{:.3g}"}
    for col, key in zip(cols, METRIC_NAMES):
        val = getattr(m, key)
        label = METRIC_LABELS[key] + (f" (k={m.k})" if key == "topk_recall" else "")
        col.metric(label, "—" if math.isnan(val) else fmt.get(key, "{:.3g}").format(val),
                   help=KL_HELP if key in ("kl", "tv") else None)
    if not spec.has_matrix:
        st.caption(f"{spec.display_name} has no effective attention matrix: only the output error applies.")
    elif compute.sampled_rows(ctx.n) is not None:
        st.caption(f"The matrix measures are taken on {compute.METRIC_ROWS:,} evenly spaced of the {ctx.n:,} queries "
                   "(the output error on all of them).")
    if len(m.per_head["rel_out"]) == 1 and ctx.shape[1] > 1:
        return
    per_head = pd.DataFrame({"head": list(range(len(m.per_head["rel_out"])))}
                            | {METRIC_LABELS[k]: v for k, v in m.per_head.items()})
    with st.expander("Per head", expanded=False):
        st.dataframe(per_head, hide_index=True, width="stretch")
        display.download_csv("⬇ CSV", per_head, f"metrics_{name}", "dl_metrics" + suffix, ctx)


def heatmaps(ctx, key, mats, spec, name: str, view: dict) -> None:
    """The linked view: exact, approximate and difference maps of every head, the query inspector and the
    text, linked in the browser (hover, head switch); a click pins the query and key into the URL."""
    head = min(view["head"], mats["approx"].shape[1] - 1)
    cross = ctx.inp.cross
    data = compute.derived(key + ("linked", view["window"], view["colour"]), lambda: linked.linked_view_data(
        mats["exact"][0], mats["approx"][0], ctx.tokens, key_tokens=ctx.inp.key_labels if cross else None,
        names=("exact", spec.display_name), window=view["window"], cap=COLOUR_CAPS[view["colour"]]))
    linked_view.linked_view({**data, **linked.clamp_view(data, view["query"], view["key"], head),
                             "font_size": ctx.font_size + 1})
    display.download_npz("⬇ NPZ (matrices)", lambda: {"exact": mats["exact"][0, head], "approx": mats["approx"][0, head]},
                         f"attention_{name}_head{head}", "dl_npz", ctx)


def artifacts(ctx, key, spec, approx, name: str, head: int) -> None:
    st.subheader(f"What {spec.display_name} builds")
    tabs = widgets.tabs(list(approx.artifacts), "artifact")
    for tab, art in zip(tabs, approx.artifacts):
        if not tab.open:
            continue
        with tab, display.guard(f"Artifact {art}"):
            value = approx.artifacts[art]
            figs = compute.derived(key + ("artifact", art, head, ctx.font_size), lambda: figures.artifact_figures(
                spec.artifact(art), value, ctx.tokens, head=head, font_size=ctx.font_size))
            if not figs:
                st.code(repr(value)[:500], language=None)
            for i, f in enumerate(figs):
                display.show_figure(f, f"{name}_{art}_{i}", ctx, key=f"fig_art_{art}_{i}")
            arrays = {label: v for label, v in figures.attention.flatten_artifact(art, value) if hasattr(v, "shape")}
            if arrays:
                display.download_npz(f"⬇ NPZ ({art})", lambda arrays=arrays: arrays, f"{name}_{art}", f"dl_art_{art}",
                                     ctx)


@display.section("State")
def state_section(ctx, key, spec, exact, approx, with_matrices: bool, head: int) -> None:
    """A causal run's state and reach: for a recurrence its fast-weight state at a step, its norm over t
    and its decays; for every causal variant how far back each query still reads. The matrices come
    from the session's store (``with_matrices``: the error panel built them), not as arguments: a
    fragment keeps its arguments, and N×N ones would outlive the store's budget."""
    mats = None
    if with_matrices:
        mats = compute.matrices(ctx, {"exact": (ctx.key("exact"), exact), "approx": (key, approx)})
    st.subheader("State and reach" if state.is_recurrent(spec) else "How far back each query reads")
    n = ctx.n
    step = n - 1
    if state.is_recurrent(spec):
        step = widgets.number("state after token", "state_step", 0, n - 1, n - 1,
                              help="the fast-weight matrix S_t written by the keys and values up to this token")
    matrix = mats["approx"] if mats is not None else None
    s = compute.derived(key + ("state", step), lambda: state.summary(approx, ctx.inp.q, ctx.inp.k, ctx.inp.v, step=step,
                                                                      matrix=matrix))
    for i, fig in enumerate(state_figures.summary_figures(s, ctx.tokens, head=head, font_size=ctx.font_size)):
        display.show_figure(fig, f"state_{spec.name}_{i}", ctx, key=f"fig_state_{i}")
    if s.note:
        display.say("caption", s.note)
    if s.read_back is not None and mats is not None:
        exact_back = state.read_back(mats["exact"])[0].double().median().item()
        st.caption(f"Exact softmax on the same Q, K reads back a median of {exact_back:.0f} tokens (weights ≥ "
                   f"{s.threshold:.0%} of the row's largest); {spec.display_name}: "
                   f"{float(torch.as_tensor(s.read_back).double().median()):.0f}.")


def run_pair(ctx, spec, params):
    """(exact, approx) results; work over the guard waits for a click, a library error becomes a message."""
    exact = approx = None
    run_exact = compute.allowed("the exact reference", compute.exact_cost(ctx), "force_exact")
    run_approx = compute.allowed(spec.display_name, compute.cost(ctx, spec, params), "force_approx")
    with st.spinner(f"Running exact attention and {spec.display_name}…"):
        if run_exact:
            with display.guard("Exact attention"):
                exact, _ = compute.run_exact(ctx)
        if run_approx:
            with display.guard(spec.display_name):
                approx, _ = compute.run(ctx, spec.name, params)
            # one first run's time is not a measurement (it swung 1.8-211 ms): the Cost page times repeats
            if approx is not None and not ctx.present:
                st.caption(f"{spec.display_name}({appstate.describe_params(approx.params)}): "
                           f"{appstate.format_flops(approx.cost.flops)}FLOPs by its cost model · exact: "
                           f"{appstate.format_flops(compute.exact_cost(ctx))}FLOPs (the Cost page measures times).")
    return exact, approx


def measured_head(ctx, head: int) -> int | None:
    """The "measured on" control: the head the error panels measure (the head box's), or None for every head."""
    h = ctx.shape[1]
    if h == 1:
        return None
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    measure = widgets.choice("measured on", ["shown head", "every head"], "measure", "shown head", container=left,
                             help=f"the shown head (the head box) is measured first; every head takes {h}× the "
                                  "work and lists them per head")
    if measure == "every head":
        return None
    right.caption(f"Head {min(head, h - 1)} of {h} (the head box); “every head” measures them all.")
    return min(head, h - 1)


def error_section(ctx, key, spec, exact, approx, view, measured: int | None):
    """The error panel; returns the matrices (kept for this session) when they were built."""
    if exact is None:
        st.info("No exact reference at this size: the error panel needs it.")
        return None
    mats = None
    with display.guard("Metrics"), st.spinner("Building the matrices and measuring the error…"):
        if ctx.n <= compute.MATRIX_MAX_N and approx.has_matrix:
            try:
                mats = compute.matrices(ctx, {"exact": (ctx.key("exact"), exact), "approx": (key, approx)})
            except BudgetError as exc:
                display.say("info", f"Matrix metrics and heatmaps skipped: {exc}")
        error_panel(compute.metrics(ctx, key, exact, approx, mats, view["topk"], measured), spec, spec.name, ctx)
    return mats


def weights_section(ctx, key, spec, approx, mats, view) -> None:
    if mats is not None:
        with display.guard("Attention matrices"):
            heatmaps(ctx, key, mats, spec, spec.name, view)
    elif approx is not None and not approx.has_matrix:
        st.info(f"{spec.display_name} has no effective N×N matrix to draw.")
    elif approx is not None and ctx.n > compute.MATRIX_MAX_N:
        st.info(f"At N = {ctx.n} the N×N matrices are not drawn (up to N = {compute.MATRIX_MAX_N}).")


def reference_check(ctx, mats, head: int) -> None:
    """A real model's input: exact attention from its captured Q, K against its own probabilities."""
    if ctx.inp.reference_attention is None or mats is None or ctx.causal:
        return
    diff = float((ctx.inp.reference_attention[0, head].float() - mats["exact"][0, head].float()).abs().max())
    st.caption(f"Check: exact attention from the captured Q, K matches the model's own probabilities "
               f"(head {head}: max |difference| = {diff:.2e}).")


ctx = context()
display.page_header("Explorer", ctx)
if not display.require_input(ctx):
    st.stop()
specs = xviz.list_variants()
if not ctx.present:
    st.markdown(display.escape(INTRO, limit=2000))
with display.controls("Variant and parameters", ctx):
    spec, budget, raw = pick_variant(ctx, specs)
    params = pick_params(ctx, spec, budget, raw)
    view = pick_view(ctx)
name = spec.name
if spec.causal_only and not ctx.causal:
    st.info(f"{spec.display_name} is a recurrence: it reads only the past, so it and the exact reference are "
            "computed causally here.")
    ctx = dataclasses.replace(ctx, causal=True)

view_key = ctx.key(name, tuple(sorted(params.items())))
tokens = (ctx.tokens, ctx.inp.key_labels) if ctx.inp.cross else ctx.tokens
exact, approx = run_pair(ctx, spec, params)
# presentation: the maps first (the first screen at 1280 × 720 shows them), the error panel under them
boxes = [st.container(), st.container()]
error_box, weights_box = boxes[::-1] if ctx.present else boxes
with error_box:
    st.subheader("Error against exact attention")
    measured = measured_head(ctx, view["head"]) if exact is not None and approx is not None else None
    mats = error_section(ctx, view_key, spec, exact, approx, view, measured) if approx is not None else None
with weights_box:
    st.subheader("Attention weights")
    weights_section(ctx, view_key, spec, approx, mats, view)
second_variant(ctx, specs, exact, budget, view, tokens, measured)
if approx is not None and approx.causal:
    state_section(ctx, view_key, spec, exact, approx, mats is not None, view["head"])
if approx is not None and len(approx.artifacts):
    artifacts(ctx, view_key, spec, approx, name, view["head"])
reference_check(ctx, mats, view["head"])
