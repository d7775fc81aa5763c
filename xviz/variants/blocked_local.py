"""Blocked local attention: the sequence is cut into chunks of ``block`` positions; every query in
a chunk attends all keys of its own chunk and of ``look_back`` chunks before and ``look_forward``
chunks after it (causal: the look-forward chunks are dropped and the own chunk is masked j ≤ i).

This is the "local attention" of Image Transformer's 1-D blocks (Parmar et al. 2018, query
blocks attending a memory block around them) and of blockwise / chunked local attention as in
lucidrains' ``local-attention`` (``look_backward`` / ``look_forward``). Unlike a sliding window,
all queries of a chunk share one key set, so the pattern is a block band. Nothing is learned.
Our choices: chunks are aligned to position 0 (the last chunk may be short); look-back/forward
beyond the sequence are clamped, so look_back = look_forward = N is exact attention.
Compute: each chunk meets its (back + forward + 1) key chunks in one batched matmul
(``patterns.block_sparse_part``, no per-row gather), O(N·(back + forward + 1)·block·d); no N×N
tensor. The key lists (``patterns.blocked_local``) give the matrix and mask on request.
"""
import torch

from ..kernels import patterns
from ..kernels.blocks import block_sparse_part, lazy_views
from ..core.registry import Param, VariantSpec, register_variant
from ..kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention
from ..kernels.costs import sparse_cost


def blocked_local(q, k, v, ctx, block: int, look_back: int, look_forward: int):
    """Block-band attention: chunk ⌊i/block⌋ attends chunks ⌊i/block⌋ − look_back … + look_forward."""
    n = q.shape[-2]
    kw = dict(block=block, look_back=look_back, look_forward=look_forward, causal=ctx.causal)
    width = patterns.blocked_local(torch.zeros(1, dtype=torch.long, device=q.device), n, **kw)[0].shape[-1]
    nb = -(-n // block)
    back = min(look_back, nb - 1)
    fwd = 0 if ctx.causal else min(look_forward, nb - 1)
    blocks = (torch.arange(nb)[:, None] + torch.arange(-back, fwd + 1))[None]  # (1, nb, L) chunk ids
    out, _ = block_sparse_part(q, k, v, ctx.scale, ctx.causal, block, blocks)
    return lazy_views(out, lambda: sparse_attention(
        q, k, v, ctx, lambda rows: patterns.blocked_local(rows, n, **kw), width=width, compute_out=False))


def cost(s, block, look_back, look_forward):
    block = min(block, s.n)
    keys = look_back * block + ((block + 1) / 2 if s.causal else (look_forward + 1) * block)
    return sparse_cost(s, min(keys, s.n))


register_variant(VariantSpec(
    name="blocked_local",
    display_name="Blocked local",
    family="fixed pattern",
    paper="Parmar et al. 2018, Image Transformer (arXiv:1802.05751), §3.2 local 1-D attention",
    complexity="O(N·(back + fwd + 1)·b·d)",
    complexity_class="sparse",
    fn=blocked_local,
    cost=cost,
    params=(
        Param("block", "int", 64, "chunk size b: queries in a chunk share its key set", low=1, high="N"),
        Param("look_back", "int", 1, "earlier chunks each chunk also attends", low=0, high="N"),
        Param("look_forward", "int", 1, "later chunks each chunk also attends (dropped when causal)", low=0, high="N"),
    ),
    causal=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW),
    content_based=False,
    exact_when=lambda n, d, h: {"look_back": n, "look_forward": n},
    description="Chunks of b tokens attend to themselves and their neighbouring chunks (a block band).",
))
