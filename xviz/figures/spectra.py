"""Spectra and real-model figures: singular values, cumulative energy, the Eckart–Young bound beside the
rank-k methods, layer × head maps, thumbnails of every layer and head."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .base import (MISSED_COLOUR, SEQUENTIAL, colour as _colour, labels, pool2d,
                   pool_factor, rgba as _rgba, style, to_numpy)


# ----------------------------------------------------------------------------------------- spectra
def singular_values_figure(s: Any, *, font_size: int = 13, max_heads: int = 16) -> go.Figure:
    s = to_numpy(s).astype(np.float64)
    s = s.reshape(-1, s.shape[-1])
    fig = go.Figure()
    for h in range(min(s.shape[0], max_heads)):
        fig.add_trace(go.Scatter(x=np.arange(1, s.shape[1] + 1), y=np.maximum(s[h], 1e-16), mode="lines",
                                 name=f"head {h}", line=dict(color=_colour(h)),
                                 hovertemplate="σ_%{x} = %{y:.3g}<extra>head " + str(h) + "</extra>"))
    fig.update_xaxes(title="index i")
    fig.update_yaxes(type="log", title="singular value σᵢ", exponentformat="power")
    return style(fig, font_size=font_size, title="Singular values of the exact attention matrix", height=420)


def energy_figure(energy: Any, *, levels: Sequence[float] = (0.9, 0.95, 0.99), ranks: Mapping[float, Any] | None = None,
                  ylabel: str = "cumulative energy Σ_{i≤k} σᵢ² / Σ σᵢ²", font_size: int = 13,
                  max_heads: int = 16) -> go.Figure:
    e = to_numpy(energy).astype(np.float64)
    e = e.reshape(-1, e.shape[-1])
    fig = go.Figure()
    for h in range(min(e.shape[0], max_heads)):
        fig.add_trace(go.Scatter(x=np.arange(1, e.shape[1] + 1), y=e[h], mode="lines", name=f"head {h}",
                                 line=dict(color=_colour(h)),
                                 hovertemplate="k = %{x}: %{y:.3f}<extra>head " + str(h) + "</extra>"))
    for lv in levels:
        fig.add_hline(y=lv, line=dict(color="#888888", dash="dot"), annotation_text=f"{lv:.0%}",
                      annotation_position="bottom right")
    if ranks:
        for i, lv in enumerate(levels):
            r = to_numpy(ranks[lv]).reshape(-1)
            fig.add_trace(go.Scatter(x=r[:max_heads], y=[lv] * min(len(r), max_heads), mode="markers",
                                     name=f"rank for {lv:.0%}", marker=dict(symbol="line-ns-open", size=14,
                                                                             color="#222222"),
                                     showlegend=i == 0, hovertemplate="rank %{x} reaches " + f"{lv:.0%}"
                                                                      "<extra></extra>"))
    fig.update_xaxes(type="log", title="rank k")
    fig.update_yaxes(title=ylabel, range=[0, 1.02])
    return style(fig, font_size=font_size, title="Cumulative energy of the spectrum", height=420)


def eckart_young_figure(cmp: Any, *, head: int | None = 0, names: Mapping[str, str] | None = None,
                        font_size: int = 13) -> go.Figure:
    """The best possible rank-k error (Eckart–Young) as a shaded floor, each rank-k variant's error beside it
    (mean ± std over seeds); ``head`` None averages the heads."""
    ks = np.asarray(cmp.ks)
    pick = (lambda a: np.nanmean(a, axis=-2)) if head is None else (lambda a: a[..., head, :])
    bound = pick(cmp.bound).astype(np.float64)
    floor = 1e-9 * max(1e-300, float(np.nanmax(bound)) if bound.size else 1.0)
    bound = np.where(bound > floor, bound, np.nan)  # k = N: zero error has no place on a log axis
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ks, y=bound, mode="lines+markers", name="best possible (Eckart–Young)",
                             line=dict(color="#222222", width=3), fill="tozeroy", fillcolor="rgba(120,120,120,0.15)",
                             hovertemplate="k = %{x}: %{y:.3g}<extra>Eckart–Young</extra>"))
    for i, (name, errs) in enumerate(cmp.errors.items()):
        with np.errstate(all="ignore"):
            per = pick(errs)  # (S, len(ks))
            mean, std = np.nanmean(per, axis=0), np.nanstd(per, axis=0)
            mean = np.where(mean > floor, mean, np.nan)
        colour = _colour(i + 1)
        label = (names or {}).get(name, name)
        if per.shape[0] > 1:
            fig.add_trace(go.Scatter(x=np.concatenate([ks, ks[::-1]]),
                                     y=np.concatenate([mean + std, np.maximum(mean - std, 1e-16)[::-1]]),
                                     fill="toself", fillcolor=_rgba(colour, 0.18), line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, legendgroup=name))
        fig.add_trace(go.Scatter(x=ks, y=mean, mode="lines+markers", name=label, legendgroup=name,
                                 line=dict(color=colour), hovertemplate="k = %{x}: %{y:.3g}<extra>" + label + "</extra>"))
    norm = "Frobenius" if cmp.norm == "fro" else "spectral"
    fig.update_xaxes(type="log", title="rank k (rank, landmarks, features)")
    fig.update_yaxes(type="log", title=f"‖A − Â‖ / ‖A‖ ({norm})", exponentformat="power")
    return style(fig, font_size=font_size, title=f"Best possible rank-k error against what the methods reach "
                                                 f"({'mean over heads' if head is None else f'head {head}'})",
                 height=480)


def layer_head_figure(z: Any, *, title: str, colorbar: str = "", zmin: float | None = None,
                      zmax: float | None = None, colorscale: Any = SEQUENTIAL, fmt: str = ".3f",
                      selectable: bool = False, font_size: int = 13) -> go.Figure:
    """An (L, H) map, layers down, heads across, annotated. ``selectable``: a marker on every cell carries
    [layer, head] as customdata, so a click selects the cell."""
    z = to_numpy(z).astype(np.float64)
    L, H = z.shape
    fig = go.Figure(go.Heatmap(z=z, x=list(range(H)), y=list(range(L)), zmin=zmin, zmax=zmax, colorscale=colorscale,
                               texttemplate="%{z:" + fmt + "}" if L * H <= 400 else None,
                               colorbar=dict(title=colorbar),
                               hovertemplate="layer %{y}, head %{x}<br>%{z:" + fmt + "}<extra></extra>"))
    if selectable:
        yy, xx = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
        fig.add_trace(go.Scatter(x=xx.ravel(), y=yy.ravel(), mode="markers", showlegend=False,
                                 customdata=np.stack([yy.ravel(), xx.ravel()], 1),
                                 marker=dict(size=22, color="rgba(255,255,255,0.01)", symbol="square"),
                                 hovertemplate="layer %{customdata[0]}, head %{customdata[1]} — click to select"
                                               "<extra></extra>"))
    fig.update_xaxes(title="head", dtick=1, showgrid=False)
    fig.update_yaxes(title="layer", dtick=1, autorange="reversed", showgrid=False)
    return style(fig, font_size=font_size, title=title, height=160 + 42 * L)


# ----------------------------------------------------------------------------------------- real model
def thumbnail_grid(maps: Sequence[Any], tokens: Sequence[str] | None = None, *, max_cells: int = 32,
                   font_size: int = 13, selected: tuple[int, int] | None = None) -> go.Figure:
    """A layer × head grid of attention maps (``maps``: one (H, N, N) per layer), each mean-pooled to at most
    ``max_cells`` a side, on one colour scale [0, max]; hover names the layer, head, query and key tokens. A
    click on a thumbnail's middle selects [layer, head] (its marker's customdata).

    Drawn as one mosaic heatmap (thumbnails separated by empty cells) rather than a subplot per head: a
    30 × 9 grid of subplots took seconds to build; the mosaic's axis labels carry the layer / head and token."""
    mats = [to_numpy(m).astype(np.float64) for m in maps]
    L, H = len(mats), mats[0].shape[0]
    n = mats[0].shape[-1]
    f = pool_factor(n, max_cells)
    lab = labels(tokens, np.arange(0, n, f), f, n)
    c = len(lab)
    z = np.full((L * (c + 1) - 1, H * (c + 1) - 1), np.nan, dtype=np.float32)
    for li, m in enumerate(mats):
        for h in range(H):
            z[li * (c + 1):li * (c + 1) + c, h * (c + 1):h * (c + 1) + c] = pool2d(m[h], max_cells, "mean").z
    # category labels, unique per mosaic row / column: the hover names layer, head, query and key
    xs = [f"h{h} key {lab[j]}" if j < c else f"h{h} |" for h in range(H) for j in range(c + 1)][:-1]
    ys = [f"L{li} query {lab[i]}" if i < c else f"L{li} |" for li in range(L) for i in range(c + 1)][:-1]
    top = max(float(m.max()) for m in mats) if mats else 1.0
    fig = go.Figure(go.Heatmap(z=z, x=xs, y=ys, coloraxis="coloraxis", hoverongaps=False,
                               hovertemplate="%{y}<br>%{x}<br>%{z:.3f}<extra></extra>"))
    # heatmaps cannot be selected: a transparent marker over the middle of each thumbnail can
    mid = c // 2
    cells = [(li, h) for li in range(L) for h in range(H)]
    fig.add_trace(go.Scatter(x=[xs[h * (c + 1) + mid] for _, h in cells], y=[ys[li * (c + 1) + mid] for li, _ in cells],
                             mode="markers", customdata=[[li, h] for li, h in cells], showlegend=False,
                             marker=dict(size=22, color="rgba(0,0,0,0)", symbol="square"),
                             hovertemplate="layer %{customdata[0]}, head %{customdata[1]} — click to open"
                                           "<extra></extra>"))
    fig.update_xaxes(type="category", showgrid=False, side="top", tickmode="array", range=[-0.5, len(xs) - 0.5],
                     tickvals=[xs[h * (c + 1) + mid] for h in range(H)], ticktext=[f"h{h}" for h in range(H)])
    fig.update_yaxes(type="category", showgrid=False, range=[len(ys) - 0.5, -0.5], tickmode="array",
                     tickvals=[ys[li * (c + 1) + mid] for li in range(L)], ticktext=[f"L{li}" for li in range(L)])
    if selected is not None:
        li, h = selected
        if 0 <= li < L and 0 <= h < H:  # category axes: positions are the labels' indices
            x0, y0 = h * (c + 1) - 0.5, li * (c + 1) - 0.5
            fig.add_shape(type="rect", xref="x", yref="y", x0=x0, x1=x0 + c, y0=y0, y1=y0 + c,
                          line=dict(color=MISSED_COLOUR, width=3))
    fig.update_layout(coloraxis=dict(colorscale=SEQUENTIAL, cmin=0, cmax=top, colorbar=dict(title="weight")))
    note = "" if f == 1 else f" (mean-pooled by {f})"
    return style(fig, font_size=font_size, title=f"Attention of every layer and head{note}",
                 height=int(max(300, min(1400, 70 * L + 60))))
