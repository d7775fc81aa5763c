"""Plotly figures as pure functions of tensors and arrays, by topic:

- ``base``       pooling (mean for weights, max for masks), labels, styling, colour scales, export;
- ``attention``  heatmaps, masks, strips, query lines, any variant's artifacts by their declared kind,
                 patterns' mass and reachability, error against cost;
- ``lsh``, ``spectra``, ``scaling``  LSH and clustering; spectra and the real model; sweeps and cost;
- ``state``, ``decode``  a recurrence's state; KV-cache replays;
- ``linked``     the linked view's payload (pooled float16 maps of every head, tokens, blocks);
- ``report``     the ``xviz check`` report (figures and a self-contained HTML page).

``from xviz import figures`` gives ``base`` and ``attention`` names directly (``figures.heatmap``).
"""
from .attention import (artifact_figures, compare_heatmaps, curve_figure, error_cost_scatter, heatmap,
                        mask_figure, mass_inside_figure, matrix_figure, query_lines, reachability_figures,
                        strip_figure)
from .base import (DIVERGING, MASK_CELLS, MAX_CELLS, SEQUENTIAL, SIDE_BY_SIDE_CELLS, chart_config, labels,
                   payload_bytes, pool1d, pool2d, pool_factor, style, to_html, to_numpy)

__all__ = [
    "artifact_figures", "compare_heatmaps", "curve_figure", "error_cost_scatter", "heatmap", "mask_figure",
    "mass_inside_figure", "matrix_figure", "query_lines", "reachability_figures", "strip_figure",
    "DIVERGING", "MASK_CELLS", "MAX_CELLS", "SEQUENTIAL", "SIDE_BY_SIDE_CELLS", "chart_config", "labels",
    "payload_bytes", "pool1d", "pool2d", "pool_factor", "style", "to_html", "to_numpy",
]
