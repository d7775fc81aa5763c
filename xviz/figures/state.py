"""Figures of a recurrence's state and of how far back attention reads (``xviz.analysis.state``).

Pure functions of arrays (heads first, as in ``StateSummary``): one line per head over the tokens
(mean-pooled to ``max_cells`` points), the effective decay per head as bars, the fast-weight
matrix as a heatmap on a diverging scale centred at 0 (the state is signed), and the read-back
distance per query with each head's decay prediction log τ / log γ dashed beside it.
``summary_figures`` draws everything a ``StateSummary`` holds.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go

from .base import DIVERGING, MAX_CELLS, QUALITATIVE, labels, pool1d, pool2d, pool_factor, style, to_numpy

MAX_HEADS = 16  # lines beyond this many heads are unreadable


def _rows(values: Any) -> np.ndarray:
    a = to_numpy(values).astype(np.float64)
    return a[None] if a.ndim == 1 else a.reshape(-1, a.shape[-1])


def _head_lines(values: Any, *, tokens: Sequence[str] | None, max_cells: int, y_title: str,
                hover: str) -> tuple[go.Figure, int]:
    """One line per head over positions; returns the figure and the pooling factor."""
    a = _rows(values)
    f = pool_factor(a.shape[-1], max_cells)
    fig = go.Figure()
    for h, row in enumerate(a[:MAX_HEADS]):
        y, starts = pool1d(row, max_cells)
        fig.add_trace(go.Scatter(x=starts, y=y, mode="lines+markers" if len(y) <= 128 else "lines", name=f"head {h}",
                                 line=dict(color=QUALITATIVE[h % len(QUALITATIVE)]),
                                 text=labels(tokens, starts, f, a.shape[-1]),
                                 hovertemplate="token %{text}<br>" + hover + "<extra>head " + str(h) + "</extra>"))
    fig.update_xaxes(title="token t")
    fig.update_yaxes(title=y_title)
    return fig, f


def _pooled(f: int) -> str:
    return "" if f == 1 else f" (mean-pooled by {f})"


def state_norm_figure(norms: Any, tokens: Sequence[str] | None = None, *, max_cells: int = MAX_CELLS,
                      font_size: int = 13, log_y: bool | None = None) -> go.Figure:
    """‖S_t‖_F over t, one line per head ((H, N) or (N,))."""
    fig, f = _head_lines(norms, tokens=tokens, max_cells=max_cells, y_title="‖S_t‖_F", hover="‖S_t‖ = %{y:.4g}")
    a = _rows(norms)
    if log_y or (log_y is None and np.all(a > 0) and a.max() / max(a.min(), 1e-300) > 1e3):
        fig.update_yaxes(type="log")
    return style(fig, font_size=font_size, title="State norm over the sequence" + _pooled(f), height=340)


def decay_steps_figure(decay_steps: Any, tokens: Sequence[str] | None = None, *, max_cells: int = MAX_CELLS,
                       font_size: int = 13) -> go.Figure:
    """The per-step decay a_t, one line per head ((H, N)): flat for fixed decays."""
    fig, f = _head_lines(decay_steps, tokens=tokens, max_cells=max_cells, y_title="a_t", hover="a_t = %{y:.5g}")
    return style(fig, font_size=font_size, title="Decay per token" + _pooled(f), height=320)


def decay_figure(decay: Any, reach: Any = None, *, font_size: int = 13) -> go.Figure:
    """Effective decay γ per head as dots, each labelled with its reach (log τ / log γ: tokens until a
    weight falls to 1 %) when ``reach`` is given. Dots, not bars: decays crowd just below 1, and a bar
    would need its axis from 0 (where they all look alike) or a cut axis (where lengths lie)."""
    g = to_numpy(decay).astype(np.float64).reshape(-1)
    r = None if reach is None else to_numpy(reach).astype(np.float64).reshape(-1)
    text = [("no decay" if not np.isfinite(x) else f"{x:.1f} tokens to 1 %") for x in r] if r is not None else None
    fig = go.Figure(go.Scatter(x=[f"head {h}" for h in range(len(g))], y=g, text=text, mode="markers+text",
                               textposition="top center", marker=dict(color="#8c564b", size=14), cliponaxis=False,
                               hovertemplate="%{x}<br>γ = %{y:.6g}" + ("<br>%{text}" if text else "") + "<extra></extra>"))
    low = float(g.min(initial=1.0))
    fig.update_yaxes(title="γ (geometric mean of a_t)", range=[max(0.0, low - 0.25 * (1 - low) - 1e-3), 1.0])
    fig.update_xaxes(type="category")
    return style(fig, font_size=font_size, title="Effective decay per head", height=320)


def state_figure(state: Any, *, head: int = 0, step: int | None = None, max_cells: int = MAX_CELLS,
                 font_size: int = 13) -> go.Figure:
    """The fast-weight matrix S_t (d_k × d_v; (H, d_k, d_v) picks ``head``) on a diverging scale
    symmetric about 0."""
    a = to_numpy(state).astype(np.float64)
    if a.ndim == 3:
        a = a[min(head, a.shape[0] - 1)]
    p = pool2d(a, max_cells, "mean")
    m = float(max(np.abs(p.z).max(initial=0.0), 1e-12))
    fig = go.Figure(go.Heatmap(z=p.z, x=p.col_starts, y=p.row_starts, colorscale=DIVERGING, zmin=-m, zmax=m, zmid=0.0,
                               colorbar=dict(title="weight"),
                               hovertemplate="key dim %{y}<br>value dim %{x}<br>%{z:.4g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="key dimension")
    fig.update_xaxes(title="value dimension")
    when = "" if step is None else f" after token {step}"
    note = "" if p.fr == p.fc == 1 else f" (mean-pooled {p.fr}×{p.fc})"
    return style(fig, font_size=font_size, title=f"Fast-weight state S, head {head}{when}{note}", height=420)


def read_back_figure(distances: Any, reach: Any = None, tokens: Sequence[str] | None = None, *,
                     threshold: float = 0.01, max_cells: int = MAX_CELLS, font_size: int = 13) -> go.Figure:
    """How far back each query reads ((H, N) from ``read_back``), one line per head; a dashed line
    per head at its decay's prediction ``reach`` (log τ / log γ) where that is finite and in view."""
    fig, f = _head_lines(distances, tokens=tokens, max_cells=max_cells, y_title="tokens back",
                         hover="reads %{y:.0f} tokens back")
    n = _rows(distances).shape[-1]
    if reach is not None:
        for h, r in enumerate(to_numpy(reach).astype(np.float64).reshape(-1)[:MAX_HEADS]):
            if np.isfinite(r) and r < n:
                fig.add_hline(y=float(np.floor(r)), line=dict(dash="dash", color=QUALITATIVE[h % len(QUALITATIVE)],
                                                              width=1))
    title = f"How far back each query reads (weights ≥ {threshold:.0%} of the row maximum)"
    return style(fig, font_size=font_size, title=title + _pooled(f), height=360)


def summary_figures(s: Any, tokens: Sequence[str] | None = None, *, head: int = 0, font_size: int = 13) -> list[go.Figure]:
    """The figures for a ``StateSummary``: state, its norm, the decays (per token only when they vary),
    and the read-back distance — whichever it holds."""
    figs = []
    if s.state is not None:
        figs.append(state_figure(s.state, head=head, step=s.step, font_size=font_size))
    if s.state_norm is not None:
        figs.append(state_norm_figure(s.state_norm, tokens, font_size=font_size))
    if s.decay is not None:
        figs.append(decay_figure(s.decay, s.decay_reach, font_size=font_size))
    if s.decay_steps is not None and np.ptp(s.decay_steps, axis=-1).max(initial=0.0) > 0:
        figs.append(decay_steps_figure(s.decay_steps, tokens, font_size=font_size))
    if s.read_back is not None:
        figs.append(read_back_figure(s.read_back, s.decay_reach, tokens, threshold=s.threshold, font_size=font_size))
    return figs
