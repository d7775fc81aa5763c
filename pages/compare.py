"""Compare: every variant on the current input at a comparable budget, as a sortable table and an
error-versus-cost scatter; a row or a point opens the Explorer with that variant selected."""
import math

import pandas as pd
import streamlit as st

import xviz
from pages import common
from xviz import appstate, figures
from xviz.analysis import metrics
from xviz.analysis.budget import budget_params, target_flops
from xviz.analysis.metrics import METRIC_LABELS, METRIC_NAMES

ctx = common.context()
common.page_header("Compare", ctx)
if not common.require_input(ctx):
    st.stop()
b, h, n, d = ctx.shape
dv = ctx.inp.v.shape[-1]
specs = xviz.list_variants()
COMPARE_MATRIX_MAX_N = 2048  # matrix metrics for every variant up to this N; beyond, the output error only


def open_in_explorer(name: str) -> None:
    # Every setting is bound to the URL through its widget: the sidebar's carry over by themselves,
    # the Explorer's variant is set through session state (bound parameters cannot be set in the URL).
    st.session_state["variant"] = name
    st.switch_page("pages/explorer.py", query_params={})  # {}: clear without touching bound keys


raw = st.query_params.to_dict()
common.link_messages(appstate.check_choice(raw, "metric", METRIC_NAMES)
                     + appstate.check_choice(raw, "xaxis", ("flops", "seconds")))

with common.controls("Budget and axes", ctx):
    c = st.columns(3)
    budget = int(c[0].number_input("budget: keys per query", min_value=1, max_value=max(1, n),
                                   value=min(n, common.default_budget(n)), step=1, key="budget", bind=common.BIND,
                                   help="every variant gets the parameter value at which its own cost model matches "
                                        "sparse attention with this many keys per query (same nonzeros per row; "
                                        "about the same rank or number of features)"))
    # Options are the short names (they are what the URL carries); the help spells them out.
    metric = c[1].selectbox("error", list(METRIC_NAMES), index=1, key="metric", bind=common.BIND,
                            help="; ".join(f"{k}: {v}" for k, v in METRIC_LABELS.items()))
    xaxis = c[2].selectbox("cost", ["flops", "seconds"], index=0, key="xaxis", bind=common.BIND,
                           help="flops: the variant's theoretical cost; seconds: measured time of its first run")

exact = None
with common.guard("Exact attention"), st.spinner("Exact attention…"):
    if common.exact_cost(ctx) > common.EXACT_GUARD_FLOPS:
        st.warning(f"The exact reference at N = {n} costs {appstate.format_flops(common.exact_cost(ctx))}FLOPs: "
                   "errors are not measured at this size. Use a shorter input to compare.")
    else:
        exact, t_exact = common.run_variant(ctx, "exact", {})
with_matrix = n <= COMPARE_MATRIX_MAX_N

rows = []
progress = st.progress(0.0, text="Running the catalog…")
for i, spec in enumerate(specs):
    progress.progress(i / len(specs), text=f"{spec.display_name} ({i + 1}/{len(specs)})…")
    row = {"variant": spec.display_name, "name": spec.name, "family": spec.family,
           "class": spec.complexity_class}
    try:
        if ctx.causal and not spec.causal:
            raise xviz.ParameterError(f"{spec.display_name} has no causal form.")
        bud = budget_params(spec, n, d, h, keys_per_row=budget, causal=ctx.causal, dv=dv)
        cost = common.variant_cost(ctx, spec, bud.params)
        if cost > common.EXACT_GUARD_FLOPS:
            raise xviz.BudgetError(f"skipped: {appstate.format_flops(cost)}FLOPs at this size "
                                   "(run it from the Explorer).")
        r, secs = common.run_variant(ctx, spec.name, bud.params)
        row.update({"parameters": appstate.describe_params(bud.params),
                    "tuned": bud.knob or "—", "at budget": bud.matched,
                    "keys per row": float(r.artifacts["keys_per_row"].double().mean())
                    if "keys_per_row" in r.artifacts else float("nan"),
                    "flops": r.cost.flops, "bytes": r.cost.bytes, "seconds": secs})
        if exact is not None:
            wm = with_matrix and spec.has_matrix
            try:
                m = common.compare_metrics(ctx, exact, r, spec.name, {**bud.params, "_wm": wm}, 8) if wm \
                    else metrics.compare(exact, r, with_matrix=False)
            except xviz.BudgetError:
                m = metrics.compare(exact, r, with_matrix=False)
            row.update(m.as_dict())
    except Exception as exc:  # noqa: BLE001  one failing variant (a plugin, say) must not take the page down
        row["error"] = common.error_text(exc)
    rows.append(row)
progress.empty()

df = pd.DataFrame(rows)
for col in ("flops", "seconds", *METRIC_NAMES):
    if col not in df:
        df[col] = float("nan")
st.caption(f"N = {n}, d = {d}, {h} heads. Budget: {budget} keys per query = "
           f"{appstate.format_flops(target_flops(b, h, n, d, dv, budget))}FLOPs; exact attention: "
           f"{appstate.format_flops(common.exact_cost(ctx))}FLOPs. 'tuned' is the parameter set to meet it "
           "(— : the cost depends on none, defaults kept). Click a row or a point to open it in the Explorer.")

show = df.drop(columns=["name"])
event = st.dataframe(
    show, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row", key="cmp_table",
    column_config={
        "flops": st.column_config.NumberColumn("FLOPs", format="%.3e"),
        "bytes": st.column_config.NumberColumn("bytes", format="%.3e"),
        "seconds": st.column_config.NumberColumn("time (s, first run)", format="%.4f"),
        "keys per row": st.column_config.NumberColumn(format="%.1f"),
        "topk_recall": st.column_config.NumberColumn(METRIC_LABELS["topk_recall"] + " (k=8)", format="percent"),
        **{k: st.column_config.NumberColumn(METRIC_LABELS[k], format="%.3g")
           for k in METRIC_NAMES if k != "topk_recall"},
    })
common.download_csv("⬇ CSV", df, f"compare_N{n}_budget{budget}", "dl_compare", ctx)
selected = getattr(getattr(event, "selection", None), "rows", None) if event is not None else None
if selected:
    open_in_explorer(df.iloc[selected[0]]["name"])

with common.guard("Scatter"):
    recs = df.to_dict("records")
    for r in recs:
        r["display_name"] = r["variant"]
    fig = figures.error_cost_scatter(recs, x=xaxis, y=metric,
                                     x_label="theoretical FLOPs" if xaxis == "flops" else "measured seconds",
                                     y_label=METRIC_LABELS[metric], font_size=ctx.font_size,
                                     title=f"{METRIC_LABELS[metric]} against cost, budget {budget} keys per query",
                                     reference=common.exact_cost(ctx) if xaxis == "flops" else
                                     (t_exact if exact is not None else None))
    ev = common.show_figure(fig, f"compare_{metric}_{xaxis}", ctx, key="fig_scatter", on_select="rerun",
                            selection_mode=("points",))
    pts = getattr(getattr(ev, "selection", None), "points", None) if ev is not None else None
    if pts:
        name = pts[0].get("customdata")
        if isinstance(name, list):
            name = name[0]
        if name in set(df["name"]):
            open_in_explorer(name)
    missing = [r["variant"] for r in recs if r["name"] != "exact"
               and not (isinstance(r.get(metric), float) and math.isfinite(r[metric]) and r[metric] > 0)]
    if missing:
        st.caption("Not on the chart (no value, or zero error, on a log scale): " + ", ".join(missing))

c = st.columns([3, 1])
target = c[0].selectbox("Open in the Explorer", list(df["name"]), key="open_variant",
                        format_func=lambda x: dict(zip(df["name"], df["variant"])).get(x, x))
if c[1].button("Open", key="open_button"):
    open_in_explorer(target)
