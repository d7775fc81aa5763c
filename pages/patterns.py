"""Patterns: every sparse pattern in the catalog at the current N — density, keys per row, the share
of exact attention mass it covers on this input, per-head patterns, and its reach over layers."""
import pandas as pd
import streamlit as st
import torch

import xviz
from pages import common
from xviz import appstate, figures
from xviz.analysis import metrics
from xviz.analysis.budget import budget_params, target_flops

PATTERN_MAX_N = 4096  # dense masks and the exact matrix are drawn up to this N
REACH_MAX_N = 1024  # reachability costs an N×N×N product per layer

ctx = common.context()
common.page_header("Patterns", ctx)
if not common.require_input(ctx):
    st.stop()
b, h, n, d = ctx.shape
if n > PATTERN_MAX_N:
    st.error(f"N = {n}: the Patterns page draws dense N×N masks, up to N = {PATTERN_MAX_N}. "
             "Use a shorter input (sidebar) — the Explorer and Compare pages go further.")
    st.stop()

specs = [s for s in xviz.list_variants() if "mask" in s.artifact_names]
if not specs:
    st.info("No variant in the catalog returns a mask.")
    st.stop()
names = [s.name for s in specs]
default_pattern = "bigbird" if "bigbird" in names else names[0]
raw = st.query_params.to_dict()
_, messages = appstate.check_variant(raw.get("pattern"), names, default_pattern)

with common.controls("Patterns", ctx):
    c = st.columns(3)
    budget = int(c[0].number_input("budget: keys per query", min_value=1, max_value=max(1, n),
                                   value=min(n, common.default_budget(n)), step=1, key="budget", bind=common.BIND,
                                   help="each pattern's parameters are matched to this many keys per query "
                                        "(by its own cost model)"))
    layers = int(c[1].number_input("layers (reachability)", min_value=1, max_value=64, value=8, step=1,
                                   key="layers", bind=common.BIND))
    rhead = int(c[2].number_input("head (reachability)", min_value=0, max_value=h - 1, value=0, step=1, key="rhead",
                                  bind=common.BIND))
common.link_messages(messages)

exact = A = None
with common.guard("Exact attention"), st.spinner("Exact attention…"):
    exact, _ = common.run_variant(ctx, "exact", {})
    A = exact.matrix()

rows, masks, inside = [], {}, {}
progress = st.progress(0.0, text="Building the patterns…")
for i, spec in enumerate(specs):
    progress.progress(i / len(specs), text=f"Building {spec.display_name}…")
    row = {"pattern": spec.display_name, "name": spec.name, "family": spec.family}
    try:
        if ctx.causal and not spec.causal:
            raise xviz.ParameterError("no causal form")
        params = common.budget_defaults(spec, ctx, budget)
        r, _ = common.run_variant(ctx, spec.name, params)
        mask = r.artifacts["mask"].to(torch.bool)
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        nnz = mask.sum(-1).double()  # (b, h, N)
        allowed = (n * (n + 1) / 2) if ctx.causal else n * n
        differ = mask.shape[1] > 1 and any(not torch.equal(mask[:, j], mask[:, 0]) for j in range(1, mask.shape[1]))
        row.update({"parameters": appstate.describe_params(params),
                    "keys per row": float(nnz.mean()),
                    "density": float(nnz.sum(-1).mean()) / allowed,
                    "heads differ": bool(differ)})
        masks[spec.name] = mask
        if A is not None:
            mi = metrics.mass_inside(mask, A)  # (B, H, N)
            inside[spec.name] = mi
            per_head = mi.mean(-1).mean(0)
            row.update({"exact mass inside": float(mi.mean()), "worst head": float(per_head.min()),
                        "worst query": float(mi.min())})
    except Exception as exc:  # noqa: BLE001  one failing variant (a plugin, say) must not take the page down
        row["error"] = common.error_text(exc)
    rows.append(row)
progress.empty()

df = pd.DataFrame(rows)
st.subheader("The catalog's patterns at this N")
st.caption(f"N = {n}; parameters matched to {budget} keys per query. Density: share of the "
           f"{'causal (j ≤ i)' if ctx.causal else 'N²'} pairs kept. Mass inside: share of each query's exact "
           "attention (this input) that falls inside the pattern — mean, worst head, worst query.")
st.dataframe(df.drop(columns=["name"]), hide_index=True, width="stretch",
             column_config={"density": st.column_config.NumberColumn(format="percent"),
                            "exact mass inside": st.column_config.NumberColumn(format="percent"),
                            "worst head": st.column_config.NumberColumn(format="percent"),
                            "worst query": st.column_config.NumberColumn(format="percent"),
                            "keys per row": st.column_config.NumberColumn(format="%.1f")})
common.download_csv("⬇ CSV", df, "patterns", "dl_patterns", ctx)

pattern = st.selectbox("Pattern", names, index=names.index(default_pattern), key="pattern", bind=common.BIND)
spec = xviz.get_variant(pattern)
if pattern not in masks:
    st.error(f"{spec.display_name}: {df.set_index('name').loc[pattern].get('error', 'not available')}")
    st.stop()
mask = masks[pattern]
st.subheader(f"{spec.display_name}")
with common.guard("Mask"):
    fig = figures.mask_figure(mask[0], ctx.tokens, title=f"{spec.display_name} pattern", font_size=ctx.font_size)
    common.show_figure(fig, f"pattern_{pattern}", ctx, key="fig_mask")
    common.download_npz("⬇ NPZ (mask)", lambda: {"mask": mask}, f"mask_{pattern}", "dl_mask", ctx)
if pattern in inside:
    with common.guard("Mass inside"):
        fig = figures.mass_inside_figure(inside[pattern][0], ctx.tokens,
                                         title=f"Share of exact attention inside {spec.display_name}, per query and head",
                                         font_size=ctx.font_size)
        common.show_figure(fig, f"mass_inside_{pattern}", ctx, key="fig_inside")

st.subheader("Reach over layers")
if n > REACH_MAX_N:
    st.info(f"Reachability multiplies N×N matrices once per layer; drawn up to N = {REACH_MAX_N} (here N = {n}).")
else:
    with common.guard("Reachability"), st.spinner("Following the pattern through the layers…"):
        hm = mask[0, min(rhead, mask.shape[1] - 1)]
        reach = metrics.reachability(hm, layers, causal=ctx.causal)
        maps, line = figures.reachability_figures(reach, ctx.tokens, font_size=ctx.font_size)
        st.caption(f"Head {min(rhead, mask.shape[1] - 1)}. A token reaches another after L layers when a path of L "
                   "steps through the pattern joins them (each layer also keeps its own position, as residual "
                   "connections do).")
        common.show_figure(maps, f"reach_{pattern}", ctx, key="fig_reach")
        common.show_figure(line, f"reach_share_{pattern}", ctx, key="fig_reach_line")
