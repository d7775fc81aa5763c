"""Sparse Transformer, strided pattern (Child et al. 2019, §4.2 "Factorized attention").

Two sub-patterns with stride l: *local* |i − j| < l and *strided* (i − j) mod l = 0. The paper
either gives them to different heads (or layers) or merges them into one head; both are here:
``heads`` = "alternate" gives even heads the local pattern and odd heads the strided one
(a single head is therefore local only), "union" gives every head both (the diagonal is in
both and counts once). The paper's causal form is A¹ = {max(0, i − l), …, i}, A² = {j : (i − j)
mod l = 0, j ≤ i}; we use |i − j| < l for the local part as the catalog states, so the
non-causal pattern is symmetric. Nothing is learned. stride = N with "union" is exact.
Cost O(N·(l + N/l)·d): O(N√N·d) at l ≈ √N; the default l = 32 suits N ≈ 1,024.
Pattern: ``patterns.sparse_strided`` — the local part on band-shaped tiles, the strided part in the
layout of residue classes mod l, where each class is one dense tile (positions r, r + l, …); the
two parts of a "union" head merge by their log-sum-exps. Batched matmuls over strided views, no
per-key gather, no N×N tensor. Cross-attention (N_q ≠ N_k, non-causal): query i sits at key position
c(i) = ⌊(i + ½)·N_k/N_q⌋ and gets the keys the pattern gives c(i) (``blocks.centres``).
"""
from dataclasses import replace

import torch

from ..kernels import patterns
from ..kernels.blocks import pattern_output
from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..kernels.sparse import KEYS_PER_ROW, MASK
from ..kernels.costs import sparse_cost


def sparse_strided(q, k, v, ctx, stride: int, heads: str):
    """Local (|i − j| < l) and strided ((i − j) mod l = 0) patterns, alternating over heads or united."""
    h = q.shape[1]
    head_pattern = torch.arange(h) % 2 if heads == "alternate" else torch.full((h,), 2)  # 0 local, 1 strided, 2 both
    pattern = patterns.sparse_strided(k.shape[-2], stride=stride, heads_mode=heads, heads=h, causal=ctx.causal)
    return pattern_output(q, k, v, ctx, pattern, extra={"head_pattern": head_pattern})


def cost(s, stride, heads):
    n = s.nk
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
    cross=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW, Artifact("head_pattern", "ids", ("H",), "each head's pattern: 0 local, 1 strided, 2 both")),
    content_based=False,
    exact_when=lambda n, d, h: {"stride": n, "heads": "union"},
    description="Local and strided patterns of the Sparse Transformer, per head or united. "
                "head_pattern: 0 local, 1 strided, 2 both.",
))
