"""Query-dependent block selection (MoBA, NSA): keys in blocks of b positions, each query routed to
its own few blocks by a score, then exact softmax over the keys of the blocks it chose.

``pick`` turns per-query block scores (−inf: not allowed, +inf: always chosen) into the top
blocks; ``selected_blocks_part`` attends them — the (query, block) pairs are grouped by block, so
each key block is gathered once per piece of up to 64 queries that chose it and met in one
matmul — and returns a partial softmax (out, lse). ``selected_keys`` gives the
same choice as per-query key lists for ``sparse.sparse_attention`` (matrix, mask, key counts), and
``selected_mask`` as a dense mask (the reference the tests hold the fast path to).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .dense import masked_softmax
from .segments import segment_means

PASS_ELEMENTS = 1 << 24


def block_means(x: torch.Tensor, block: int) -> torch.Tensor:
    """(B, H, ⌈N/b⌉, d): the mean of each block of b consecutive rows (the last may be short)."""
    n = x.shape[-2]
    return segment_means(x, torch.arange(n, device=x.device) // block, -(-n // block))


def pick(scores: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top`` highest-scoring blocks per row: (ids (…, t), valid (…, t)), t = min(top, #blocks);
    a block scored −inf is never valid (fewer allowed blocks than t leave invalid slots)."""
    t = min(top, scores.shape[-1])
    best, ids = scores.topk(t, dim=-1)
    return ids, best > float("-inf")


def choose_blocks(n: int, top: int, scores_for: Callable[[int, int], torch.Tensor], per_row: int):
    """``pick`` over query chunks: ``scores_for(start, stop)`` -> (B, H, c, nb) scores; ``per_row``
    the elements one query row costs (sets the chunk). Returns ids, valid: (B, H, N, t)."""
    step = max(1, PASS_ELEMENTS // max(1, per_row))
    ids, valid = [], []
    for s in range(0, n, step):
        i, ok = pick(scores_for(s, min(n, s + step)), top)
        ids.append(i)
        valid.append(ok)
    return torch.cat(ids, 2), torch.cat(valid, 2)


def _pieces(pair_block: torch.Tensor, nb: int, piece: int):
    """Pairs sorted by block and cut into pieces of ≤ ``piece`` pairs of one block.
    pair_block (G, P) (nb = none). Returns piece_block (G, M), pair (G, M, piece), ok (G, M, piece)."""
    g, npairs = pair_block.shape
    dev = pair_block.device
    order = pair_block.argsort(dim=-1, stable=True)
    count = torch.zeros(g, nb + 1, dtype=torch.long, device=dev).scatter_add_(-1, pair_block, torch.ones_like(pair_block))
    count = count[:, :nb]
    npieces = (count + piece - 1) // piece
    cum = npieces.cumsum(-1)
    total = cum[:, -1:]
    m = max(1, int(total.max()))
    p = torch.arange(m, device=dev).expand(g, m).contiguous()
    pb = torch.searchsorted(cum, p, right=True).clamp(max=nb - 1)
    pj = p - (cum.gather(-1, pb) - npieces.gather(-1, pb))  # the piece's index inside its block
    within = pj.unsqueeze(-1) * piece + torch.arange(piece, device=dev)
    ok = (p < total).unsqueeze(-1) & (within < count.gather(-1, pb).unsqueeze(-1))
    slot = ((count.cumsum(-1) - count).gather(-1, pb).unsqueeze(-1) + within).clamp(max=npairs - 1)
    return pb, order.gather(-1, slot.reshape(g, -1)).reshape(g, m, piece), ok


def selected_blocks_part(q, k, v, scale: float, causal: bool, block: int, ids: torch.Tensor, valid: torch.Tensor,
                         piece: int = 64):
    """Query i attends every key of the blocks ``ids[..., i, :]`` (distinct per row) where ``valid``
    (j ≤ i when causal). The (query, block) pairs are sorted by block and cut into pieces of
    ``piece`` queries of one block, so a key block is gathered once per piece rather than once per
    query; each piece meets its block in one matmul, and a query's pairs merge by log-sum-exp.
    Work O(N·t·b·d); memory O(N·t·d_v) plus bounded passes. Returns (out, lse)."""
    bsz, h, n, d = q.shape
    dv, t, g = v.shape[-1], ids.shape[-1], bsz * h
    nb = -(-n // block)
    pad = nb * block - n
    kf = F.pad(k, (0, 0, 0, pad)).reshape(g * nb, block * d)
    vf = F.pad(v, (0, 0, 0, pad)).reshape(g * nb, block * dv)
    qf = q.reshape(g * n, d)
    pb, pair, ok = _pieces(torch.where(valid, ids, nb).reshape(g, n * t), nb, piece)
    qpos = pair // t
    gi = torch.arange(g, device=q.device)[:, None]
    inner = torch.arange(block, device=q.device)
    out_p = q.new_zeros(g * n * t + 1, dv)
    lse_p = q.new_full((g * n * t + 1,), float("-inf"))
    m = pb.shape[1]
    step = max(1, PASS_ELEMENTS // max(1, g * piece * (2 * block + d + dv) + g * block * (d + dv)))
    for s in range(0, m, step):
        e = min(m, s + step)
        qb = qf.index_select(0, (qpos[:, s:e] + gi[..., None] * n).reshape(-1)).view(g, e - s, piece, d)
        at = (pb[:, s:e] + gi * nb).reshape(-1)
        kb = kf.index_select(0, at).view(g, e - s, block, d)
        vb = vf.index_select(0, at).view(g, e - s, block, dv)
        j = pb[:, s:e, None, None] * block + inner  # (G, c, 1, b) key positions
        keep = ok[:, s:e, :, None] & (j < n)
        if causal:
            keep = keep & (j <= qpos[:, s:e, :, None])
        probs, l = masked_softmax(torch.matmul(qb, kb.transpose(-1, -2)) * scale, keep)
        dest = torch.where(ok[:, s:e], pair[:, s:e] + gi[..., None] * (n * t), g * n * t).reshape(-1)
        out_p.index_copy_(0, dest, torch.matmul(probs, vb).reshape(-1, dv))
        lse_p.index_copy_(0, dest, l.reshape(-1))
    out_p, lse_p = out_p[:-1].view(bsz, h, n, t, dv), lse_p[:-1].view(bsz, h, n, t)
    lse = torch.logsumexp(lse_p, -1)
    w = torch.nan_to_num(torch.exp(lse_p - lse.unsqueeze(-1)), nan=0.0)
    return (w.unsqueeze(-1) * out_p).sum(-2), lse


def selected_keys(ids: torch.Tensor, valid: torch.Tensor, block: int):
    """``keys_for(rows)`` for ``sparse.sparse_attention``: the keys of each row's chosen blocks."""
    inner = torch.arange(block, device=ids.device)

    def keys_for(rows):
        idx = (ids[:, :, rows, :, None] * block + inner).flatten(-2)
        return idx, valid[:, :, rows].repeat_interleave(block, dim=-1)

    return keys_for


def selected_mask(ids: torch.Tensor, valid: torch.Tensor, block: int, n: int, causal: bool) -> torch.Tensor:
    """(B, H, N, N) bool: the dense reference of the chosen blocks' keys (display and tests)."""
    nb = -(-n // block)
    chosen = torch.zeros(*ids.shape[:-1], nb + 1, dtype=torch.bool, device=ids.device)
    chosen.scatter_(-1, torch.where(valid, ids, torch.full_like(ids, nb)), True)
    j = torch.arange(n, device=ids.device)
    mask = chosen[..., j // block]
    if causal:
        mask = mask & (j[None, :] <= j[:, None])
    return mask


# ---------------------------------------------------------------- NSA's compressed blocks


def compressed_count(n: int, block: int, stride: int) -> int:
    """Blocks [b·δ, b·δ + l) for b = 0 … until one reaches the end (the last ones clipped at N)."""
    return max(0, -(-(n - block) // stride)) + 1


def compressed_blocks(x: torch.Tensor, block: int, stride: int) -> torch.Tensor:
    """(B, H, n_c, d): the mean of x over each (overlapping, clipped) block [b·δ, b·δ + l)."""
    n = x.shape[-2]
    nc = compressed_count(n, block, stride)
    pad = (nc - 1) * stride + block - n
    sums = F.pad(x, (0, 0, 0, pad)).unfold(-2, block, stride).sum(-1)  # (B, H, n_c, d)
    return sums / compressed_sizes(n, block, stride, x.device).to(x.dtype)[:, None]


def compressed_sizes(n: int, block: int, stride: int, device=None) -> torch.Tensor:
    start = torch.arange(compressed_count(n, block, stride), device=device) * stride
    return (start + block).clamp(max=n) - start


def compressed_ends(n: int, block: int, stride: int, device=None) -> torch.Tensor:
    """(n_c,) the last position of each compressed block (a causal query reads it once it is complete)."""
    start = torch.arange(compressed_count(n, block, stride), device=device) * stride
    return (start + block).clamp(max=n) - 1


def block_overlaps(n: int, block: int, stride: int, select: int, device=None):
    """How compressed blocks overlap selection blocks [j·l′, (j + 1)·l′): targets and token counts,
    both (U, n_c) with U = ⌈l/l′⌉ + 1 (a compressed block touches at most U selection blocks;
    unused entries have count 0)."""
    start = torch.arange(compressed_count(n, block, stride), device=device) * stride
    end = (start + block).clamp(max=n)
    first = start // select
    u = torch.arange(-(-block // select) + 1, device=device)[:, None]
    target = first + u
    lo = torch.maximum(start, target * select)
    hi = torch.minimum(end, (target + 1) * select)
    nsel = -(-n // select)
    return target.clamp(max=nsel - 1), (hi - lo).clamp(min=0) * (target < nsel)


def pooling_matrix(n: int, block: int, stride: int, device=None, dtype=torch.float64) -> torch.Tensor:
    """(n_c, N): row b averages block b's positions (a compressed key's weight, spread over its tokens)."""
    start = torch.arange(compressed_count(n, block, stride), device=device) * stride
    j = torch.arange(n, device=device)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < start[:, None] + block)
    return inside.to(dtype) / inside.sum(-1, keepdim=True).to(dtype)
