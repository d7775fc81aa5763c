"""Exact attention computed in query chunks with a progress callback: the reference at sizes where one
fused call would run for minutes. A caller that reports progress between chunks (the app's progress
bar) can be interrupted there — a rerun or the end of a session stops the work instead of leaving it
running. The result is an ordinary ``AttentionResult``."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..core.engine import as_4d, check_logit_range
from ..core.registry import Shape, get_variant
from ..core.result import Artifacts, AttentionResult
from ..kernels.dense import dense_weights

ROWS_PER_CHUNK = 2048


def exact_in_chunks(q, k, v, *, causal: bool = False, scale: float | None = None, rows: int = ROWS_PER_CHUNK,
                    progress: Callable[[int, int], None] | None = None) -> AttentionResult:
    """softmax(QKᵀ·scale)V, ``rows`` queries at a time (query i of a causal run sees keys ≤ i)."""
    q4, k4, v4, squeeze = as_4d(q, k, v, cross=not causal)
    b, h, n, d = q4.shape
    nk = k4.shape[-2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    check_logit_range(q4, k4, scale)
    out = torch.empty(b, h, n, v4.shape[-1], dtype=v4.dtype, device=v4.device)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        if causal:
            j = torch.arange(e, device=q4.device)
            keep = j[None, :] <= torch.arange(s, e, device=q4.device)[:, None]
            out[:, :, s:e] = F.scaled_dot_product_attention(q4[:, :, s:e], k4[:, :, :e], v4[:, :, :e], attn_mask=keep,
                                                            scale=scale)
        else:
            out[:, :, s:e] = F.scaled_dot_product_attention(q4[:, :, s:e], k4, v4, scale=scale)
        if progress is not None:
            progress(e, n)
    shape = Shape(b, h, n, d, v4.shape[-1], causal, nk)
    return AttentionResult(name="exact", out=out[0, 0] if squeeze else out, artifacts=Artifacts(),
                           cost=get_variant("exact").cost(shape), params={}, causal=causal, seed=0,
                           matrix_fn=lambda: dense_weights(q4, k4, scale, causal), matrix_shape=(b, h, n, nk),
                           squeeze=squeeze, source="exact in chunks")
