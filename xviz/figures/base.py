"""What every figure shares: pooling, labels, styling, colour scales, export.

Large matrices are pooled on the server before they are drawn: an N×N map becomes at most
``max_cells`` × ``max_cells`` cells (mean-pooling for weights and differences, so a cell shows the
block's average; max-pooling for masks, so no nonzero disappears), sent as float32 (masks as
uint8). ``window=(r0, r1, c0, c1)`` cuts a window out first, so a zoomed window no larger than
``max_cells`` is drawn at full resolution. Axis labels are "index token" (or "start–stop" for a
pooled block), so hovering a cell names its query and key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

# A chart must stay under 4 MB. float32 cells cost 16/3 bytes each once base64-encoded, so a weight
# heatmap gets at most 832² cells (3.7 MB) and three panels side by side 464² each (3.4 MB); masks
# travel as uint8 (4/3 byte a cell) and keep the full 1024².
MAX_CELLS = 832
MASK_CELLS = 1024
ARTIFACT_CELLS = 512  # a variant's maps beside the linked view (832² cells drew slower, no clearer at its width)
SIDE_BY_SIDE_CELLS = 464
DIVERGING = "RdBu_r"  # differences (approx − exact), and any signed quantity that is not a weight
SIGNED_WEIGHTS = "PuOr_r"  # signed weights: diverging too, but never mistaken for a difference map
SEQUENTIAL = "Viridis"
MASK_SCALE = [[0.0, "#f4f4f4"], [1.0, "#1f3a93"]]
FAMILY_COLOURS = {
    "exact": "#222222", "fixed pattern": "#1f77b4", "combined pattern": "#17becf", "learnable pattern": "#2ca02c",
    "low rank": "#d62728", "kernel": "#ff7f0e", "memory/downsampling": "#9467bd", "recurrence": "#8c564b",
    "prior": "#e377c2",
}
MISSED_COLOUR = "#d62728"
HIT_COLOUR = "#2ca02c"


def colour(i: int) -> str:
    """The i-th of the qualitative colours (heads, clusters, policies), cycling."""
    return QUALITATIVE[i % len(QUALITATIVE)]


def rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# 24 distinct colours (plotly's Dark24): heads, clusters and buckets up to 24 never share one.
QUALITATIVE = ["#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86", "#EB663B",
               "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE", "#862A16", "#A777F1",
               "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038"]


# ----------------------------------------------------------------------------------------- pooling
def to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def pool_factor(n: int, max_cells: int = MAX_CELLS) -> int:
    """Smallest integer f with ceil(n / f) ≤ max_cells."""
    return max(1, math.ceil(n / max(1, int(max_cells))))


@dataclass
class Pooled:
    """A pooled 2-D array. z: (ceil(R/fr), ceil(C/fc)); row_starts/col_starts: each cell's first index."""

    z: np.ndarray
    fr: int
    fc: int
    row_starts: np.ndarray
    col_starts: np.ndarray
    rows: int
    cols: int


def _pool_axis(x: np.ndarray, f: int, axis: int, how: str) -> np.ndarray:
    if f == 1:
        return x
    n = x.shape[axis]
    cells = math.ceil(n / f)
    pad = cells * f - n
    if how == "max":
        fill = 0 if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer) else -np.inf
        if pad:
            widths = [(0, 0)] * x.ndim
            widths[axis] = (0, pad)
            x = np.pad(x, widths, constant_values=fill)
        shape = x.shape[:axis] + (cells, f) + x.shape[axis + 1:]
        return x.reshape(shape).max(axis=axis + 1)
    # mean over the real cells of each block (the last block may be shorter); float64 sums without a
    # float64 copy of the whole array (a 4,096² map is 16 M cells)
    acc = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
    if pad:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, pad)
        acc = np.pad(acc, widths, constant_values=0.0)
    shape = acc.shape[:axis] + (cells, f) + acc.shape[axis + 1:]
    sums = acc.reshape(shape).sum(axis=axis + 1, dtype=np.float64)
    counts = np.full(cells, f, dtype=np.float64)
    counts[-1] = n - (cells - 1) * f
    bshape = [1] * sums.ndim
    bshape[axis] = cells
    return sums / counts.reshape(bshape)


def pool2d(a: Any, max_cells: int = MAX_CELLS, how: str = "mean") -> Pooled:
    """Pool a 2-D array to at most ``max_cells`` cells a side.

    how="mean": each cell is its block's mean (float32). how="max": each cell is its block's max
    (a bool/integer mask stays uint8, so a block with any nonzero shows as nonzero)."""
    if how not in ("mean", "max"):
        raise ValueError(f"how must be 'mean' or 'max', got {how!r}.")
    x = to_numpy(a)
    if x.ndim != 2:
        raise ValueError(f"pool2d needs a 2-D array, got shape {x.shape}.")
    r, c = x.shape
    fr, fc = pool_factor(r, max_cells), pool_factor(c, max_cells)
    if how == "max" and (x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer)):
        x = x.astype(np.uint8) if x.dtype == np.bool_ else x
        z = _pool_axis(_pool_axis(x, fr, 0, "max"), fc, 1, "max")
        z = z.astype(np.uint8) if z.max(initial=0) <= 255 and z.min(initial=0) >= 0 else z.astype(np.float32)
    else:
        z = _pool_axis(_pool_axis(x, fr, 0, how), fc, 1, how).astype(np.float32)
    return Pooled(z=np.ascontiguousarray(z), fr=fr, fc=fc, row_starts=np.arange(0, r, fr),
                  col_starts=np.arange(0, c, fc), rows=r, cols=c)


def pool1d(x: Any, max_cells: int = MAX_CELLS, how: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Pool the last axis of a 1-D or 2-D array; returns (pooled, starts)."""
    a = to_numpy(x)
    n = a.shape[-1]
    f = pool_factor(n, max_cells)
    if how == "first":
        return np.ascontiguousarray(a[..., ::f]), np.arange(0, n, f)
    return _pool_axis(a, f, a.ndim - 1, how).astype(np.float32), np.arange(0, n, f)


def labels(tokens: Sequence[str] | None, starts: np.ndarray, f: int, n: int, offset: int = 0) -> list[str]:
    """Unique axis labels: "i token" for single positions, "i–j token…" for pooled blocks."""
    out = []
    for s in starts:
        s = int(s)
        e = min(n, s + f) - 1
        tok = ""
        if tokens is not None and offset + s < len(tokens):
            tok = " " + str(tokens[offset + s])[:16]
        if e > s:
            out.append(f"{offset + s}–{offset + e}{tok}…")
        else:
            out.append(f"{offset + s}{tok}")
    return out


def crop_window(a: np.ndarray, window: tuple[int, int, int, int] | None) -> tuple[np.ndarray, int, int]:
    if window is None:
        return a, 0, 0
    r0, r1, c0, c1 = (int(w) for w in window)
    r0, c0 = max(0, r0), max(0, c0)
    r1, c1 = min(a.shape[0], max(r1, r0 + 1)), min(a.shape[1], max(c1, c0 + 1))
    return a[r0:r1, c0:c1], r0, c0


def first_2d(a: Any) -> np.ndarray:
    x = to_numpy(a)
    while x.ndim > 2:
        x = x[0]
    if x.ndim == 1:
        x = x[None]
    return x


# ----------------------------------------------------------------------------------------- styling
def style(fig: go.Figure, *, font_size: int = 13, title: str | None = None, height: int | None = None) -> go.Figure:
    fig.update_layout(font=dict(size=font_size), legend=dict(font=dict(size=font_size)),
                      margin=dict(l=10, r=10, t=50 + 2 * (font_size - 13) if title else 30, b=10))
    # automargin: long tick labels (tokens) push the plot area in instead of being clipped (in the
    # app and in the standalone HTML alike)
    fig.update_xaxes(tickfont=dict(size=max(9, font_size - 2)), title_font=dict(size=font_size), automargin=True)
    fig.update_yaxes(tickfont=dict(size=max(9, font_size - 2)), title_font=dict(size=font_size), automargin=True)
    fig.update_annotations(font_size=font_size)
    if title is not None:
        fig.update_layout(title=dict(text=title, font=dict(size=font_size + 3)))
    if height is not None:
        fig.update_layout(height=height)
    for tr in fig.data:  # cells travel as float32 at most: half the bytes of float64, no visible difference
        z = getattr(tr, "z", None)
        if isinstance(z, np.ndarray) and z.dtype == np.float64:
            tr.z = None  # plotly skips an assignment of equal values, so clear it first
            tr.z = z.astype(np.float32)
    return fig


def chart_config(image_format: str = "png", filename: str = "xviz", scale: int = 3) -> dict:
    """Plotly config: the toolbar's camera saves ``image_format`` (png / svg) at ``scale``×."""
    fmt = image_format if image_format in ("png", "svg", "jpeg", "webp") else "png"
    return {"displaylogo": False,
            "toImageButtonOptions": {"format": fmt, "scale": int(scale), "filename": filename}}


def to_html(fig: go.Figure) -> bytes:
    """A standalone HTML file (plotly.js inlined: opens offline)."""
    return fig.to_html(include_plotlyjs=True, full_html=True).encode("utf-8")


def payload_bytes(fig: go.Figure) -> int:
    """Size of the JSON spec the browser receives for ``fig``."""
    return len(fig.to_json())


# ----------------------------------------------------------------------------------------- heatmaps
