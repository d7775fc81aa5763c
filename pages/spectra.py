"""Spectra: how low-rank exact attention is on this input (singular values, cumulative energy, effective rank,
ranks for 90 / 95 / 99 %), the best error any rank-k method can reach (Eckart–Young) beside what Linformer,
Nyström and Performer reach at the same k, and the real model's layer × head energy map (Linformer, Fig. 1)."""
import numpy as np
import pandas as pd
import streamlit as st

import xviz
from pages.ui import compute, display, widgets
from pages.ui.sidebar import context, model_info
from xviz.app import settings as appstate
from xviz.analysis import spectra
from xviz.figures import spectra as fx

SPECTRUM_MAX_N = 2048  # an SVD per head (seconds each at 2K on a CPU)
LOWRANK_MAX_N = 1024  # the rank-k variants' N×N matrices at ~8 ranks × seeds
NORMS = ("fro", "spectral")


def model_text(ctx) -> tuple[str, str, bool]:
    """(text, model folder, whether it is the sidebar's own text input)."""
    if ctx.spec is not None and ctx.spec.source == "text":
        return ctx.spec.text, ctx.spec.model, True
    return appstate.DEFAULT_TEXT, "", False


def settings(ctx, available):
    c = st.columns([4, 1, 1, 1, 1.3])  # room for the chips: no variant name cut
    chosen = widgets.choices("rank-k variants", available, "ey_variants", list(spectra.LOWRANK_DEFAULT),
                             container=c[0], help="run at a comparable k: Linformer rank k, Nyström k landmarks, "
                                                  "Performer k features, the SVD oracle at rank k")
    norm = widgets.choice("norm", NORMS, "ey_norm", "fro", container=c[1],
                          help="fro: ‖·‖_F, bound √Σ_{i>k} σᵢ²; spectral: ‖·‖₂, bound σ_{k+1} (both relative to ‖A‖)")
    ey_head = widgets.number("head (−1 = mean)", "ey_head", -1, ctx.shape[1] - 1, 0, container=c[2])
    seeds = widgets.number("seeds", "ey_seeds", 1, 8, 2, container=c[3],
                           help="random projections and features are redrawn per seed: mean ± std")
    proj = widgets.choice("Linformer projection", ["gaussian", "pool"], "ey_proj", "gaussian", container=c[4],
                          help="gaussian: the paper's random projection (Theorem 1); pool: segment means")
    return chosen, norm, ey_head, seeds, proj


def spectrum_section(ctx) -> None:
    st.subheader("The spectrum of exact attention on this input")
    n = ctx.n
    if n > SPECTRUM_MAX_N:
        st.info(f"At N = {n} the SVD of every head is not computed (up to N = {SPECTRUM_MAX_N}); use a shorter input.")
        return
    with st.spinner("Singular values of every head…"):
        exact, _ = compute.run(ctx, "exact", {})
        sp = compute.derived(ctx.key("spectrum"), lambda: spectra.spectrum(exact.matrix(keep=False)[0]))
    cc = st.columns(2)
    with cc[0]:
        display.show_figure(fx.singular_values_figure(sp.s, font_size=ctx.font_size), "singular_values", ctx,
                            key="fig_sv")
    with cc[1]:
        display.show_figure(fx.energy_figure(sp.energy, ranks=sp.ranks, font_size=ctx.font_size),
                            "cumulative_energy", ctx, key="fig_energy")
    m = st.columns(4)
    m[0].metric("effective rank (mean over heads)", f"{sp.effective_rank.mean():.1f} of {n}",
                help="exp of the entropy of σ/Σσ (Roy & Vetterli 2007)")
    for col, lv in zip(m[1:], spectra.ENERGY_LEVELS):
        col.metric(f"rank for {lv:.0%} of the energy", f"{np.median(sp.ranks[lv]):.0f}",
                   help="median over heads; per head in the table below")
    table = pd.DataFrame(sp.table())
    st.dataframe(table, hide_index=True, width="stretch")
    display.download_csv("⬇ CSV", table, "spectrum_ranks", "dl_spectrum", ctx)
    if ctx.causal:
        st.caption("Causal: the spectrum is that of the lower-triangular exact matrix.")


def lowrank_section(ctx, chosen, norm: str, ey_head: int, seeds: int, proj: str) -> None:
    st.subheader("Best possible rank-k error against what the methods reach")
    if not chosen:
        st.info("Choose at least one rank-k variant above.")
        return
    if ctx.n > LOWRANK_MAX_N:
        st.info(f"At N = {ctx.n} the rank-k comparison is not computed (up to N = {LOWRANK_MAX_N}).")
        return
    ks = spectra.rank_grid(ctx.n, 9)
    key = ctx.key("lowrank", tuple(chosen), norm, seeds, proj)
    with st.spinner(f"Running {', '.join(chosen)} at {len(ks)} ranks × {seeds} seeds…"):
        cmp = compute.derived(key, lambda: spectra.lowrank_errors(
            ctx.inp.q, ctx.inp.k, ctx.inp.v, ks, chosen, norm=norm, seeds=tuple(ctx.seed + i for i in range(seeds)),
            fixed={"linformer": {"projection": proj}}))
    names = {s: xviz.get_variant(s).display_name for s in chosen}
    fig = fx.eckart_young_figure(cmp, head=None if ey_head < 0 else ey_head, names=names, font_size=ctx.font_size)
    display.show_figure(fig, f"eckart_young_{norm}", ctx, key="fig_ey")
    margins = [float(np.nanmin(e - cmp.bound[None])) for e in cmp.errors.values()]
    causal = (" — none of these methods has a causal form with a rank-k matrix, so the causal setting is ignored "
              "here") if ctx.causal else ""
    st.caption("Eckart–Young: no matrix of rank ≤ k is closer to A than the truncated SVD; every method here builds one "
               f"(Linformer P·F, Nyström F·A⁺·B, Performer D⁻¹φ(Q)φ(K)ᵀ with k features). Smallest margin above the "
               f"bound over all runs: {min(margins, default=0.0):.2e} (never negative). Bidirectional attention{causal}.")
    rows = [{"variant": nm, "k": kk, "error (mean over heads)": float(np.nanmean(cmp.mean(nm)[:, j])),
             "bound (mean over heads)": float(cmp.bound[:, j].mean())} for nm in cmp.errors for j, kk in enumerate(cmp.ks)]
    for msg in cmp.messages[:3]:
        display.say("warning", msg)
    display.download_csv("⬇ CSV", pd.DataFrame(rows), f"eckart_young_{norm}", "dl_ey", ctx)


def model_section(ctx) -> None:
    st.subheader("The real model: energy in the top k singular values, layer by layer and head by head")
    text, model, own = model_text(ctx)
    if not own:
        st.caption("The sidebar's input is not a text, so the model reads the default text here "
                   "(pick 'text' in the sidebar to choose it).")
    info = model_info(model)
    with st.spinner(f"Running {info['name']} on the text, every layer…"):
        layers = compute.model_layers(text, model)
    nt = layers[0].n
    c = st.columns(3)
    k_in = widgets.number("k (top singular values)", "energy_k", 1, 4096, max(1, min(128, (nt + 3) // 4)),
                          container=c[0], help="the Linformer paper reads the curve at k = 128 of n = 512")
    kind = widgets.choice("measure", ["energy", "singular"], "energy_measure", "energy", container=c[1],
                          help="energy: Σ_{i≤k} σᵢ² / Σ σᵢ²; singular: Σ_{i≤k} σᵢ / Σ σᵢ, the Linformer "
                               "paper's normalised cumulative singular value")
    kk = min(k_in, nt)
    z = compute.derived(("energy_map", text, model, kk, kind), lambda: spectra.layer_head_energy(
        [spectra.attention_of(x) for x in layers], kk, squared=kind == "energy"))
    c[2].metric("mean over layers and heads", f"{np.nanmean(z):.1%}")
    fig = fx.layer_head_figure(z, title=f"{info['name']}: {'energy' if kind == 'energy' else 'Σσ'} in the top "
                                        f"{kk} of {nt} singular values", colorbar="share", zmin=0, zmax=1,
                               fmt=".2f", font_size=ctx.font_size)
    display.show_figure(fig, f"layer_head_energy_k{kk}", ctx, key="fig_layer_energy")
    if k_in > nt:
        st.caption(f"k = {k_in} is more than the {nt} tokens of the text: k = {nt} is used (every share is 1).")
    st.caption(f"{nt} tokens; each cell is one head's attention matrix (the model's own probabilities). "
               "A share near 1 at small k means the head's attention is nearly low-rank — what Linformer relies on.")


ctx = context()
display.page_header("Spectra", ctx)
if not display.require_input(ctx):
    st.stop()
with display.controls("Settings", ctx):
    chosen, norm, ey_head, seeds, proj = settings(ctx, spectra.rank_variants())
with display.guard("Spectrum"):
    spectrum_section(ctx)
with display.guard("Rank-k comparison"):
    lowrank_section(ctx, chosen, norm, ey_head, seeds, proj)
with display.guard("Model"):
    model_section(ctx)
