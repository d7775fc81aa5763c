"""Compare: every variant on the current input at a comparable budget, as a sortable table and an
error-versus-cost scatter; a row or a point opens the Explorer with that variant selected."""
import math

import pandas as pd
import streamlit as st

import xviz
from pages.ui import compute, display, router, widgets
from pages.ui.sidebar import context
from xviz import figures
from xviz.app import settings as appstate
from xviz.analysis import catalog
from xviz.analysis.keys_per_query import target_flops
from xviz.analysis.metrics import METRIC_LABELS, METRIC_NAMES, compare

MATRIX_MAX_N = 2048  # matrix metrics for every variant up to this N; beyond, the output error only


def open_in_explorer(name: str, budget: int) -> None:
    router.go("explorer", variant=name)  # the budget is bound on both pages: it carries over


def table(rows: list) -> pd.DataFrame:
    recs = []
    for r in rows:
        rec = {"variant": r.display_name, "name": r.name, "family": r.family, "class": r.complexity_class,
               "parameters": appstate.describe_params(r.params) if not r.error else "", "tuned": r.tuned or "—",
               "at budget": r.matched, "keys per row": r.keys_per_row, "flops": r.flops, "bytes": r.bytes,
               "seconds": r.seconds, **{k: r.metrics.get(k, math.nan) for k in METRIC_NAMES}}
        if r.error:
            rec["error"] = r.error
        recs.append(rec)
    return pd.DataFrame(recs)


def compute_rows(ctx, exact, budget: int) -> list:
    shape = compute.shape(ctx)
    with_matrix = ctx.n <= MATRIX_MAX_N

    def metrics_of(ex, r, name, params, wm):
        return compute.derived(ctx.key(name, tuple(sorted(params.items())), "cmp_metrics", wm), lambda: (
            compare(ex, r, k=8, with_matrix=wm)))

    rows, progress = [], st.progress(0.0, text="Running the catalog…")
    specs = xviz.list_variants()
    walk = catalog.compare_rows(shape, lambda name, params: compute.run(ctx, name, params), exact, budget=budget,
                                specs=specs, with_matrix=with_matrix, max_flops=compute.GUARD_FLOPS,
                                metrics_of=metrics_of)
    for i, row in enumerate(walk):
        progress.progress((i + 1) / len(specs), text=f"{row.display_name} ({i + 1}/{len(specs)})")
        rows.append(row)
    progress.empty()
    return rows


def show_table(df: pd.DataFrame, ctx, budget: int) -> None:
    # the errors and the cost first: the parameters and bookkeeping columns scroll in from the right
    first = ["variant", "family", *METRIC_NAMES, "flops", "keys per row"]
    order = first + [c for c in df.columns if c not in first and c != "name"]
    event = st.dataframe(
        df, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row", column_order=order,
        key="cmp_table", column_config={
            "variant": st.column_config.TextColumn(pinned=True),
            "parameters": st.column_config.TextColumn(width="large"),
            "flops": st.column_config.NumberColumn("FLOPs", format="%.3e"),
            "bytes": st.column_config.NumberColumn("bytes", format="%.3e"),
            "seconds": st.column_config.NumberColumn("time (s, first run)", format="%.4f"),
            "keys per row": st.column_config.NumberColumn(format="%.1f"),
            "topk_recall": st.column_config.NumberColumn(METRIC_LABELS["topk_recall"] + " (k=8)", format="percent"),
            **{k: st.column_config.NumberColumn(METRIC_LABELS[k], format="%.3g")
               for k in METRIC_NAMES if k != "topk_recall"}})
    display.download_csv("⬇ CSV", df, f"compare_N{ctx.n}_budget{budget}", "dl_compare", ctx)
    selected = getattr(getattr(event, "selection", None), "rows", None) if event is not None else None
    if selected:
        open_in_explorer(df.iloc[selected[0]]["name"], budget)


def show_scatter(df: pd.DataFrame, ctx, budget: int, metric: str, xaxis: str, t_exact) -> None:
    recs = df.to_dict("records")
    for r in recs:
        r["display_name"] = r["variant"]
    fig = figures.error_cost_scatter(recs, x=xaxis, y=metric,
                                     x_label="theoretical FLOPs" if xaxis == "flops" else "measured seconds",
                                     y_label=METRIC_LABELS[metric], font_size=ctx.font_size,
                                     title=f"{METRIC_LABELS[metric]} against cost, budget {budget} keys per query",
                                     reference=compute.exact_cost(ctx) if xaxis == "flops" else t_exact)
    ev = display.show_figure(fig, f"compare_{metric}_{xaxis}", ctx, key="fig_scatter", on_select="rerun")
    pts = getattr(getattr(ev, "selection", None), "points", None) if ev is not None else None
    if pts:
        name = pts[0].get("customdata")
        name = name[0] if isinstance(name, list) else name
        if name in set(df["name"]):
            open_in_explorer(name, budget)
    missing = [r["variant"] for r in recs if r["name"] != "exact"
               and not (isinstance(r.get(metric), float) and math.isfinite(r[metric]) and r[metric] > 0)]
    if missing:
        st.caption("Not on the chart (no value, or zero error, on a log scale): " + ", ".join(missing))


ctx = context()
display.page_header("Compare", ctx)
if not display.require_input(ctx):
    st.stop()
b, h, n, d = ctx.shape
with display.controls("Budget and axes", ctx):
    c = st.columns(3)
    budget = widgets.number("budget: keys per query", "budget", 1, ctx.inp.k.shape[-2], compute.default_budget(n),
                            container=c[0], help="every variant gets the parameter value at which its own cost model "
                                                 "matches sparse attention with this many keys per query")
    metric = widgets.choice("error", METRIC_NAMES, "metric", "rel_out", container=c[1],
                            help="; ".join(f"{k}: {v}" for k, v in METRIC_LABELS.items()))
    xaxis = widgets.choice("cost", ["flops", "seconds"], "xaxis", "flops", container=c[2],
                           help="flops: the variant's theoretical cost; seconds: measured time of its first run")

exact = t_exact = None
with display.guard("Exact attention"), st.spinner("Exact attention…"):
    if compute.exact_cost(ctx) > compute.GUARD_FLOPS:
        st.warning(f"The exact reference at N = {n} costs {appstate.format_flops(compute.exact_cost(ctx))}FLOPs: "
                   "errors are not measured at this size. Use a shorter input to compare.")
    else:
        exact, t_exact = compute.run(ctx, "exact", {})
df = table(compute_rows(ctx, exact, budget))
for col in ("flops", "seconds", *METRIC_NAMES):
    if col not in df:
        df[col] = float("nan")
st.caption(f"N = {n}, d = {d}, {h} heads. Budget: {budget} keys per query = "
           f"{appstate.format_flops(target_flops(b, h, n, d, ctx.inp.v.shape[-1], budget))}FLOPs; exact attention: "
           f"{appstate.format_flops(compute.exact_cost(ctx))}FLOPs. 'tuned' is the parameter set to meet it "
           "(— : the cost depends on none, defaults kept). Click a row or a point to open it in the Explorer.")
boxes = [st.container(), st.container()]  # presentation: the scatter first (the first screen shows it)
table_box, scatter_box = boxes[::-1] if ctx.present else boxes
with table_box:
    show_table(df, ctx, budget)
with scatter_box, display.guard("Scatter"):
    show_scatter(df, ctx, budget, metric, xaxis, t_exact)
c = st.columns([3, 1])
target = c[0].selectbox("Open in the Explorer", list(df["name"]), key="open_variant",
                        format_func=lambda x: dict(zip(df["name"], df["variant"])).get(x, x))
if c[1].button("Open", key="open_button"):
    open_in_explorer(target, budget)
