"""Generation figures: KL over the steps for several policies, what each layer and key/value head kept at
one step, the attention of the generated tokens, the texts side by side with the first departure from a
reference marked, and the per-head planner's layer × head map.

Pure functions of ``xviz.decode.GenerationResult`` and ``xviz.analysis.planner`` rows. Every token
shown is HTML-escaped.
"""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from .base import MASK_CELLS, colour, pool1d, pool_factor, style
from .decode import KEPT, STATE_COLOURS


def kl_curves(results: Sequence, *, font_size: int = 13) -> go.Figure:
    """KL(full ‖ policy) of the next-token distribution at each generated token, one line per policy."""
    fig = go.Figure()
    for i, r in enumerate(results):
        fig.add_trace(go.Scatter(x=np.arange(len(r.kl)), y=r.kl, mode="lines+markers", name=r.label,
                                 line=dict(color=colour(i)), customdata=np.array(r.labels, dtype=object),
                                 hovertemplate="step %{x} (%{customdata})<br>KL %{y:.4g} nats<extra></extra>"))
    fig.update_xaxes(title="generated token")
    fig.update_yaxes(title="KL(full ‖ policy), nats")
    return style(fig, font_size=font_size, title="How far each step's next-token distribution is from the full cache's")


def kept_map(result, step: int, *, max_cells: int = MASK_CELLS, font_size: int = 13) -> go.Figure:
    """Layer × key/value head rows by positions: what the query that produced token ``step`` read."""
    kept = result.kept_at(step)  # (L, G, P + step)
    layers, groups, n = kept.shape
    rows = kept.reshape(layers * groups, n).astype(np.uint8)
    f = pool_factor(n, max_cells)
    z, starts = pool1d(rows, max_cells, how="max") if f > 1 else (rows, np.arange(n))
    names = [f"L{layer} kv{g}" for layer in range(layers) for g in range(groups)]
    tokens = list(result.prompt_labels) + list(result.labels)
    x = [f"{int(s)} {tokens[int(s)][:12] if int(s) < len(tokens) else ''}" for s in starts]
    fig = go.Figure(go.Heatmap(z=z, x=x, y=names, zmin=0, zmax=1, showscale=False,
                               colorscale=[[0, STATE_COLOURS[0]], [1, STATE_COLOURS[KEPT]]],
                               hovertemplate="%{y}, key %{x}: %{z}<extra>1 = read</extra>"))
    fig.update_yaxes(autorange="reversed", title="layer, key/value head")
    fig.update_xaxes(title="cached position", showticklabels=n <= 64)
    return style(fig, font_size=font_size, height=max(320, 8 * layers * groups + 120),
                 title=f"{result.label}: keys read for token {step} ({result.labels[step]!s:.20})")


def generated_attention(result, layer: int, *, font_size: int = 13, max_cells: int = MASK_CELLS) -> go.Figure:
    """Rows: the generated tokens; columns: positions; the attention of the query that produced each token
    at ``layer``, averaged over all query heads (0 where the policy did not read)."""
    a = result.attention[:, layer].mean(1)  # (T, N)
    f = pool_factor(a.shape[-1], max_cells)
    z, starts = pool1d(a, max_cells, how="mean") if f > 1 else (a, np.arange(a.shape[-1]))
    tokens = list(result.prompt_labels) + list(result.labels)
    x = [f"{int(s)} {tokens[int(s)][:12] if int(s) < len(tokens) else ''}" for s in starts]
    y = [f"{s} {t[:12]}" for s, t in enumerate(result.labels)]
    fig = go.Figure(go.Heatmap(z=z, x=x, y=y, colorscale="Viridis", zmin=0,
                               hovertemplate="token %{y} → key %{x}: %{z:.3g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="generated token")
    fig.update_xaxes(title="key position", showticklabels=a.shape[-1] <= 64)
    return style(fig, font_size=font_size, height=max(300, 18 * len(y) + 150),
                 title=f"{result.label}: attention of the generated tokens, layer {layer} (mean over heads)")


def texts_html(results: Sequence, reference=None) -> str:
    """The generated texts, one row per policy, tokens escaped; the first token that departs from
    ``reference``'s text (a GenerationResult, say the full cache's) is marked."""
    rows = []
    for r in results:
        cut = r.first_divergence(reference) if reference is not None and r is not reference else None
        parts = []
        for s, label in enumerate(r.pieces or r.labels):
            text = html.escape(label)
            if cut is not None and s == cut:
                parts.append(f"<mark title='first token that departs from {html.escape(reference.label)}'>"
                             f"{text}</mark>")
            elif cut is not None and s > cut:
                parts.append(f"<span style='opacity:0.7'>{text}</span>")
            else:
                parts.append(text)
        note = ("" if reference is None else "reference" if r is reference else
                f"departs at token {cut}" if cut is not None else "same as the reference")
        rows.append(f"<tr><td><b>{html.escape(r.label)}</b><br><small>{note}</small></td>"
                    f"<td style='font-family:monospace; white-space:pre-wrap'>{''.join(parts)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def generation_html(results: Sequence) -> str:
    """A standalone HTML page: the texts, KL over the steps, and each policy's keys read at its last step."""
    reference = next((r for r in results if r.policy == "full"), None)
    figs = [kl_curves(results)] + [kept_map(r, len(r.tokens) - 1) for r in results]
    body = "".join(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
                   for i, fig in enumerate(figs))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>xviz generate</title></head>"
            f"<body style='font-family:sans-serif'>{texts_html(results, reference)}{body}</body></html>")


PATTERN_COLOURS = {"sink": "#d62728", "local": "#1f77b4", "sink+local": "#9467bd", "vertical-slash": "#ff7f0e",
                   "block-sparse": "#2ca02c", "global": "#7f7f7f"}


VARIANT_CODES = {"exact": "ex", "sliding_window": "win", "sinks": "snk", "longformer": "lf", "bigbird": "bb"}


def plan_map(rows: Sequence[dict], *, font_size: int = 13) -> go.Figure:
    """The planner's layer × head map: cell colour = the head's pattern class; hover: the class, its
    measures, and the cheapest variant meeting the target with its parameters and error. A marker on every
    cell carries [layer, head] as customdata, so a click selects the cell (to open it in the Explorer)."""
    layers = max(r["layer"] for r in rows) + 1
    heads = max(r["head"] for r in rows) + 1
    classes = list(PATTERN_COLOURS)
    z = np.full((layers, heads), np.nan)
    text = np.empty((layers, heads), dtype=object)
    short = np.full((layers, heads), "", dtype=object)
    for r in rows:
        z[r["layer"], r["head"]] = classes.index(r["pattern"])
        short[r["layer"], r["head"]] = VARIANT_CODES.get(r["variant"], r["variant"][:4])
        chosen = r["variant"] + (f" ({r['params']})" if r["params"] else "") if r["variant"] else "none meets it"
        text[r["layer"], r["head"]] = (
            f"layer {r['layer']}, head {r['head']}: {r['pattern']}<br>mass on the sink {r['sink_mass']:.2f}, "
            f"local {r['local_mass']:.2f}, top columns + diagonals {r['column_mass']:.2f}, top blocks "
            f"{r['block_mass']:.2f}<br>cheapest: {html.escape(chosen)}, error {r['error']:.3g}, "
            f"{r['flops_ratio']:.2f}× exact's FLOPs<br>click to open in the Explorer")
    n = len(classes)
    scale = []
    for i, c in enumerate(classes):
        scale += [[i / n, PATTERN_COLOURS[c]], [(i + 1) / n, PATTERN_COLOURS[c]]]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(heads)), y=list(range(layers)), zmin=-0.5, zmax=n - 0.5, colorscale=scale,
        text=short, texttemplate="%{text}", hoverinfo="skip", xgap=1, ygap=1, colorbar=dict(tickvals=list(range(n)), ticktext=classes, title="pattern")))
    yy, xx = np.meshgrid(np.arange(layers), np.arange(heads), indexing="ij")
    fig.add_trace(go.Scatter(x=xx.ravel(), y=yy.ravel(), mode="markers", showlegend=False,
                             customdata=np.stack([yy.ravel(), xx.ravel()], 1), text=text.ravel(),
                             marker=dict(size=14, color="rgba(255,255,255,0.01)", symbol="square"),
                             hovertemplate="%{text}<extra></extra>"))
    fig.update_yaxes(range=[layers - 0.5, -0.5], title="layer", dtick=1, showgrid=False, zeroline=False)
    fig.update_xaxes(range=[-0.5, heads - 0.5], title="query head", dtick=1, showgrid=False, zeroline=False)
    legend = ", ".join(f"{code} = {name}" for name, code in VARIANT_CODES.items())
    return style(fig, font_size=font_size, height=max(360, 22 * layers + 160),
                 title=f"Per-head plan: colour = measured pattern; text = cheapest variant meeting the target "
                       f"<br><sup>{legend}; hover for parameters and error</sup>")
