"""The ``xviz check`` report: a figure per measured series and a self-contained HTML page."""
from __future__ import annotations

import html

import plotly.graph_objects as go

from ..analysis.check import FAIL, INFO, PASS, SKIP, CheckResult, short_number
from ..core.registry import get_variant


def report_figures(name: str, results: list[CheckResult]) -> list:
    """One plotly figure per check that measured a series (sweeps, complexity)."""
    figs = []
    for r in results:
        if "x" not in r.data:
            continue
        fig = go.Figure()
        for label, ys in (r.data.get("series") or {name: r.data["y"]}).items():
            fig.add_scatter(x=r.data["x"], y=ys, mode="lines+markers", name=label)
        fig.update_layout(title=r.check, xaxis_title=r.data.get("xlabel"), yaxis_title=r.data.get("ylabel"),
                          height=360, width=720)
        if r.data.get("log"):
            fig.update_xaxes(type="log")
            fig.update_yaxes(type="log")
        figs.append(fig)
    return figs


def report_html(name: str, results: list[CheckResult]) -> str:
    """A self-contained HTML page: the verdict table and a figure per measured series."""
    spec = get_variant(name)
    colors = {PASS: "#1a7f37", FAIL: "#cf222e", SKIP: "#6e7781", INFO: "#0969da"}
    rows = "".join(
        f"<tr><td style='color:{colors[r.status]};font-weight:bold'>{r.status}</td><td>{html.escape(r.check)}</td>"
        f"<td>{'' if r.measured is None else html.escape(short_number(r.measured))}</td>"
        f"<td>{'' if r.tolerance is None else html.escape(short_number(r.tolerance))}</td><td>{html.escape(r.message)}</td></tr>"
        for r in results)
    figs = [fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
            for i, fig in enumerate(report_figures(name, results))]
    failed = sum(r.status == FAIL for r in results)
    verdict = f"{failed} check(s) failed" if failed else "all checks passed"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>xviz check: {html.escape(name)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd;"
            "text-align:left;vertical-align:top}</style></head><body>"
            f"<h1>{html.escape(spec.display_name)} ({html.escape(name)})</h1>"
            f"<p>{html.escape(spec.family)} · {html.escape(spec.complexity)} · {html.escape(spec.paper)}</p>"
            f"<h2>{verdict}</h2><table><tr><th>status</th><th>check</th><th>measured</th><th>tolerance</th>"
            f"<th>note</th></tr>{rows}</table>{''.join(figs)}</body></html>")
