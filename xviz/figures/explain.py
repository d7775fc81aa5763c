"""Plotly figures for the explanation pages (LSH & clustering, spectra, sweeps, real model, cost), as pure
functions of arrays and of the result objects of ``xviz.lsh_analysis``, ``xviz.spectra``, ``xviz.sweeps``
and ``xviz.bench``. Pooling, labels, styling and the categorical strip come from ``xviz.figures``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .attention import strip_figure
from .base import QUALITATIVE, SEQUENTIAL, labels, pool2d, pool_factor, style, to_numpy

MISSED_COLOUR = "#d62728"
HIT_COLOUR = "#2ca02c"
MAX_MARKERS = 4000  # missed / kept markers drawn on a reordered matrix at most


def _colour(i: int) -> str:
    return QUALITATIVE[i % len(QUALITATIVE)]


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# ----------------------------------------------------------------------------------------- LSH & clustering
def bucket_strip(buckets: Any, tokens: Sequence[str] | None = None, *, title: str = "bucket of every token, per round",
                 row_labels: Sequence[str] | None = None, font_size: int = 13) -> go.Figure:
    """(R, N) ids: one row per hashing round (or ``row_labels``), one column per token, coloured by id."""
    b = to_numpy(buckets)
    b = b.reshape(-1, b.shape[-1])
    rows = list(row_labels) if row_labels is not None and len(row_labels) == b.shape[0] else \
        [f"round {r}" for r in range(b.shape[0])]
    return strip_figure(b, title=title, row_labels=rows, tokens=tokens, font_size=font_size)


def reordered_matrix(a: Any, order: Any, groups_sorted: Any, *, col_order: Any = None, col_groups_sorted: Any = None,
                     tokens: Sequence[str] | None = None, chunk: int | None = None, top: Any = None, hit: Any = None,
                     counted: Any = None, group_word: str = "bucket", max_cells: int = 512, font_size: int = 13,
                     title: str = "exact attention, rows and columns sorted by bucket") -> go.Figure:
    """The (N, N) matrix ``a`` with rows in ``order`` (sorted slot → position) and columns in ``col_order``
    (default: the same); lines between groups (white; ``groups_sorted``: the group of each sorted row, and of
    each sorted column) and between chunks of ``chunk`` slots (orange, dashed); each query's true top-k keys
    (``top`` (N, k) positions) as markers, kept (``hit``) in green, missed in red. Mean-pooled above
    ``max_cells`` cells a side."""
    a = to_numpy(a).astype(np.float64)
    rord = to_numpy(order).astype(np.int64).reshape(-1)
    cord = rord if col_order is None else to_numpy(col_order).astype(np.int64).reshape(-1)
    rgrp = to_numpy(groups_sorted).reshape(-1)
    cgrp = rgrp if col_groups_sorted is None else to_numpy(col_groups_sorted).reshape(-1)
    n = a.shape[-1]
    p = pool2d(a[np.ix_(rord, cord)], max_cells, "mean")
    f = p.fr

    def axis(ordr):
        return [(f"slots {s}–{min(n, s + f) - 1}" if f > 1 else
                 f"slot {s}: {int(ordr[s])}" + (f" {str(tokens[int(ordr[s])])[:14]}" if tokens is not None and
                                                 int(ordr[s]) < len(tokens) else "")) for s in p.row_starts]

    ay, ax = axis(rord), axis(cord)
    custom = None
    if len(ax) <= 256:
        gy = [int(rgrp[s]) for s in p.row_starts]
        gx = [int(cgrp[s]) for s in p.col_starts]
        custom = np.array([[[y, x] for x in gx] for y in gy])
    hover = "query %{y}<br>key %{x}<br>weight %{z:.4g}"
    if custom is not None:
        hover += f"<br>{group_word}s %{{customdata[0]}} → %{{customdata[1]}}"
    fig = go.Figure(go.Heatmap(z=p.z, x=ax, y=ay, colorscale=SEQUENTIAL, customdata=custom,
                               colorbar=dict(title="weight"), hovertemplate=hover + "<extra></extra>"))
    shapes = []
    end = len(ax) - 0.5

    def vline(pos, **line):
        return dict(type="line", x0=pos, x1=pos, y0=-0.5, y1=end, line=line)

    def hline(pos, **line):
        return dict(type="line", y0=pos, y1=pos, x0=-0.5, x1=end, line=line)

    for c in np.nonzero(rgrp[1:] != rgrp[:-1])[0] + 1:  # first slot of each new group
        shapes.append(hline(c / f - 0.5, color="white", width=1))
    for c in np.nonzero(cgrp[1:] != cgrp[:-1])[0] + 1:
        shapes.append(vline(c / f - 0.5, color="white", width=1))
    if chunk and 0 < chunk < n:
        for c in range(chunk, n, chunk):
            shapes += [vline(c / f - 0.5, color="#ff7f0e", width=1, dash="dash"),
                       hline(c / f - 0.5, color="#ff7f0e", width=1, dash="dash")]
    fig.update_layout(shapes=shapes)
    if top is not None and hit is not None:
        top = to_numpy(top).astype(np.int64)
        hit = to_numpy(hit).astype(bool)
        cnt = np.ones_like(hit) if counted is None else to_numpy(counted).astype(bool)
        rslot, cslot = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        rslot[rord] = np.arange(n)
        cslot[cord] = np.arange(n)
        qi = np.repeat(np.arange(n)[:, None], top.shape[-1], axis=1)
        for kept, colour, name, symbol in ((True, HIT_COLOUR, "true top-k key, kept", "circle"),
                                           (False, MISSED_COLOUR, "true top-k key, missed", "x")):
            sel = cnt & (hit == kept)
            rows, cols = rslot[qi[sel]] // f, cslot[top[sel]] // f
            if rows.size > MAX_MARKERS:  # an even subsample keeps the picture, bounds the payload
                pick = np.linspace(0, rows.size - 1, MAX_MARKERS).astype(np.int64)
                rows, cols = rows[pick], cols[pick]
            fig.add_trace(go.Scatter(x=[ax[c] for c in cols], y=[ay[r] for r in rows], mode="markers", name=name,
                                     marker=dict(color=colour, symbol=symbol, size=6 if kept else 8,
                                                 line=dict(width=1, color="white") if kept else None),
                                     hovertemplate="query %{y}<br>key %{x}<br>" + name + "<extra></extra>"))
    fig.update_xaxes(type="category", showgrid=False, tickangle=-60, title="keys (sorted)",
                     categoryorder="array", categoryarray=ax)
    fig.update_yaxes(type="category", showgrid=False, autorange="reversed", title="queries (sorted)",
                     categoryorder="array", categoryarray=ay)
    fig.update_layout(legend=dict(orientation="h", y=-0.15))
    note = "" if f == 1 else f" (mean-pooled {f}×{f})"
    return style(fig, font_size=font_size, title=title + note, height=640)


def recall_per_query_figure(recall: Any, tokens: Sequence[str] | None = None, *, k: int = 8,
                            font_size: int = 13) -> go.Figure:
    r = to_numpy(recall).astype(np.float64).reshape(-1)
    x = labels(tokens, np.arange(len(r)), 1, len(r))
    fig = go.Figure(go.Bar(x=x, y=r, marker_color=[HIT_COLOUR if v >= 1 - 1e-9 else MISSED_COLOUR for v in r],
                           hovertemplate="query %{x}<br>recall %{y:.0%}<extra></extra>"))
    fig.update_xaxes(type="category", tickangle=-60, showticklabels=len(r) <= 128)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title=f"top-{k} recall")
    return style(fig, font_size=font_size, title=f"share of each query's true top-{k} keys kept "
                                                 f"(mean {r.mean():.1%})", height=300)


def collision_figure(theta: Any, p: Any, *, rounds: Sequence[int] = (1,), buckets: int = 8, measured: Any = None,
                     on_input: Any = None, font_size: int = 13) -> go.Figure:
    """Probability that two vectors at an angle share a bucket: theory 1 − (1 − p(θ))^r for each number of
    rounds r; ``measured`` (a CollisionCurve: one round, independent pairs) with ±2 standard errors;
    ``on_input`` (InputCollisions: this input's pairs, all rounds of the run) as open circles."""
    deg = np.degrees(to_numpy(theta).astype(np.float64))
    p = to_numpy(p).astype(np.float64)
    fig = go.Figure()
    for i, r in enumerate(sorted(set(int(x) for x in rounds))):
        fig.add_trace(go.Scatter(x=deg, y=1 - (1 - p) ** r, mode="lines", name=f"theory, {r} round{'s' * (r > 1)}",
                                 line=dict(color=_colour(i), width=2),
                                 hovertemplate="%{x:.0f}°: %{y:.3f}<extra>theory, " + str(r) + " rounds</extra>"))
    if measured is not None:
        fig.add_trace(go.Scatter(
            x=np.degrees(measured.theta), y=measured.measured, mode="markers", name=f"measured, 1 round "
            f"({measured.pairs} random pairs each)", marker=dict(color="#222222", size=8),
            error_y=dict(type="data", array=2 * measured.stderr, visible=True),
            hovertemplate="%{x:.0f}°: %{y:.3f}<extra>measured</extra>"))
    if on_input is not None:
        ok = on_input.count > 0
        size = 6 + 10 * np.sqrt(on_input.count[ok] / max(1.0, on_input.count.max()))
        fig.add_trace(go.Scatter(
            x=np.degrees(on_input.centers[ok]), y=on_input.rate[ok], mode="markers", name="this input (per round)",
            marker=dict(symbol="circle-open", size=size, color="#9467bd", line=dict(width=2)),
            customdata=on_input.count[ok],
            hovertemplate="%{x:.0f}°: %{y:.3f} over %{customdata:.0f} pairs<extra>this input</extra>"))
    fig.update_xaxes(title="angle between the two vectors (degrees)", range=[0, 180], dtick=30)
    fig.update_yaxes(title="P(same bucket)", range=[0, 1.02])
    fig.update_layout(legend=dict(orientation="h", y=-0.2))
    return style(fig, font_size=font_size, title=f"Collision probability against angle, {buckets} buckets", height=480)


def recall_grid_figure(grid: Any, *, font_size: int = 13) -> go.Figure:
    """Mean top-k recall over a grid of two parameters (a RecallGrid), annotated."""
    z = np.asarray(grid.recall, dtype=np.float64)
    fig = go.Figure(go.Heatmap(z=z, x=[str(c) for c in grid.cols], y=[str(r) for r in grid.rows], zmin=0, zmax=1,
                               colorscale=SEQUENTIAL, texttemplate="%{z:.2f}", colorbar=dict(title="recall"),
                               hovertemplate=grid.row_param + " %{y}<br>" + grid.col_param + " %{x}<br>recall %{z:.3f}"
                                             "<extra></extra>"))
    fig.update_xaxes(type="category", title=grid.col_param)
    fig.update_yaxes(type="category", title=grid.row_param)
    return style(fig, font_size=font_size, title=f"Recall of the true top-{grid.k} keys", height=120 + 60 * len(grid.rows))


def projection_figure(xy: Any, ids: Any, kinds: Sequence[str], *, hover: Sequence[str] | None = None,
                      method: str = "PCA", font_size: int = 13) -> go.Figure:
    """Points in 2-D coloured by cluster id, one marker symbol per kind ("query", "key", "centroid")."""
    xy = to_numpy(xy).astype(np.float64)
    ids = to_numpy(ids).astype(np.int64).reshape(-1)
    kinds = np.asarray(list(kinds))
    symbols = {"query": "circle", "key": "diamond-open", "centroid": "star"}
    fig = go.Figure()
    for c in np.unique(ids):
        for kind in ("query", "key", "centroid"):
            sel = (ids == c) & (kinds == kind)
            if not sel.any():
                continue
            fig.add_trace(go.Scatter(
                x=xy[sel, 0], y=xy[sel, 1], mode="markers", legendgroup=str(c), name=f"cluster {c}",
                showlegend=kind == "query" or not ((ids == c) & (kinds == "query")).any(),
                text=None if hover is None else [hover[i] for i in np.nonzero(sel)[0]],
                marker=dict(color=_colour(int(c)), symbol=symbols.get(kind, "circle"),
                            size=16 if kind == "centroid" else 7, line=dict(width=1, color="#222222")
                            if kind == "centroid" else None),
                hovertemplate=f"{kind}, cluster {c}" + ("<br>%{text}" if hover is not None else "") + "<extra></extra>"))
    fig.update_xaxes(title=f"{method} 1")
    fig.update_yaxes(title=f"{method} 2")
    # many clusters: the legend goes below the plot in rows, so it never covers the points
    fig.update_layout(legend=dict(orientation="h", y=-0.18, x=0, yanchor="top", font=dict(size=max(9, font_size - 2))))
    return style(fig, font_size=font_size, title=f"Queries (●), keys (◇) and centroids (★) in 2-D ({method})",
                 height=620)


def cluster_sizes_figure(sizes: Mapping[str, Any], *, font_size: int = 13) -> go.Figure:
    """Members per cluster, one bar group per kind (queries, keys)."""
    fig = go.Figure()
    for i, (name, s) in enumerate(sizes.items()):
        s = to_numpy(s).reshape(-1)
        fig.add_trace(go.Bar(x=[str(c) for c in range(len(s))], y=s, name=name, marker_color=_colour(i + 3),
                             hovertemplate="cluster %{x}: %{y} " + name + "<extra></extra>"))
    fig.update_xaxes(type="category", title="cluster")
    fig.update_yaxes(title="members")
    fig.update_layout(barmode="group")
    return style(fig, font_size=font_size, title="Cluster sizes", height=340)


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


# ----------------------------------------------------------------------------------------- sweeps
def sweep_figure(series: Mapping[str, Sequence[Any]], *, x_label: str, y_label: str, log_x: bool = True,
                 log_y: bool = True, total: int | None = None, font_size: int = 13, title: str = "") -> go.Figure:
    """One line per series through the mean over seeds, a band of ± one standard deviation, markers on the
    points computed so far (``series``: title -> Points sorted by x, see ``xviz.sweeps.collect``)."""
    fig = go.Figure()
    for i, (name, pts) in enumerate(series.items()):
        colour = _colour(i)
        xs = np.array([p.x for p in pts], dtype=np.float64)
        m = np.array([p.mean for p in pts], dtype=np.float64)
        s = np.array([p.std for p in pts], dtype=np.float64)
        ok = np.isfinite(m)
        if log_y:
            ok &= m > 0
        if log_x:
            ok &= xs > 0
        xs, m, s = xs[ok], m[ok], np.nan_to_num(s[ok])
        if xs.size > 1 and np.any(s > 0):
            lo = np.maximum(m - s, m * 1e-3) if log_y else m - s
            fig.add_trace(go.Scatter(x=np.concatenate([xs, xs[::-1]]), y=np.concatenate([m + s, lo[::-1]]),
                                     fill="toself", fillcolor=_rgba(colour, 0.18), line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, legendgroup=name))
        fig.add_trace(go.Scatter(x=xs, y=m, mode="lines+markers", name=name, legendgroup=name,
                                 line=dict(color=colour), marker=dict(size=8),
                                 customdata=np.stack([s, [len(p.values) for p, o in zip(pts, ok) if o]], 1)
                                 if xs.size else None,
                                 hovertemplate="x = %{x:.4g}<br>mean %{y:.4g} ± %{customdata[0]:.2g} "
                                               "(%{customdata[1]} seeds)<extra>" + name + "</extra>"))
    fig.update_xaxes(type="log" if log_x else "linear", title=x_label)
    fig.update_yaxes(type="log" if log_y else "linear", title=y_label, exponentformat="power")
    done = sum(len(v) for v in series.values())
    if total:
        title = f"{title} ({done}/{total} points)" if done < total else title
    fig.update_layout(legend=dict(orientation="h", y=-0.2))
    return style(fig, font_size=font_size, title=title, height=480)


# ----------------------------------------------------------------------------------------- real model
def thumbnail_grid(maps: Sequence[Any], tokens: Sequence[str] | None = None, *, max_cells: int = 32,
                   font_size: int = 13, selected: tuple[int, int] | None = None) -> go.Figure:
    """A layer × head grid of attention maps (``maps``: one (H, N, N) per layer), each mean-pooled to at most
    ``max_cells`` a side, on one colour scale [0, max]; hover names the layer, head, query and key tokens."""
    mats = [to_numpy(m).astype(np.float64) for m in maps]
    L, H = len(mats), mats[0].shape[0]
    n = mats[0].shape[-1]
    fig = make_subplots(rows=L, cols=H, horizontal_spacing=0.004, vertical_spacing=0.01,
                        row_titles=[f"L{i}" for i in range(L)], column_titles=[f"h{j}" for j in range(H)])
    f = pool_factor(n, max_cells)
    lab = labels(tokens, np.arange(0, n, f), f, n)
    top = max(float(m.max()) for m in mats) if mats else 1.0
    for li, m in enumerate(mats):
        for h in range(H):
            p = pool2d(m[h], max_cells, "mean")
            fig.add_trace(go.Heatmap(z=p.z, x=lab, y=lab, coloraxis="coloraxis",
                                     hovertemplate=f"layer {li}, head {h}<br>query %{{y}}<br>key %{{x}}<br>"
                                                   "%{z:.3f}<extra></extra>"), row=li + 1, col=h + 1)
    fig.update_xaxes(showticklabels=False, showgrid=False, type="category")
    fig.update_yaxes(showticklabels=False, showgrid=False, type="category", autorange="reversed")
    if selected is not None:
        li, h = selected
        if 0 <= li < L and 0 <= h < H:
            idx = li * H + h + 1
            sfx = "" if idx == 1 else str(idx)
            fig.add_shape(type="rect", xref=f"x{sfx} domain", yref=f"y{sfx} domain", x0=0, x1=1, y0=0, y1=1,
                          line=dict(color=MISSED_COLOUR, width=3))
    fig.update_layout(coloraxis=dict(colorscale=SEQUENTIAL, cmin=0, cmax=top, colorbar=dict(title="weight")))
    note = "" if f == 1 else f" (mean-pooled by {f})"
    fig.update_annotations(font_size=max(9, font_size - 3))
    style(fig, font_size=font_size, title=f"Attention of every layer and head{note}",
          height=int(max(300, min(1400, 70 * L + 60))))
    fig.update_annotations(font_size=max(9, font_size - 3))
    return fig


# ----------------------------------------------------------------------------------------- cost
def cost_figures(rows: Sequence[Any], *, font_size: int = 13, device: str = "cpu") -> list[go.Figure]:
    """Measured seconds, measured peak memory and theoretical FLOPs against N, one line per variant
    (``rows``: xviz.bench.Row), log-log."""
    by: dict[str, list] = {}
    for r in rows:
        by.setdefault(r.variant, []).append(r)
    out = []
    for field_, label, title in (("seconds", "seconds (median after warm-up)", f"Forward time on {device}"),
                                 ("peak_bytes", "peak memory (MiB)", f"Peak memory on {device}"),
                                 ("theory_flops", "FLOPs", "Theoretical FLOPs")):
        fig = go.Figure()
        for i, (name, rs) in enumerate(by.items()):
            rs = sorted(rs, key=lambda r: r.n)
            xs = [r.n for r in rs if getattr(r, field_)]
            ys = [getattr(r, field_) / (2 ** 20 if field_ == "peak_bytes" else 1) for r in rs if getattr(r, field_)]
            if not xs:
                continue
            dash = "dash" if name in ("naive exact", "fused exact") else None
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name,
                                     line=dict(color=_colour(i), dash=dash),
                                     hovertemplate="N = %{x}<br>%{y:.4g}<extra>" + name + "</extra>"))
        fig.update_xaxes(type="log", title="N (tokens)")
        fig.update_yaxes(type="log", title=label, exponentformat="power")
        fig.update_layout(legend=dict(orientation="h", y=-0.25))
        out.append(style(fig, font_size=font_size, title=title, height=420))
    return out


def speedup_table(rows: Sequence[Any], ns: Sequence[int] = (1024, 2048, 3072, 4096),
                  baseline: str = "naive exact") -> list[dict]:
    """The Long Range Arena table, measured: per variant, speed-up over ``baseline`` at each N (baseline time /
    variant time) and peak memory at the largest N, absolute and relative to the baseline."""
    at = {(r.variant, r.n): r for r in rows}
    names = []
    for r in rows:
        if r.variant not in names:
            names.append(r.variant)
    last = max(ns)
    out = []
    for name in names:
        row: dict[str, Any] = {"variant": name}
        for n in ns:
            r, b = at.get((name, n)), at.get((baseline, n))
            row[f"speed-up {n // 1024}K" if n % 1024 == 0 else f"speed-up {n}"] = (
                b.seconds / r.seconds if r and b and r.seconds and b.seconds else float("nan"))
        r, b = at.get((name, last)), at.get((baseline, last))
        row[f"peak MiB at {last}"] = r.peak_bytes / 2 ** 20 if r and r.peak_bytes is not None else float("nan")
        row[f"memory vs {baseline}"] = (r.peak_bytes / b.peak_bytes if r and b and r.peak_bytes is not None
                                        and b.peak_bytes else float("nan"))
        errs = [at[(name, n)].error for n in ns if (name, n) in at and at[(name, n)].error]
        row["note"] = errs[0] if errs else ""
        out.append(row)
    return out
