"""Sweeps and cost figures: error against a parameter, N or the logit scale (mean ± std over seeds); time,
memory and FLOPs against N; the Long Range Arena-style table."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .base import (colour as _colour, rgba as _rgba, style)


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
