"""Band attention: keys for query i in [i − back, i + forward], computed without a gather."""
from __future__ import annotations

from typing import Callable

import torch

from .sparse import CHUNK_ELEMENTS


def band_attention(q, k, v, ctx, back: int, forward: int, block: int = 64,
                   allowed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The output of attention whose keys for query i lie in [i − back, i + forward] (a band),
    optionally thinned by ``allowed(i, j)`` (index grids, broadcastable). No gather: each block of
    ``block`` queries meets a contiguous key span as a strided view (``unfold``), so memory is
    O(N·(block + back + forward)) and the work is plain batched matmuls. Causal masking is applied
    here. Use with ``sparse_attention`` for the matrix and mask (the tests check they agree)."""
    b_, h, n, d = q.shape
    dv = v.shape[-1]
    if ctx.causal:
        forward = 0
    back, forward = min(back, n - 1), min(forward, n - 1)
    blk = max(1, min(block, n))
    nb = -(-n // blk)
    span = blk + back + forward
    pad_end = nb * blk - n + forward
    kw = torch.nn.functional.pad(k, (0, 0, back, pad_end)).unfold(-2, span, blk)  # (B, H, nb, d, span)
    vw = torch.nn.functional.pad(v, (0, 0, back, pad_end)).unfold(-2, span, blk)  # (B, H, nb, dv, span)
    qb = torch.nn.functional.pad(q, (0, 0, 0, nb * blk - n)).view(b_, h, nb, blk, d)
    out = q.new_empty(b_, h, nb, blk, dv)
    step = max(1, CHUNK_ELEMENTS // max(1, b_ * h * blk * span))  # query blocks per pass
    for s in range(0, nb, step):
        e = min(nb, s + step)
        i = torch.arange(s * blk, e * blk, device=q.device).view(e - s, blk, 1)
        j = (torch.arange(s, e, device=q.device) * blk - back).view(e - s, 1, 1) + torch.arange(span, device=q.device)
        valid = (j >= 0) & (j < n) & (j >= i - back) & (j <= i + forward)
        if allowed is not None:
            valid = valid & allowed(i, j)
        logits = torch.matmul(qb[:, :, s:e], kw[:, :, s:e]) * ctx.scale  # (B, H, blocks, blk, span)
        probs = torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)
        probs = torch.nan_to_num(probs, nan=0.0)
        out[:, :, s:e] = torch.matmul(probs, vw[:, :, s:e].transpose(-1, -2))
    return out.view(b_, h, nb * blk, dv)[:, :, :n]
