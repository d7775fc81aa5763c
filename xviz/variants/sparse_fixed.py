"""Sparse Transformer, fixed pattern (Child et al. 2019, §4.2 "Fixed attention pattern").

Query i attends every key of its own block, ⌊i/l⌋ = ⌊j/l⌋, and the *summary* columns
j mod l ≥ l − c of every block (causal: of every block up to its own, and j ≤ i), so
information from a block reaches all later positions through its last c cells. The paper
designed it for text, where strided offsets do not match the data's structure; it reports
c ∈ {8, 16, 32} for l ∈ {128, 256} and that heads attending *distinct* length-c sub-blocks
worked better than all heads sharing one. Our choices: both parts are united in every head;
``distinct_heads`` = True shifts head h's summary sub-block back by h·c (wrapping within the
block; head 0 keeps the last c). Nothing is learned. stride = N (one block) is exact.
Cost O(N·(l + c·N/l)·d): O(N√N·d) at l ≈ √N with c fixed; defaults l = 32, c = 4 suit N ≈ 1,024.
Compute: the own block as one matmul per block and the summary columns as one matmul against
the gathered ⌈N/l⌉·c summary keys, merged by their log-sum-exps (``patterns.block_sparse_part``,
``columns_part``, ``merge``): no per-row gather, no N×N tensor. The key lists give the matrix
and mask on request.
"""
import math

import torch

from ..kernels import patterns
from ..kernels.blocks import block_sparse_part, columns_part, lazy_views, merge
from ..core.errors import ParameterError
from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention
from ..kernels.costs import sparse_cost


def sparse_fixed(q, k, v, ctx, stride: int, summary: int, distinct_heads: bool):
    """Own block ∪ summary columns (the last ``summary`` cells of every block)."""
    n, h = q.shape[-2], q.shape[1]
    kw = dict(stride=stride, summary=summary, distinct_heads=distinct_heads, heads=h)
    width = stride + math.ceil(n / stride) * summary
    residues = patterns.fixed_summary_residues(stride, summary, h, distinct_heads)  # (1 or H, c)
    nb = math.ceil(n / stride)
    cols = (torch.arange(nb)[None, :, None] * stride + residues[:, None, :]).flatten(1).sort(-1).values
    own = block_sparse_part(q, k, v, ctx.scale, ctx.causal, stride, torch.arange(nb)[None, :, None])
    summ = columns_part(q, k, v, ctx.scale, ctx.causal, cols,
                                 exclude=lambda i, j: j // stride == i // stride)  # own block counted once
    return lazy_views(merge([own, summ]), lambda: sparse_attention(
        q, k, v, ctx, lambda rows: patterns.sparse_fixed(rows, n, causal=ctx.causal, **kw), width=width,
        compute_out=False), extra={"summary_positions": residues.expand(h, -1)})


def check(params, n, d, heads):
    if params["summary"] > params["stride"]:
        raise ParameterError(
            f"summary = {params['summary']} must be at most stride = {params['stride']} "
            f"(valid range [1, {params['stride']}]): the summary cells are part of a block."
        )


def cost(s, stride, summary, distinct_heads):
    stride = min(stride, s.n)
    summary = min(summary, stride)
    cols = math.ceil(s.n / stride) * summary
    keys = ((stride + 1) / 2 + cols / 2) if s.causal else stride + cols
    return sparse_cost(s, min(s.n, keys))


register_variant(VariantSpec(
    name="sparse_fixed",
    display_name="Sparse Transformer (fixed)",
    family="combined pattern",
    paper="Child et al. 2019, Generating Long Sequences with Sparse Transformers (arXiv:1904.10509), §4.2",
    complexity="O(N·(l + c·N/l)·d); O(N√N·d) at l ≈ √N",
    complexity_class="n sqrt n",
    fn=sparse_fixed,
    cost=cost,
    params=(
        Param("stride", "int", 32, "block length l: queries attend their whole block", low=1, high="N", log=True),
        Param("summary", "int", 4, "summary cells c: the last c positions of every block are attended by all",
              low=1, high="N"),
        Param("distinct_heads", "bool", False, "head h uses the summary sub-block shifted back by h·c"),
    ),
    causal=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW, Artifact("summary_positions", "ids", ("H", "c"), "the positions in a block that serve as summary columns")),
    content_based=False,
    check=check,
    exact_when=lambda n, d, h: {"stride": n},
    description="Blocks of l tokens attend to themselves and to the last c tokens of every block.",
))
