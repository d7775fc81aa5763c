"""Decoding figures: the cache as a token strip per head, one step's attention (kept vs full), the
kept mass / output error / cache bytes over steps for several policies, and error against budget.

Pure functions of ``xviz.decode`` results. Strips are max-pooled to ``MASK_CELLS`` positions (a
cell shows the strongest state inside it: sink over kept over evicted), curves mean-pooled to
``CURVE_POINTS`` steps, so every chart stays far below 4 MB at N = 64K.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .attention import query_lines
from .base import MASK_CELLS, QUALITATIVE, pool1d, pool_factor, style, to_numpy

CURVE_POINTS = 1024
EVICTED, KEPT, SINK = 0, 1, 2
STATE_COLOURS = ("#e6e6e6", "#1f3a93", "#d62728")  # evicted / kept / sink


def _state_scale() -> list:
    scale = []
    for i, colour in enumerate(STATE_COLOURS):
        scale += [[i / 3, colour], [(i + 1) / 3, colour]]
    return scale


def cache_strip(result, step: int, *, batch: int = 0, marks: Mapping[str, int] | None = None,
                max_cells: int = MASK_CELLS, font_size: int = 13) -> go.Figure:
    """Heads × positions 0 … step at one step: kept, evicted (not read, for a reads-only policy)
    and sink positions in three colours. ``marks`` draws labelled lines (say {"needle": 40})."""
    kept = to_numpy(result.kept_at(step)[batch]).astype(np.uint8)  # (H, step + 1)
    state = kept.copy()
    state[:, :result.sinks] *= SINK
    f = pool_factor(state.shape[-1], max_cells)
    z, starts = pool1d(state, max_cells, how="max") if f > 1 else (state, np.arange(state.shape[-1]))
    heads = [f"head {h}" for h in range(state.shape[0])]
    gone = "not read" if result.reads_only else "evicted"
    fig = go.Figure(go.Heatmap(
        z=z.astype(np.uint8), x=starts, y=heads, colorscale=_state_scale(), zmin=-0.5, zmax=2.5,
        colorbar=dict(tickvals=[EVICTED, KEPT, SINK], ticktext=[gone, "kept", "sink"], thickness=12, len=0.9),
        hovertemplate="%{y}<br>position %{x}<br>state %{z} (0 " + gone + ", 1 kept, 2 sink)<extra></extra>"))
    for i, (name, pos) in enumerate((marks or {}).items()):
        if 0 <= pos <= step:
            fig.add_vline(x=pos, line=dict(color=QUALITATIVE[(i + 1) % len(QUALITATIVE)], dash="dot", width=2),
                          annotation_text=name, annotation_position="top")
    fig.update_xaxes(title="position", range=[-0.5, state.shape[-1] - 0.5])
    fig.update_yaxes(type="category", autorange="reversed")
    share = kept.sum(-1).mean() / kept.shape[-1]
    note = "" if f == 1 else f" (max-pooled by {f})"
    title = f"{result.label}: the cache at step {step}, {share:.0%} of {kept.shape[-1]} positions kept{note}"
    return style(fig, font_size=font_size, title=title, height=150 + 24 * state.shape[0])


def step_attention(result, step: int, *, head: int = 0, batch: int = 0, tokens: Sequence[str] | None = None,
                   max_cells: int = MASK_CELLS, font_size: int = 13) -> go.Figure:
    """The query at ``step``: full causal attention over keys 0 … step against the policy's softmax
    over its kept keys (0 where evicted)."""
    full, policy = result.weights_at(step)
    fig = query_lines(full[batch, head], policy[batch, head], tokens, query=step,
                      names=("full cache", result.label), max_cells=max_cells, font_size=font_size)
    i = step - result.prefill
    mass, err = float(result.mass[batch, head, i]), float(result.error[batch, head, i])
    f = pool_factor(step + 1, max_cells)
    note = "" if f == 1 else f" (mean-pooled by {f})"
    return style(fig, font_size=font_size, title=f"{result.label} at step {step}, head {head}: kept mass "
                                                 f"{mass:.3f}, output error {err:.3g}{note}")


def _pooled_steps(values: torch.Tensor, steps: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    y, starts = pool1d(to_numpy(values).astype(np.float64), max_points)
    return steps[starts], y


def decode_curves(results: Sequence, *, max_points: int = CURVE_POINTS, font_size: int = 13) -> go.Figure:
    """Kept mass, output error (mean over batch and heads) and cache bytes (all heads) over the
    steps, one colour per policy; a reads-only policy also shows what it holds (dotted)."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("kept share of full attention mass", "relative output error",
                                        "KV cache (MiB, all heads)"))
    for i, r in enumerate(results):
        colour = QUALITATIVE[i % len(QUALITATIVE)]
        steps = to_numpy(r.steps)
        series = ((r.mass.double().mean((0, 1)), 1, "solid"), (r.error.double().mean((0, 1)), 2, "solid"),
                  (r.cache_bytes.double().sum((0, 1)) / 2**20, 3, "solid"))
        if r.reads_only:
            series += ((r.resident_bytes.double().sum((0, 1)) / 2**20, 3, "dot"),)
        for values, row, dash in series:
            x, y = _pooled_steps(values, steps, max_points)
            fig.add_trace(go.Scatter(x=x, y=y.astype(np.float32), mode="lines", name=r.label, legendgroup=r.label,
                                     showlegend=row == 1, line=dict(color=colour, dash=dash),
                                     hovertemplate="step %{x}: %{y:.4g}<extra>" + r.label + "</extra>"),
                          row=row, col=1)
    fig.update_xaxes(title="step (position decoded)", row=3, col=1)
    budget = results[0].budget if results else ""
    return style(fig, font_size=font_size, title=f"Decoding at budget {budget}", height=720)


def budget_sweep_figure(rows: Sequence[Mapping[str, Any]], *, metric: str = "mean_error", log_y: bool = False,
                        font_size: int = 13) -> go.Figure:
    """Error (or another row field) against the budget, one line per policy; budgets a policy
    cannot run at are gaps."""
    fig = go.Figure()
    names = list(dict.fromkeys(r["policy"] for r in rows))
    for i, name in enumerate(names):
        mine = sorted((r for r in rows if r["policy"] == name), key=lambda r: r["budget"])
        fig.add_trace(go.Scatter(x=[r["budget"] for r in mine], y=[r[metric] for r in mine], name=name,
                                 mode="lines+markers", line=dict(color=QUALITATIVE[i % len(QUALITATIVE)]),
                                 hovertemplate="budget %{x}: %{y:.4g}<extra>" + name + "</extra>"))
    fig.update_xaxes(title="budget (cached positions a step reads)", type="log")
    fig.update_yaxes(title=metric.replace("_", " "), type="log" if log_y else "linear")
    return style(fig, font_size=font_size, title=f"{metric.replace('_', ' ')} against the KV budget", height=420)
