"""Lazy views for a fast kernel's output: the matrix and pattern artifacts built only when asked for.

Any variant family whose ``out`` comes from a fast path (tiles, FlexAttention, a gathered route, a 2-D
unfold) but whose matrix and mask are easiest to take from a reference call uses ``lazy_views``.
"""
from __future__ import annotations

import torch

from ..core.result import Output


def lazy_views(out: torch.Tensor, make_pattern_output, extra: dict | None = None, names=("mask", "keys_per_row")):
    """An Output whose ``out`` came from a fast kernel, with ``matrix`` and the artifacts in
    ``names`` taken — only when first asked for — from ``make_pattern_output()``, a
    ``sparse_attention(..., compute_out=False)`` call on the same pattern."""
    cache = {}

    def pattern_output():
        if "o" not in cache:
            cache["o"] = make_pattern_output()
        return cache["o"]

    def artifact(name):
        def get():
            value = pattern_output().artifacts[name]
            return value() if callable(value) and not isinstance(value, torch.Tensor) else value
        return get

    artifacts = {name: artifact(name) for name in names}
    artifacts.update(extra or {})
    return Output(out=out, matrix=lambda: pattern_output().matrix(), artifacts=artifacts)
