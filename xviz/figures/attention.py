"""Attention figures: heatmaps (exact, approximate, difference), masks, strips, query lines, the
artifacts of any variant (drawn by their declared kind), patterns' mass and reachability, and the
error-against-cost scatter. Pure functions of tensors and arrays; matrices are pooled first (``base``)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..core.registry import Artifact
from .base import (ARTIFACT_CELLS, DIVERGING, FAMILY_COLOURS, MASK_CELLS, MASK_SCALE, MAX_CELLS, QUALITATIVE, SEQUENTIAL,
                   SIDE_BY_SIDE_CELLS, SIGNED_WEIGHTS, Pooled, first_2d, crop_window, labels, pool1d, pool2d,
                   pool_factor, style, to_numpy)


def axis_tokens(tokens) -> tuple:
    """(row labels, column labels): ``tokens`` is one list for both, or a pair (queries, keys) for
    cross-attention."""
    if isinstance(tokens, tuple) and len(tokens) == 2 and not isinstance(tokens[0], str):
        return tokens
    return tokens, tokens


def _heat_trace(p: Pooled, tokens, r0: int, c0: int, *, hover_value: str = "%{z:.4g}", **kw) -> go.Heatmap:
    rows, cols = axis_tokens(tokens)
    y = labels(rows, p.row_starts, p.fr, p.rows, r0)
    x = labels(cols, p.col_starts, p.fc, p.cols, c0)
    return go.Heatmap(z=p.z, x=x, y=y, hovertemplate="query %{y}<br>key %{x}<br>" + hover_value + "<extra></extra>",
                      **kw)


def _square_axes(fig: go.Figure, n_panels: int = 1) -> None:
    for i in range(1, n_panels + 1):
        sfx = "" if i == 1 else str(i)
        fig.layout[f"yaxis{sfx}"].update(autorange="reversed", type="category", showgrid=False)
        fig.layout[f"xaxis{sfx}"].update(type="category", showgrid=False, tickangle=-60)
        if i > 1:
            fig.layout[f"yaxis{sfx}"].update(showticklabels=False)


def heatmap(a: Any, tokens: Sequence[str] | None = None, *, title: str = "", how: str = "mean",
            max_cells: int = MAX_CELLS, window: tuple[int, int, int, int] | None = None,
            colorscale: Any = SEQUENTIAL, zmin: float | None = None, zmax: float | None = None,
            zmid: float | None = None, font_size: int = 13, height: int = 560) -> go.Figure:
    """One (R, C) matrix (the first slice of a larger stack) as a pooled heatmap."""
    x, r0, c0 = crop_window(first_2d(a), window)
    p = pool2d(x, max_cells, how)
    note = "" if p.fr == p.fc == 1 else f" ({how}-pooled {p.fr}×{p.fc})"
    fig = go.Figure(_heat_trace(p, tokens, r0, c0, colorscale=colorscale, zmin=zmin, zmax=zmax, zmid=zmid))
    _square_axes(fig)
    return style(fig, font_size=font_size, title=title + note, height=height)


def scale_top(values: np.ndarray, cap: float | None) -> tuple[float, str]:
    """The largest |value| drawn, or its ``cap`` quantile (larger values saturate; hover shows them)."""
    top = float(max(np.abs(values).max(initial=0), 1e-12))
    if cap is not None and 0 < cap < 1 and values.size:
        q = float(np.quantile(np.abs(values), cap))
        if 0 < q < top:
            return q, f"{q:.3g} ({cap:.1%} quantile)"
    return top, ""


def compare_heatmaps(exact: Any, approx: Any, tokens: Sequence[str] | None = None, *, names=("exact", "approx"),
                     max_cells: int = SIDE_BY_SIDE_CELLS, window: tuple[int, int, int, int] | None = None,
                     font_size: int = 13, height: int = 520, cap: float | None = None,
                     selected: tuple[int, int] | None = None, clickable: bool = False) -> go.Figure:
    """Exact, approximate and their difference (approx − exact) side by side.

    The two weight panels share one sequential scale from 0 when the approximation's weights are never
    negative. When they have a sign (Nyström, RetNet, DeltaNet), the exact panel keeps its own
    sequential scale (a signed range would wash it out) and the approximation gets a diverging scale of
    other colours than the difference's. The difference always has its own diverging scale centred at
    0. With ``cap`` = q (say 0.99) a scale stops
    at the q-quantile of its |values| (long sequences spread attention thin; a few large weights would
    otherwise wash the map out). ``selected`` = (query, key) marks one cell in all three panels (the
    query inspector shows its row). ``clickable``: invisible markers on the weight panels' cells (up to
    CLICK_CELLS of them) carry [query, key], so a click selects a cell."""
    ex, r0, c0 = crop_window(first_2d(exact), window)
    ap, _, _ = crop_window(first_2d(approx), window)
    pe, pa = pool2d(ex, max_cells, "mean"), pool2d(ap, max_cells, "mean")
    # mean pooling is linear: the pooled difference is the difference of the pooled maps
    pd = Pooled(z=(pa.z.astype(np.float64) - pe.z).astype(np.float32), fr=pe.fr, fc=pe.fc, row_starts=pe.row_starts,
                col_starts=pe.col_starts, rows=pe.rows, cols=pe.cols)
    signed = bool(min(pe.z.min(initial=0), pa.z.min(initial=0)) < 0)
    mw, wnote = scale_top(np.concatenate([pe.z.ravel(), pa.z.ravel()]), cap)
    md, dnote = scale_top(pd.z, cap)
    note = "" if pe.fr == pe.fc == 1 else f" — mean-pooled {pe.fr}×{pe.fc}"
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=(names[0], names[1], f"difference ({names[1]} − {names[0]})"))
    axes = ("coloraxis", "coloraxis3" if signed else "coloraxis", "coloraxis2")
    for i, (p, axis) in enumerate(zip((pe, pa, pd), axes)):
        fig.add_trace(_heat_trace(p, tokens, r0, c0, coloraxis=axis), row=1, col=i + 1)
    bar = lambda title, x: dict(title=title, x=x, len=0.9)  # noqa: E731
    if signed:
        me, enote = scale_top(pe.z, cap)
        ma, anote = scale_top(pa.z, cap)
        note += "".join(f" — {what} saturate at {n}" for what, n in (("exact", enote), (names[1], anote)) if n)
        fig.update_layout(coloraxis=dict(colorscale=SEQUENTIAL, cmin=0.0, cmax=me, colorbar=bar("exact", 1.0)),
                          coloraxis3=dict(colorscale=SIGNED_WEIGHTS, cmin=-ma, cmax=ma, cmid=0.0,
                                          colorbar=bar("signed weight", 1.08)))
    else:
        note += f" — weights saturate at {wnote}" if wnote else ""
        fig.update_layout(coloraxis=dict(colorscale=SEQUENTIAL, cmin=0.0, cmax=mw, colorbar=bar("weight", 1.0)))
    fig.update_layout(coloraxis2=dict(colorscale=DIVERGING, cmin=-md, cmax=md, cmid=0.0,
                                      colorbar=bar("difference", 1.16 if signed else 1.08)))
    _square_axes(fig, 3)
    fig.update_yaxes(title_text="queries ↓", row=1, col=1)
    fig.update_xaxes(title_text="keys →")
    if selected is not None:
        _mark_cell(fig, pe, selected, r0, c0)
    if clickable and pe.z.size <= CLICK_CELLS:
        _click_targets(fig, (pe, pa), tokens, r0, c0)
    return style(fig, font_size=font_size, title="Attention weights" + note, height=height)


CLICK_CELLS = 64 * 64  # click targets are one marker per cell: at most this many per panel


def _click_targets(fig: go.Figure, panels, tokens, r0: int, c0: int) -> None:
    """One transparent marker per cell of the weight panels, carrying [query, key, weight]: a click selects
    the cell (plotly heatmaps cannot be selected), and the hover still shows the weight."""
    rows, cols = axis_tokens(tokens)
    p = panels[0]
    y = labels(rows, p.row_starts, p.fr, p.rows, r0)
    x = labels(cols, p.col_starts, p.fc, p.cols, c0)
    yy, xx = (g.ravel() for g in np.meshgrid(np.arange(len(y)), np.arange(len(x)), indexing="ij"))
    for col, panel in enumerate(panels, start=1):
        custom = np.stack([r0 + p.row_starts[yy], c0 + p.col_starts[xx], panel.z[yy, xx]], 1)
        fig.add_trace(go.Scatter(x=[x[i] for i in xx], y=[y[i] for i in yy], mode="markers", customdata=custom,
                                 showlegend=False, marker=dict(size=9, color="rgba(0,0,0,0)", symbol="square"),
                                 hovertemplate="query %{y}<br>key %{x}<br>%{customdata[2]:.4g} — click to "
                                               "inspect<extra></extra>"), row=1, col=col)


def _mark_cell(fig: go.Figure, p, cell: tuple[int, int], r0: int, c0: int) -> None:
    """A box around (query, key) in every panel, at the pooled cell that holds it."""
    row, col = (cell[0] - r0) // p.fr, (cell[1] - c0) // p.fc
    if not (0 <= row < p.z.shape[0] and 0 <= col < p.z.shape[1]):
        return
    for i in range(1, 4):
        sfx = "" if i == 1 else str(i)
        fig.add_shape(type="rect", xref=f"x{sfx}", yref=f"y{sfx}", x0=col - 0.5, x1=col + 0.5, y0=row - 0.5,
                      y1=row + 0.5, line=dict(color="#ff00ff", width=2))


def mask_figure(mask: Any, tokens: Sequence[str] | None = None, *, title: str = "mask", max_cells: int = MASK_CELLS,
                max_heads: int = 4, font_size: int = 13, window: tuple[int, int, int, int] | None = None,
                height: int = 460) -> go.Figure:
    """A boolean pattern, max-pooled (no nonzero disappears); one panel per head when heads differ."""
    m = to_numpy(mask)
    while m.ndim > 3:
        m = m[0]
    if m.ndim == 2:
        m = m[None]
    heads = m.shape[0]
    distinct = [0] + [h for h in range(1, heads) if not np.array_equal(m[h], m[0])]
    if len(distinct) == 1:
        panels = [0]
    else:
        panels = list(range(min(heads, max_heads)))
    per_panel = max_cells if len(panels) == 1 else max(64, max_cells // len(panels))
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.02,
                        subplot_titles=[f"head {h}" for h in panels] if len(panels) > 1 else None)
    note = ""
    for i, h in enumerate(panels):
        x, r0, c0 = crop_window(m[h].astype(bool), window)
        p = pool2d(x, per_panel, "max")
        note = "" if p.fr == p.fc == 1 else f" (max-pooled {p.fr}×{p.fc})"
        fig.add_trace(_heat_trace(p, tokens, r0, c0, colorscale=MASK_SCALE, zmin=0, zmax=1, showscale=False,
                                  hover_value="attends: %{z}"), row=1, col=i + 1)
    _square_axes(fig, len(panels))
    return style(fig, font_size=font_size, title=title + note, height=height)


def strip_figure(ids: Any, *, title: str = "", row_labels: Sequence[str] | None = None,
                 tokens: Sequence[str] | None = None, max_cells: int = MAX_CELLS, font_size: int = 13,
                 word: str = "id", legend_max: int = 16) -> go.Figure:
    """Integer ids per position (buckets, clusters), rows = rounds/heads: a categorical strip, its colours
    named in a legend ("``word`` i", up to ``legend_max`` ids; hover names them beyond).
    Over ``max_cells`` positions, every f-th position is shown (ids cannot be averaged)."""
    a = to_numpy(ids)
    if a.ndim == 1:
        a = a[None]
    a = a.reshape(-1, a.shape[-1])
    z, starts = pool1d(a, max_cells, how="first")
    f = pool_factor(a.shape[-1], max_cells)
    x = labels(tokens, starts, 1, a.shape[-1])
    y = list(row_labels) if row_labels is not None and len(row_labels) == a.shape[0] else [f"row {i}" for i in range(a.shape[0])]
    k = int(np.max(a)) + 1 if a.size else 1
    colours = [QUALITATIVE[i % len(QUALITATIVE)] for i in range(max(k, 1))]
    scale = []
    for i, c in enumerate(colours):
        scale += [[i / max(k, 1), c], [(i + 1) / max(k, 1), c]]
    fig = go.Figure(go.Heatmap(z=z.astype(np.float32), x=x, y=y, colorscale=scale, zmin=-0.5, zmax=max(k, 1) - 0.5,
                               showscale=False, hovertemplate="%{y}<br>position %{x}<br>" + word + " %{z}<extra></extra>"))
    if k <= legend_max:  # a heatmap has no legend: one legend-only square per id
        for i in np.unique(a):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{word} {int(i)}",
                                     marker=dict(symbol="square", size=12, color=colours[int(i)])))
        fig.update_layout(legend=dict(orientation="h", y=-0.45, x=0, yanchor="top"))
    fig.update_xaxes(type="category", tickangle=-60)
    fig.update_yaxes(type="category", autorange="reversed")
    note = "" if f == 1 else f" (every {f}th position)"
    return style(fig, font_size=font_size, title=title + note, height=120 + 28 * a.shape[0] + 60 * (k <= legend_max))


def query_lines(exact_row: Any, approx_row: Any, tokens: Sequence[str] | None = None, *, query: int = 0,
                names=("exact", "approx"), max_cells: int = 4096, font_size: int = 13) -> go.Figure:
    """One query's weights over the keys: exact vs approximate as two lines."""
    e = to_numpy(exact_row).astype(np.float64).reshape(-1)
    a = to_numpy(approx_row).astype(np.float64).reshape(-1)
    (pe, starts), (pa, _) = pool1d(e, max_cells), pool1d(a, max_cells)
    f = pool_factor(e.shape[-1], max_cells)
    q_tokens, tokens = axis_tokens(tokens)
    x = labels(tokens, starts, f, e.shape[-1])
    fig = go.Figure()
    for y, name, colour in ((pe, names[0], "#222222"), (pa, names[1], "#d62728")):
        fig.add_trace(go.Scatter(x=x, y=y.astype(np.float32), mode="lines+markers" if len(x) <= 128 else "lines",
                                 name=name, line=dict(color=colour),
                                 hovertemplate="key %{x}<br>%{y:.4g}<extra>" + name + "</extra>"))
    fig.update_xaxes(type="category", tickangle=-60, title="key")
    fig.update_yaxes(title="weight")
    qlab = labels(q_tokens, np.array([query]), 1, query + 1)[0]
    note = "" if f == 1 else f" (mean-pooled by {f})"
    return style(fig, font_size=font_size, title=f"query {qlab}: weights over keys{note}", height=380)


# ----------------------------------------------------------------------------------------- artifacts
def flatten_artifact(name: str, value: Any) -> list[tuple[str, Any]]:
    """An artifact may be a tensor, a tuple/list of tensors or a dict of them: one entry per tensor."""
    if isinstance(value, Mapping):
        out = []
        for k, v in value.items():
            out += flatten_artifact(f"{name}.{k}", v)
        return out
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in value):
        return [(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [(name, value)]


def _slice(a: np.ndarray, head: int) -> np.ndarray:
    """(B, H, …) → (…) at batch 0 and ``head`` until two dimensions are left."""
    if a.ndim >= 3:
        a = a[0]
    if a.ndim >= 3:
        a = a[min(head, a.shape[0] - 1)]
    while a.ndim > 2:
        a = a[0]
    return a


def artifact_figures(art: Artifact | str, value: Any, tokens: Sequence[str] | None = None, *, head: int = 0,
                     max_cells: int = ARTIFACT_CELLS, font_size: int = 13) -> list[go.Figure]:
    """Figures for one artifact, chosen by its declared kind (``xviz.core.registry.ARTIFACT_KINDS``),
    never by the variant's or the artifact's name, so a plugin's artifacts are drawn too:

    * ``mask``: a max-pooled pattern, per head when heads differ;
    * ``ids``: a strip coloured by id (batch 0, ``head``);
    * ``curve``: a line; ``points`` / ``matrix``: the (batch 0, ``head``) slice as a heatmap,
      mean-pooled, on a diverging scale when it has both signs;
    * ``tensor`` (undeclared): by rank — 1-D a line, 2-D and more a heatmap.
    """
    art = art if isinstance(art, Artifact) else Artifact(str(art))
    figs = []
    for label, v in flatten_artifact(art.name, value):
        if not isinstance(v, (torch.Tensor, np.ndarray)):
            continue
        a = to_numpy(v)
        if a.size == 0:
            continue
        title = f"{label} — {art.help}" if art.help else label
        if art.kind == "mask" and a.ndim >= 2:
            figs.append(mask_figure(a != 0, tokens, title=title, max_cells=max_cells, font_size=font_size))
            continue
        sl = _slice(a, head)
        if art.kind == "ids" and sl.ndim >= 1:
            figs.append(strip_figure(sl, title=title, tokens=tokens if sl.shape[-1] == len(tokens or []) else None,
                                     max_cells=max_cells, font_size=font_size))
            continue
        if art.kind == "curve" or sl.ndim == 1 or (sl.ndim == 2 and 1 in sl.shape and art.kind == "tensor"):
            figs.append(curve_figure(sl, title=title, max_cells=max_cells, font_size=font_size))
            continue
        figs.append(matrix_figure(sl, title=title, max_cells=max_cells, font_size=font_size))
    return figs


def curve_figure(values: Any, *, title: str = "", max_cells: int = MAX_CELLS, font_size: int = 13,
                 log_y: bool | None = None) -> go.Figure:
    """Rows of values as lines (one per row of a 2-D array), pooled to ``max_cells`` points."""
    a = np.atleast_2d(to_numpy(values).astype(np.float64))
    if a.ndim > 2:
        a = a.reshape(-1, a.shape[-1])
    fig = go.Figure()
    for i, row in enumerate(a[:16]):
        y, starts = pool1d(row, max_cells)
        fig.add_scatter(x=starts, y=y, mode="lines+markers" if len(y) <= 128 else "lines",
                        name=str(i) if len(a) > 1 else title, showlegend=len(a) > 1,
                        hovertemplate="%{x}: %{y:.4g}<extra></extra>")
    if log_y or (log_y is None and np.all(a > 0) and a.max() / max(a.min(), 1e-300) > 1e3):
        fig.update_yaxes(type="log")
    return style(fig, font_size=font_size, title=title, height=320)


def matrix_figure(values: Any, *, title: str = "", max_cells: int = MAX_CELLS, font_size: int = 13) -> go.Figure:
    """A 2-D array as a mean-pooled heatmap; diverging and centred at 0 when it has both signs."""
    sl = first_2d(values)
    if sl.dtype == np.bool_:
        sl = sl.astype(np.float32)
    p = pool2d(sl.astype(np.float64), max_cells, "mean")
    both = p.z.min(initial=0) < 0 < p.z.max(initial=0)
    fig = go.Figure(go.Heatmap(z=p.z, x=p.col_starts, y=p.row_starts, colorscale=DIVERGING if both else SEQUENTIAL,
                               zmid=0.0 if both else None,
                               hovertemplate="row %{y}<br>col %{x}<br>%{z:.4g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    note = "" if p.fr == p.fc == 1 else f" (mean-pooled {p.fr}×{p.fc})"
    return style(fig, font_size=font_size, title=f"{title}{note}", height=380)


# ----------------------------------------------------------------------------------------- patterns
def mass_inside_figure(per_query: Any, tokens: Sequence[str] | None = None, *, title: str = "exact mass inside the pattern",
                       max_cells: int = MAX_CELLS, font_size: int = 13) -> go.Figure:
    """(H, N) share of each query's exact mass inside the pattern, heads × queries, on [0, 1]."""
    a = to_numpy(per_query)
    while a.ndim > 2:
        a = a[0]
    if a.ndim == 1:
        a = a[None]
    z, starts = pool1d(a.astype(np.float64), max_cells)
    f = pool_factor(a.shape[-1], max_cells)
    x = labels(tokens, starts, f, a.shape[-1])
    fig = go.Figure(go.Heatmap(z=z, x=x, y=[f"head {h}" for h in range(a.shape[0])], zmin=0, zmax=1,
                               colorscale=SEQUENTIAL, colorbar=dict(title="share"),
                               hovertemplate="%{y}<br>query %{x}<br>mass inside %{z:.3f}<extra></extra>"))
    fig.update_xaxes(type="category", tickangle=-60)
    fig.update_yaxes(type="category", autorange="reversed")
    return style(fig, font_size=font_size, title=title, height=140 + 22 * a.shape[0])


def reachability_figures(reach: Any, tokens: Sequence[str] | None = None, *, max_panels: int = 6,
                         max_cells: int = 256, font_size: int = 13) -> tuple[go.Figure, go.Figure]:
    """(layer-by-layer reach maps, reached share per layer) for an ``xviz.metrics.Reachability``."""
    steps = list(reach.steps)
    if len(steps) > max_panels:  # first layers and the last one
        keep = list(range(max_panels - 1)) + [len(steps) - 1]
    else:
        keep = list(range(len(steps)))
    fig = make_subplots(rows=1, cols=max(1, len(keep)), shared_yaxes=True, horizontal_spacing=0.015,
                        subplot_titles=[f"{i + 1} layer{'s' if i else ''}: {reach.fraction[i]:.0%}" for i in keep])
    for j, i in enumerate(keep):
        p = pool2d(to_numpy(steps[i]).astype(bool), max_cells, "max")
        fig.add_trace(_heat_trace(p, tokens, 0, 0, colorscale=MASK_SCALE, zmin=0, zmax=1, showscale=False,
                                  hover_value="reached: %{z}"), row=1, col=j + 1)
    _square_axes(fig, max(1, len(keep)))
    for j in range(1, len(keep) + 1):
        fig.layout["xaxis" + ("" if j == 1 else str(j))].update(showticklabels=False)
    full = (f"every token reaches every {'earlier ' if reach.causal else ''}token after {reach.layers_to_full} layers"
            if reach.layers_to_full else
            ("the reach stops growing before it is full: some pairs are never connected" if reach.saturated
             else f"not full after {len(steps)} layers"))
    style(fig, font_size=font_size, title="Reach of the pattern, layer by layer — " + full, height=330)
    line = go.Figure(go.Scatter(x=list(range(1, len(reach.fraction) + 1)), y=reach.fraction, mode="lines+markers",
                                hovertemplate="%{x} layers: %{y:.1%}<extra></extra>"))
    line.update_yaxes(range=[0, 1.02], tickformat=".0%", title="pairs reached")
    line.update_xaxes(title="layers", dtick=1)
    return fig, style(line, font_size=font_size, title="Share of token pairs connected", height=300)


# ----------------------------------------------------------------------------------------- compare
def fences(values: np.ndarray, k: float = 1.5) -> tuple[float, float]:
    """Tukey's fences of ``values`` (quartiles ∓ k·IQR): the range an axis keeps, so one outlier does not own it."""
    q1, q3 = np.percentile(values, [25, 75])
    return float(q1 - k * (q3 - q1)), float(q3 + k * (q3 - q1))


def place_labels(px: np.ndarray, py: np.ndarray, widths: np.ndarray, height: float,
                 area: tuple[float, float] = (np.inf, np.inf)) -> list[tuple[float, float]]:
    """An offset (dx, dy) in pixels for each point's label, chosen greedily (points in order) among sixteen
    places around it as the one overlapping least the labels placed so far and the markers, and staying
    inside the plot ``area`` (width, height; a label outside would run into the legend)."""
    spots = [(10, -10), (10, 10), (-10, -10), (-10, 10), (0, -16), (0, 16), (22, 0), (-22, 0),
             (30, -24), (30, 24), (-30, -24), (-30, 24), (48, -8), (-48, -8), (48, 12), (-48, 12)]
    boxes: list[tuple[float, float, float, float]] = []
    marks = [(x - 6, y - 6, x + 6, y + 6) for x, y in zip(px, py)]
    out = []
    for x, y, w in zip(px, py, widths):
        def cost(dx, dy):
            cx = x + dx + (w / 2 if dx > 0 else -w / 2 if dx < 0 else 0)
            box = (cx - w / 2, y + dy - height / 2, cx + w / 2, y + dy + height / 2)
            outside = (max(0, -box[0]) + max(0, box[2] - area[0])) * height + \
                (max(0, -box[1]) + max(0, box[3] - area[1])) * w
            return 4 * outside + sum(max(0, min(box[2], b[2]) - max(box[0], b[0])) *
                                     max(0, min(box[3], b[3]) - max(box[1], b[1])) for b in boxes + marks), box
        best = min(spots, key=lambda s: cost(*s)[0])
        boxes.append(cost(*best)[1])
        out.append(best)
    return out


def error_cost_scatter(rows: Iterable[Mapping[str, Any]], *, x: str = "flops", y: str = "rel_out",
                       x_label: str = "theoretical FLOPs", y_label: str = "relative output error",
                       font_size: int = 13, title: str = "Error against cost",
                       reference: float | None = None, reference_label: str = "exact attention's cost",
                       width: int = 1000, height: int = 560) -> go.Figure:
    """One labelled marker per variant (``rows``: dicts with name, display_name, family, ``x`` and ``y``),
    coloured by family, log-log; ``customdata`` carries the variant name for click-through. Rows
    without a finite positive value (the exact reference itself: error 0) are left out. Each axis keeps
    Tukey's fences of the log values: a point beyond is drawn on the edge as a triangle pointing out,
    its hover and label giving the true value. ``reference`` draws the exact reference's cost as a
    dashed vertical line, named in the legend. Labels are placed for a chart about ``width`` px wide."""
    pts = []
    for r in rows:
        try:
            xv, yv = float(r.get(x)), float(r.get(y))
        except (TypeError, ValueError):
            continue
        if np.isfinite(xv) and np.isfinite(yv) and xv > 0 and yv > 0:
            pts.append((r, xv, yv))
    fig = go.Figure()
    if not pts:
        return style(fig, font_size=font_size, title=title, height=height)
    lx, ly = np.log10([p[1] for p in pts]), np.log10([p[2] for p in pts])
    ref = np.log10(reference) if reference is not None and np.isfinite(reference) and reference > 0 else None
    (xlo, xhi), (ylo, yhi) = fences(np.append(lx, [ref] if ref is not None else [])), fences(ly)
    xlo, xhi = min(xlo, lx[(lx >= xlo)].min(initial=xhi)), max(xhi, lx[(lx <= xhi)].max(initial=xlo))
    ylo, yhi = min(ylo, ly[(ly >= ylo)].min(initial=yhi)), max(yhi, ly[(ly <= yhi)].max(initial=ylo))
    xpad, ypad = max(0.08 * (xhi - xlo), 0.1), max(0.08 * (yhi - ylo), 0.1)
    xr, yr = (xlo - xpad, xhi + xpad), (ylo - ypad, yhi + ypad)
    cx, cy = np.clip(lx, *xr), np.clip(ly, *yr)
    out = (cx != lx) | (cy != ly)
    symbol = np.where(cy > ly, "triangle-down", np.where(cy < ly, "triangle-up",
                      np.where(cx > lx, "triangle-left", np.where(cx < lx, "triangle-right", "circle"))))
    by_family: dict[tuple[str, bool], list[int]] = {}
    for i, (r, _, _) in enumerate(pts):  # a family's points beyond the axes apart: its legend shows a circle
        by_family.setdefault((str(r.get("family", "")), bool(out[i])), []).append(i)
    shown_families: set[str] = set()
    for (fam, beyond), idx in sorted(by_family.items(), key=lambda kv: kv[0][1]):
        fig.add_trace(go.Scatter(
            x=[10 ** cx[i] for i in idx], y=[10 ** cy[i] for i in idx], mode="markers", name=fam, legendgroup=fam,
            showlegend=fam not in shown_families,
            text=[str(pts[i][0].get("display_name", pts[i][0].get("name"))) for i in idx],
            customdata=[pts[i][0].get("name") for i in idx],
            hovertext=[f"{pts[i][1]:.3g}, {pts[i][2]:.3g}" for i in idx],
            marker=dict(size=12, color=FAMILY_COLOURS.get(fam, "#7f7f7f"), symbol=[symbol[i] for i in idx],
                        line=dict(width=1, color="white")), cliponaxis=False,
            hovertemplate="<b>%{text}</b><br>" + x_label + ", " + y_label + ": %{hovertext}<extra>" + fam
                          + "</extra>"))
        shown_families.add(fam)
    # labels: the variant's short name beside its marker, placed to overlap as little as possible
    plot_w, plot_h = width - 260, height - 150  # the legend and margins take the rest
    px = (cx - xr[0]) / (xr[1] - xr[0]) * plot_w
    py = (1 - (cy - yr[0]) / (yr[1] - yr[0])) * plot_h
    size = max(9, font_size - 3)
    labels_ = [str(r.get("name")) + (f" ({v:.3g})" if o else "") for (r, _, v), o in zip(pts, out)]
    order = np.argsort(py)
    offsets = place_labels(px[order], py[order], np.array([0.55 * size * len(t) for t in np.array(labels_)[order]]),
                           size + 2, area=(plot_w, plot_h))
    for k, (dx, dy) in zip(order, offsets):
        fig.add_annotation(x=float(cx[k]), y=float(cy[k]), text=labels_[k], showarrow=True, arrowhead=0,
                           arrowwidth=0.6, arrowcolor="#999", ax=dx, ay=dy, xanchor="left" if dx > 0 else
                           "right" if dx < 0 else "center", font=dict(size=size, color="#333"))
    if ref is not None:
        fig.add_vline(x=float(reference), line=dict(color="#222222", dash="dash"))
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=reference_label,
                                 line=dict(color="#222222", dash="dash")))
    fig.update_xaxes(type="log", title=x_label, range=list(xr))
    fig.update_yaxes(type="log", title=y_label, range=list(yr))
    if out.any():  # a legend entry says what the triangles on the edges are
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="beyond the axis (value in brackets)",
                                 marker=dict(size=10, color="#999", symbol="triangle-up")))
    fig = style(fig, font_size=font_size, title=title, height=height)
    return fig.update_layout(legend=dict(title_text="family"))
