"""Explorer: one variant against exact attention on the current input."""
import math

import pandas as pd
import streamlit as st

import xviz
from pages import common
from xviz import appstate, figures
from xviz.analysis.metrics import METRIC_LABELS, METRIC_NAMES

ctx = common.context()
common.page_header("Explorer", ctx)
if not common.require_input(ctx):
    st.stop()

b, h, n, d = ctx.shape
specs = xviz.list_variants()
names = [s.name for s in specs]
display = {s.name: s.display_name for s in specs}
default_variant = "bigbird" if "bigbird" in names else next((x for x in names if x != "exact"), names[0])
raw = st.query_params.to_dict()
_, messages = appstate.check_variant(raw.get("variant"), names, default_variant)

with common.controls("Variant and parameters", ctx):
    top = st.columns([2, 1, 3])
    name = top[0].selectbox("Variant", names, index=names.index(default_variant), key="variant", bind=common.BIND,
                            help="every variant in the catalog (xviz.list_variants())")
    spec = xviz.get_variant(name)
    budget = top[1].number_input("budget: keys per query", min_value=1, max_value=max(1, n),
                                 value=min(n, common.default_budget(n)), step=1, key="budget", bind=common.BIND,
                                 help="parameters default to the values at which the variant's own cost model "
                                      "matches sparse attention with this many keys per query")
    top[2].markdown(f"**{spec.display_name}** · {spec.family} · {spec.complexity}  \n"
                    f"<small>{spec.paper}</small>", unsafe_allow_html=True)
    defaults = common.budget_defaults(spec, ctx, int(budget))
    # A new budget (or shape) moves the parameters to the values matched to it; a link's own
    # parameter values win on the first run (nothing recorded yet).
    sig = (name, int(budget), n, d, h, ctx.causal)
    prev = st.session_state.get("_explorer_budget_sig")
    if prev is not None and prev[0] == name and prev != sig:
        for p in spec.params:
            if p.name in defaults:
                st.session_state[appstate.param_key(name, p.name)] = defaults[p.name]
    st.session_state["_explorer_budget_sig"] = sig
    _, pmsgs = appstate.check_params(raw, name, spec.params, n, d)
    messages += pmsgs
    params = common.param_widgets(spec, n, d, defaults)
    view = st.columns(5)
    head = view[0].number_input("head", min_value=0, max_value=h - 1, value=0, step=1, key="head", bind=common.BIND)
    query = view[1].number_input("query (inspector)", min_value=0, max_value=n - 1, value=min(n - 1, n // 2), step=1,
                                 key="query", bind=common.BIND)
    topk = view[2].number_input("k for top-k recall", min_value=1, max_value=n, value=min(n, 8), step=1, key="topk",
                                bind=common.BIND)
    zoom = view[3].number_input("zoom: window size", min_value=1, max_value=n, value=n, step=1, key="zs",
                                bind=common.BIND, help="a window of this many queries and keys; ≤ 512 is drawn at "
                                                       "full resolution, the whole matrix is pooled")
    colour = view[4].selectbox("colour scale", ["full", "q99", "q999"], index=1 if n > 64 else 0, key="colour",
                               bind=common.BIND, help="full: up to the largest value; q99 / q999: saturate at the "
                                                      "99th / 99.9th percentile (long inputs spread attention thin)")
    if zoom < n:
        zc = st.columns(2)
        zr0 = zc[0].number_input("zoom: first query", min_value=0, max_value=n - 1, value=0, step=1, key="zr",
                                 bind=common.BIND)
        zc0 = zc[1].number_input("zoom: first key", min_value=0, max_value=n - 1, value=0, step=1, key="zc",
                                 bind=common.BIND)
        window = (int(zr0), int(zr0) + int(zoom), int(zc0), int(zc0) + int(zoom))
    else:
        window = None

common.link_messages(messages)
head, query, topk = int(head), int(query), int(topk)

# ---------------------------------------------------------------------------------------------- compute
exact = approx = None


def allowed(label: str, flops: float, key: str) -> bool:
    """Work over the guard (tens of seconds on a CPU) waits for a click."""
    if flops <= common.EXACT_GUARD_FLOPS:
        return True
    return st.checkbox(f"Run {label} ({appstate.format_flops(flops)}FLOPs, about "
                       f"{appstate.seconds_estimate(flops):.0f} s here)", value=False, key=key)


run_exact = allowed("the exact reference", common.exact_cost(ctx), "force_exact")
run_approx = allowed(spec.display_name, common.variant_cost(ctx, spec, params), "force_approx")
with st.spinner(f"Running exact attention and {spec.display_name}…"):
    if run_exact:
        with common.guard("Exact attention"):
            exact, t_exact = common.run_variant(ctx, "exact", {})
    if run_approx:
        with common.guard(spec.display_name):
            approx, t_approx = common.run_variant(ctx, name, params)

if approx is not None:
    st.caption(f"{spec.display_name}({appstate.describe_params(approx.params)}): "
               f"{appstate.format_flops(approx.cost.flops)}FLOPs in theory, {t_approx * 1e3:.1f} ms measured "
               f"(first run) · exact: {appstate.format_flops(common.exact_cost(ctx))}FLOPs")

# ---------------------------------------------------------------------------------------------- errors
st.subheader("Error against exact attention")
matrices_ok = n <= common.MATRIX_METRICS_MAX_N
m = None
if exact is not None and approx is not None:
    with common.guard("Metrics"):
        with st.spinner("Measuring the error…"):
            try:
                m = common.compare_metrics(ctx, exact, approx, name, {**params, "_m": matrices_ok}, topk) \
                    if matrices_ok else None
            except xviz.BudgetError as exc:
                st.info(f"Matrix metrics skipped: {exc}")
                m = None
            if m is None:
                from xviz.analysis import metrics as _metrics

                m = _metrics.compare(exact, approx, with_matrix=False)
        cols = st.columns(6)
        fmt = {"topk_recall": "{:.1%}", "kl": "{:.3g}", "max_abs": "{:.3g}"}
        for col, key in zip(cols, METRIC_NAMES):
            val = getattr(m, key)
            label = METRIC_LABELS[key] + (f" (k={m.k})" if key == "topk_recall" else "")
            col.metric(label, "—" if math.isnan(val) else fmt.get(key, "{:.3g}").format(val))
        if not spec.has_matrix:
            st.caption(f"{spec.display_name} has no effective attention matrix: only the output error applies.")
        per_head = pd.DataFrame({"head": list(range(len(m.per_head["rel_out"])))}
                                | {METRIC_LABELS[k]: v for k, v in m.per_head.items()})
        with st.expander("Per head", expanded=False):
            st.dataframe(per_head, hide_index=True, width="stretch")
            common.download_csv("⬇ CSV", per_head, f"metrics_{name}", "dl_metrics", ctx)
elif exact is None and approx is not None:
    st.info("No exact reference at this size: the error panel needs it.")

# ---------------------------------------------------------------------------------------------- heatmaps
st.subheader("Attention weights")
A = Ah = None
if exact is not None and approx is not None:
    with common.guard("Attention matrices"):
        if not approx.has_matrix:
            st.info(f"{spec.display_name} has no effective N×N matrix to draw.")
        elif not matrices_ok:
            st.info(f"At N = {n} the N×N matrices are not drawn (up to N = {common.MATRIX_METRICS_MAX_N}).")
        else:
            with st.spinner("Building and pooling the matrices…"):
                A = exact.matrix()[0, min(head, exact.matrix().shape[1] - 1)]
                Am = approx.matrix()
                Ah = Am[0, min(head, Am.shape[1] - 1)]
                fig = figures.compare_heatmaps(A, Ah, ctx.tokens, names=("exact", spec.display_name), window=window,
                                               font_size=ctx.font_size,
                                               cap={"q99": 0.99, "q999": 0.999}.get(colour))
            fig.update_layout(title_text=f"{fig.layout.title.text} — head {head}")
            common.show_figure(fig, f"attention_{name}_head{head}", ctx, key="fig_heat")
            common.download_npz("⬇ NPZ (matrices, outputs)", lambda: {
                "exact": A, "approx": Ah, "exact_out": exact.out[0, head], "approx_out": approx.out[0, head]},
                f"attention_{name}_head{head}", "dl_npz", ctx)

# ---------------------------------------------------------------------------------------------- inspector
if A is not None and Ah is not None:
    st.subheader("Query inspector")
    with common.guard("Query inspector"):
        fig = figures.query_lines(A[query], Ah[query], ctx.tokens, query=query, names=("exact", spec.display_name),
                                  font_size=ctx.font_size)
        common.show_figure(fig, f"query{query}_{name}", ctx, key="fig_query")

# ---------------------------------------------------------------------------------------------- artifacts
if approx is not None and len(approx.artifacts):
    st.subheader(f"What {spec.display_name} builds")
    tabs = st.tabs(list(approx.artifacts))
    for tab, art in zip(tabs, approx.artifacts):
        with tab, common.guard(f"Artifact {art}"):
            figs = figures.artifact_figures(spec.artifact(art), approx.artifacts[art], ctx.tokens, head=head,
                                            font_size=ctx.font_size)
            if not figs:
                st.write(repr(approx.artifacts[art])[:500])
            for i, f in enumerate(figs):
                common.show_figure(f, f"{name}_{art}_{i}", ctx, key=f"fig_art_{art}_{i}")
            value = approx.artifacts[art]
            arrays = {}
            if hasattr(value, "shape"):
                arrays = {art: value}
            elif isinstance(value, dict):
                arrays = {str(k): v for k, v in value.items() if hasattr(v, "shape")}
            elif isinstance(value, (list, tuple)):
                arrays = {f"{art}_{i}": v for i, v in enumerate(value) if hasattr(v, "shape")}
            if arrays:
                common.download_npz(f"⬇ NPZ ({art})", lambda arrays=arrays: arrays, f"{name}_{art}", f"dl_art_{art}",
                                    ctx)

if ctx.inp.reference_attention is not None and A is not None and not ctx.causal:
    ref = ctx.inp.reference_attention[0, head].float()
    diff = float((ref - A.float()).abs().max())
    st.caption(f"Check: exact attention from the captured Q, K matches the model's own probabilities "
               f"(head {head}: max |difference| = {diff:.2e}).")
