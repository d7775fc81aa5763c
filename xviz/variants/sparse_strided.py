"""Sparse Transformer, strided pattern (Child et al. 2019, §4.2 "Factorized attention").

Two sub-patterns with stride l: *local* |i − j| < l and *strided* (i − j) mod l = 0. The paper
either gives them to different heads (or layers) or merges them into one head; both are here:
``heads`` = "alternate" gives even heads the local pattern and odd heads the strided one
(a single head is therefore local only), "union" gives every head both (the diagonal is in
both and counts once). The paper's causal form is A¹ = {max(0, i − l), …, i}, A² = {j : (i − j)
mod l = 0, j ≤ i}; we use |i − j| < l for the local part as the catalog states, so the
non-causal pattern is symmetric. Nothing is learned. stride = N with "union" is exact.
Cost O(N·(l + N/l)·d): O(N√N·d) at l ≈ √N; the default l = 32 suits N ≈ 1,024.
Compute: the local part as chunks of l queries against neighbouring chunks, the strided part
as dense attention inside each residue class mod l (positions r, r + l, …), merged by their
log-sum-exps (``patterns.block_sparse_part``, ``residue_part``, ``merge``): batched matmuls,
no per-row gather and no N×N tensor. The key lists give the matrix and mask on request.
"""
from dataclasses import replace

import torch

from ..kernels import patterns
from ..kernels.blocks import block_sparse_part, lazy_views, merge, residue_part
from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention
from ..kernels.costs import sparse_cost


def sparse_strided(q, k, v, ctx, stride: int, heads: str):
    """Local (|i − j| < l) and strided ((i − j) mod l = 0) patterns, alternating over heads or united."""
    n, h = q.shape[-2], q.shape[1]
    kw = dict(stride=stride, heads_mode=heads, heads=h, causal=ctx.causal)
    width = patterns.sparse_strided(torch.zeros(1, dtype=torch.long, device=q.device), n, **kw)[0].shape[-1]
    head_pattern = torch.arange(h) % 2 if heads == "alternate" else torch.full((h,), 2)  # 0 local, 1 strided, 2 both
    if heads == "union":
        out = merge([_local(q, k, v, ctx, stride),
                              residue_part(q, k, v, ctx.scale, ctx.causal, stride, exclude_self=True)])
    else:
        out = q.new_empty(*q.shape[:3], v.shape[-1])
        out[:, 0::2] = _local(q[:, 0::2], k[:, 0::2], v[:, 0::2], ctx, stride)[0]
        if h > 1:
            out[:, 1::2] = residue_part(q[:, 1::2], k[:, 1::2], v[:, 1::2], ctx.scale, ctx.causal, stride)[0]
    return lazy_views(out, lambda: sparse_attention(
        q, k, v, ctx, lambda rows: patterns.sparse_strided(rows, n, **kw), width=width, compute_out=False),
        extra={"head_pattern": head_pattern})


def _local(q, k, v, ctx, stride):
    """|i − j| < l: chunks of l queries against their own and neighbouring chunks."""
    n = q.shape[-2]
    block = min(stride, n)
    nb = -(-n // block)
    blocks = (torch.arange(nb)[:, None] + torch.arange(-1, 1 if ctx.causal else 2))[None]
    return block_sparse_part(q, k, v, ctx.scale, ctx.causal, block, blocks,
                                      allowed=lambda i, j: (i - j).abs() < stride)


def cost(s, stride, heads):
    n = s.n
    stride = min(stride, n)
    local = stride if s.causal else 2 * stride - 1
    steps = (n - 1) // stride
    strided = (steps / 2 + 1) if s.causal else 2 * steps + 1
    if heads == "union":
        return sparse_cost(s, min(n, local + strided - 1))
    a = sparse_cost(replace(s, h=(s.h + 1) // 2), min(n, local))
    z = sparse_cost(replace(s, h=s.h // 2), min(n, strided))
    return Cost(a.flops + z.flops, a.bytes + z.bytes)


register_variant(VariantSpec(
    name="sparse_strided",
    display_name="Sparse Transformer (strided)",
    family="combined pattern",
    paper="Child et al. 2019, Generating Long Sequences with Sparse Transformers (arXiv:1904.10509), §4.2",
    complexity="O(N·(l + N/l)·d); O(N√N·d) at l ≈ √N",
    complexity_class="n sqrt n",
    fn=sparse_strided,
    cost=cost,
    params=(
        Param("stride", "int", 32, "stride l: local |i − j| < l, strided (i − j) mod l = 0 (≈ √N is cheapest)",
              low=1, high="N", log=True),
        Param("heads", "choice", "alternate",
              "alternate: even heads local, odd heads strided; union: both in every head",
              choices=("alternate", "union")),
    ),
    causal=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW, Artifact("head_pattern", "ids", ("H",), "each head's pattern: 0 local, 1 strided, 2 both")),
    content_based=False,
    exact_when=lambda n, d, h: {"stride": n, "heads": "union"},
    description="Local and strided patterns of the Sparse Transformer, per head or united. "
                "head_pattern: 0 local, 1 strided, 2 both.",
))
