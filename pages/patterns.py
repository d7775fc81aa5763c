"""Patterns: every sparse pattern in the catalog at the current N — density, keys per row, the share
of exact attention mass it covers on this input, per-head patterns, and its reach over layers."""
import pandas as pd
import streamlit as st

import xviz
from pages.ui import compute, display, widgets
from pages.ui.sidebar import context
from xviz import figures
from xviz.app import settings as appstate
from xviz.analysis import catalog, metrics

PATTERN_MAX_N = 4096  # dense masks and the exact matrix are drawn up to this N
REACH_MAX_N = 1024  # reachability costs an N×N×N product per layer
PERCENT = ("density", "exact mass inside", "worst head", "worst query")


def build_rows(ctx, budget: int, exact_matrix) -> list:
    specs = catalog.pattern_specs()
    rows, progress = [], st.progress(0.0, text="Building the patterns…")
    walk = catalog.pattern_rows(compute.shape(ctx), lambda name, params: compute.run(ctx, name, params),
                                exact_matrix, budget=budget, specs=specs)
    for i, row in enumerate(walk):
        progress.progress((i + 1) / len(specs), text=f"Built {row.display_name}")
        rows.append(row)
    progress.empty()
    return rows


def table(rows) -> pd.DataFrame:
    recs = []
    for r in rows:
        rec = {"pattern": r.display_name, "name": r.name, "family": r.family,
               "parameters": appstate.describe_params(r.params), "keys per row": r.keys_per_row}
        rec.update({k: v for k, v in r.extra.items() if k not in ("mask", "inside")})
        if r.error:
            rec["error"] = r.error
        recs.append(rec)
    return pd.DataFrame(recs)


def one_pattern(ctx, row, rhead: int, layers: int) -> None:
    spec = xviz.get_variant(row.name)
    mask = row.extra["mask"]
    st.subheader(spec.display_name)
    with display.guard("Mask"):
        fig = figures.mask_figure(mask[0], ctx.tokens, title=f"{spec.display_name} pattern", font_size=ctx.font_size)
        display.show_figure(fig, f"pattern_{row.name}", ctx, key="fig_mask")
        display.download_npz("⬇ NPZ (mask)", lambda: {"mask": mask}, f"mask_{row.name}", "dl_mask", ctx)
    if "inside" in row.extra:
        with display.guard("Mass inside"):
            fig = figures.mass_inside_figure(row.extra["inside"][0], ctx.tokens, font_size=ctx.font_size,
                                             title=f"Share of exact attention inside {spec.display_name}, per query "
                                                   "and head")
            display.show_figure(fig, f"mass_inside_{row.name}", ctx, key="fig_inside")
    st.subheader("Reach over layers")
    if ctx.n > REACH_MAX_N:
        st.info(f"Reachability multiplies N×N matrices once per layer; drawn up to N = {REACH_MAX_N} (here N = {ctx.n}).")
        return
    with display.guard("Reachability"), st.spinner("Following the pattern through the layers…"):
        head = min(rhead, mask.shape[1] - 1)
        reach = metrics.reachability(mask[0, head], layers, causal=ctx.causal)
        maps, line = figures.reachability_figures(reach, ctx.tokens, font_size=ctx.font_size)
        st.caption(f"Head {head}. A token reaches another after L layers when a path of L steps through the pattern "
                   "joins them (each layer also keeps its own position, as residual connections do).")
        display.show_figure(maps, f"reach_{row.name}", ctx, key="fig_reach")
        display.show_figure(line, f"reach_share_{row.name}", ctx, key="fig_reach_line")


ctx = context()
display.page_header("Patterns", ctx)
if not display.require_input(ctx):
    st.stop()
b, h, n, d = ctx.shape
if n > PATTERN_MAX_N or ctx.inp.cross:
    st.error(f"The Patterns page draws dense N×N masks of self-attention, up to N = {PATTERN_MAX_N} (here N = {n}"
             f"{', cross-attention' if ctx.inp.cross else ''}). The Explorer and Compare pages go further.")
    st.stop()
names = [s.name for s in catalog.pattern_specs()]
if not names:
    st.info("No variant in the catalog returns a mask.")
    st.stop()
with display.controls("Patterns", ctx):
    c = st.columns(3)
    budget = widgets.number("budget: keys per query", "budget", 1, n, compute.default_budget(n), container=c[0],
                            help="each pattern's parameters are matched to this many keys per query (by its own "
                                 "cost model)")
    layers = widgets.number("layers (reachability)", "layers", 1, 64, 8, container=c[1])
    rhead = widgets.number("head (reachability)", "rhead", 0, h - 1, 0, container=c[2])

exact_matrix = None
with display.guard("Exact attention"), st.spinner("Exact attention…"):
    exact, _ = compute.run(ctx, "exact", {})
    exact_matrix = compute.matrix_of(ctx, ctx.key("exact"), exact)
rows = build_rows(ctx, budget, exact_matrix)
df = table(rows)
st.subheader("The catalog's patterns at this N")
st.caption(f"N = {n}; parameters matched to {budget} keys per query. Density: share of the "
           f"{'causal (j ≤ i)' if ctx.causal else 'N²'} pairs kept. Mass inside: share of each query's exact "
           "attention (this input) that falls inside the pattern — mean, worst head, worst query.")
st.dataframe(df.drop(columns=["name"]), hide_index=True, width="stretch",
             column_config={**{k: st.column_config.NumberColumn(format="percent") for k in PERCENT},
                            "keys per row": st.column_config.NumberColumn(format="%.1f")})
display.download_csv("⬇ CSV", df, "patterns", "dl_patterns", ctx)
pattern = widgets.choice("Pattern", names, "pattern", "bigbird" if "bigbird" in names else names[0])
row = next(r for r in rows if r.name == pattern)
if row.error:
    display.say("error", f"{row.display_name}: {row.error}")
    st.stop()
one_pattern(ctx, row, rhead, layers)
