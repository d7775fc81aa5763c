"""Extra tokens beside the sequence: global tokens made from segments (ETC), attended by every query.

``segment_tokens`` builds g global tokens as the means of g contiguous, near-equal segments of q,
k and v; ``shared_keys_part`` is the partial softmax (out, lse) of every query against one small
shared key set (the global keys), in query chunks, for ``dense.merge`` with the local part.
``spread`` turns weights on the g global tokens into weights on the N tokens they average (each
segment member gets its share), so a variant with global tokens still has an N × N matrix.
"""
from __future__ import annotations

import torch

from .dense import masked_softmax
from .segments import segment_ids, segment_means

PASS_ELEMENTS = 1 << 24


def segment_tokens(x: torch.Tensor, g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(means (…, g, d), segment of each position (N,)): x cut into g contiguous near-equal segments."""
    seg = segment_ids(x.shape[-2], g, x.device)
    return segment_means(x, seg, g), seg


def shared_keys_part(q, kx, vx, scale: float):
    """Every query attends all of kx, vx ((B, H, G, ·), G small). Returns (out, lse)."""
    bsz, h, n, _ = q.shape
    g = kx.shape[-2]
    out = q.new_empty(bsz, h, n, vx.shape[-1])
    lse = q.new_empty(bsz, h, n)
    step = max(1, PASS_ELEMENTS // max(1, bsz * h * (2 * g + vx.shape[-1])))
    for s in range(0, n, step):
        probs, l = masked_softmax(torch.matmul(q[:, :, s:s + step], kx.transpose(-1, -2)) * scale, None)
        out[:, :, s:s + step] = torch.matmul(probs, vx)
        lse[:, :, s:s + step] = l
    return out, lse


def spread(weights: torch.Tensor, seg: torch.Tensor, g: int) -> torch.Tensor:
    """(…, N) from weights (…, g) on segment means: member j of segment t gets weights[t] / |t|."""
    size = torch.bincount(seg, minlength=g).to(weights.dtype)
    return (weights / size)[..., seg]
