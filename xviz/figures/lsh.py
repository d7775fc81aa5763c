"""LSH and clustering figures: buckets per token, the matrix sorted by group with the missed top-k keys,
recall per query and over a grid, collision probability, 2-D projections, cluster sizes."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .attention import strip_figure
from .base import (HIT_COLOUR, MISSED_COLOUR, SEQUENTIAL, colour as _colour, labels, pool2d,
                   style, to_numpy)

MAX_MARKERS = 4000  # missed / kept markers drawn on a reordered matrix at most


# ----------------------------------------------------------------------------------------- LSH & clustering
def bucket_strip(buckets: Any, tokens: Sequence[str] | None = None, *, title: str = "bucket of every token, per round",
                 row_labels: Sequence[str] | None = None, font_size: int = 13, word: str = "bucket") -> go.Figure:
    """(R, N) ids: one row per hashing round (or ``row_labels``), one column per token, coloured by id."""
    b = to_numpy(buckets)
    b = b.reshape(-1, b.shape[-1])
    rows = list(row_labels) if row_labels is not None and len(row_labels) == b.shape[0] else \
        [f"round {r}" for r in range(b.shape[0])]
    return strip_figure(b, title=title, row_labels=rows, tokens=tokens, font_size=font_size, word=word)


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
                      method: str = "PCA", font_size: int = 13, word: str = "cluster") -> go.Figure:
    """Points in 2-D coloured by ``word`` id (cluster, bucket), one marker symbol per kind ("query", "key",
    "centroid"); the title names only the kinds drawn."""
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
                x=xy[sel, 0], y=xy[sel, 1], mode="markers", legendgroup=str(c), name=f"{word.split()[0]} {c}",
                showlegend=kind == "query" or not ((ids == c) & (kinds == "query")).any(),
                text=None if hover is None else [hover[i] for i in np.nonzero(sel)[0]],
                marker=dict(color=_colour(int(c)), symbol=symbols.get(kind, "circle"),
                            size=16 if kind == "centroid" else 7, line=dict(width=1, color="#222222")
                            if kind == "centroid" else None),
                hovertemplate=f"{kind}, {word.split()[0]} {c}" + ("<br>%{text}" if hover is not None else "") + "<extra></extra>"))
    fig.update_xaxes(title=f"{method} 1")
    fig.update_yaxes(title=f"{method} 2")
    # many clusters: the legend goes below the plot in rows, so it never covers the points
    fig.update_layout(legend=dict(orientation="h", y=-0.18, x=0, yanchor="top", font=dict(size=max(9, font_size - 2)),
                                  title_text=word))
    drawn = [name for kind, name in (("query", "queries (●)"), ("key", "keys (◇)"), ("centroid", "centroids (★)"))
             if kind in set(kinds.tolist())]
    what = ", ".join(drawn[:-1]) + " and " + drawn[-1] if len(drawn) > 1 else (drawn or ["points"])[0]
    return style(fig, font_size=font_size, title=f"{what[0].upper()}{what[1:]} in 2-D ({method})", height=620)


def cluster_sizes_figure(sizes: Mapping[str, Any], *, font_size: int = 13, word: str = "cluster") -> go.Figure:
    """Members per cluster, each bar in its cluster's colour (as in the projection and the strip); one bar
    group per kind (queries plain, keys hatched)."""
    fig = go.Figure()
    for i, (name, s) in enumerate(sizes.items()):
        s = to_numpy(s).reshape(-1)
        fig.add_trace(go.Bar(x=[str(c) for c in range(len(s))], y=s, name=name,
                             marker=dict(color=[_colour(c) for c in range(len(s))], pattern_shape="/" if i else ""),
                             hovertemplate=word + " %{x}: %{y} " + name + "<extra></extra>"))
    fig.update_layout(showlegend=len(sizes) > 1)
    fig.update_xaxes(type="category", title=word)
    fig.update_yaxes(title="members")
    fig.update_layout(barmode="group")
    return style(fig, font_size=font_size, title=f"{word[0].upper()}{word[1:]} sizes", height=340)
