"""Block-pattern attention, the entry a pattern variant calls: ``pattern_output`` (the fast output
with the matrix, mask and keys per row on request) and ``execute`` (the output alone).

The pattern itself is ``xviz.kernels.block_pattern`` (re-exported here: ``BlockPattern``,
``BlockPart``, ``centres``); it is executed by ``xviz.kernels.tiles`` (CPU, any device) or
``xviz.kernels.flex`` (FlexAttention on CUDA), and held to the gather reference of
``xviz.kernels.sparse`` (``pattern_views(compute_out=True)``). Those modules import the representation,
never this one.
"""
from __future__ import annotations

import torch

from ..core.result import Output
from . import flex, tiles
from .block_pattern import Allowed, BlockPart, BlockPattern, centres
from .lazy import lazy_views
from .sparse import sparse_attention

__all__ = ["Allowed", "BlockPart", "BlockPattern", "centres", "execute", "lazy_views", "pattern_output",
           "pattern_views"]


def execute(q, k, v, scale: float, pattern: BlockPattern) -> torch.Tensor:
    """The pattern's attention output, (B, H, N_q, d_v) in v's dtype, from tiles (CPU and any device)
    or FlexAttention (CUDA, see ``xviz.kernels.flex``). Logits at float32 or wider."""
    if flex.wanted(q):
        return flex.execute(q, k, v, scale, pattern)
    return tiles.execute_tiles(q, k, v, scale, pattern)


def pattern_views(q, k, v, ctx, pattern: BlockPattern, *, compute_out: bool = False):
    """``sparse_attention`` on the pattern's key lists: the gather reference when ``compute_out``,
    else only the matrix, mask and keys_per_row (for ``lazy_views``)."""
    h, nq = q.shape[1], q.shape[-2]
    return sparse_attention(q, k, v, ctx, lambda rows: pattern.keys_for(rows, h, nq), width=pattern.width(),
                            full_rows=pattern.query_full_rows(nq, q.device), compute_out=compute_out)


def pattern_output(q, k, v, ctx, pattern: BlockPattern, extra: dict | None = None) -> Output:
    """What a block-pattern variant returns: the fast ``out``; matrix, mask, keys_per_row (and the
    global rows) from the same pattern's key lists, built on request. One-position blocks (per-row
    keys: random) share no tile, so there the per-key gather *is* the fast path (2× the tiles')."""
    if all(p.q_block == p.k_block == 1 for p in pattern.parts):
        result = pattern_views(q, k, v, ctx, pattern, compute_out=True)
        result.artifacts.update(extra or {})
        return result
    out = execute(q, k, v, ctx.scale, pattern)
    extra = dict(extra or {})
    full = pattern.query_full_rows(q.shape[-2], q.device)
    if full is not None:
        extra.setdefault("global_rows", full)
    return lazy_views(out, lambda: pattern_views(q, k, v, ctx, pattern), extra=extra)
