"""Image Transformer 2-D local attention (Parmar et al. 2018, §3.2 "2D local attention").

The N positions are laid in raster order on a grid of width W (``width``; 0 = ⌈√N⌉, N factorised
into a near-square grid; the last grid row may be partial). The grid is partitioned into
rectangular query blocks of ``block_rows`` × ``block_cols`` positions; every query of a block
attends the block's memory block: the query block extended by ``mem_rows`` rows above and
``mem_cols`` columns to the left and right. Causal (the paper's image generation, §3.2): query
blocks are generated one after another in raster order of blocks, raster order inside a block, so
a key is visible when it comes no later in that order: the block to the left whole (also its rows
below the query's), the block to the right not at all (also its rows above), the own block up to
the query. This is the token order only when a block is one grid row high; ``causal_order`` gives
it, and the causality checks run in it. Not causal: the memory block also extends ``mem_rows`` rows below (our choice:
the paper's generative setting has no need for it; symmetry is the natural encoder form).
Memory columns never wrap from one grid row to the next. Nothing is learned here.
A single grid row (width = N) with block_rows = 1 is 1-D local attention: block_cols = b and
mem_cols = b is ``blocked_local`` with block b and one chunk either side. block_rows ≥ R and
block_cols ≥ W (one block covering the grid) is exact attention.
Compute: 2-D ``unfold`` windows of the padded key grid (``kernels.grid.grid_local_part``): each
query block meets its memory block in one batched matmul, no per-row gather, no N×N tensor;
O(N·(bh + 2·mh)·(bw + 2·mw)·d) (causal: mh once). The key lists (``grid_local_keys``) give the
matrix and mask on request.
Parmar et al. 2018, Image Transformer (ICML; arXiv:1802.05751), §3.2.
"""
from dataclasses import replace

import torch

from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..kernels.lazy import lazy_views
from ..kernels.costs import sparse_cost
from ..kernels.dense import work_dtype
from ..kernels.grid import Grid, grid_local_keys, grid_local_part
from ..kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention


def image_local_2d(q, k, v, ctx, width: int, block_rows: int, block_cols: int, mem_rows: int, mem_cols: int):
    n = q.shape[-2]
    cdt = work_dtype(q.dtype)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    g = Grid.make(n, width, block_rows, block_cols, mem_rows, mem_cols, ctx.causal)
    out, _ = grid_local_part(qc, kc, vc, ctx.scale, g)
    mr, mc = g.memory
    p = torch.arange(n, device=q.device)
    block = (p // g.width // g.bh) * (-(-g.width // g.bw)) + (p % g.width) // g.bw
    unmasked = replace(ctx, causal=False)  # the key lists carry the generation-order mask themselves
    return lazy_views(out.to(v.dtype), lambda: sparse_attention(
        q, k, v, unmasked, lambda rows: grid_local_keys(rows, g), width=mr * mc, compute_out=False), extra={
        "grid": torch.stack([p // g.width, p % g.width], -1),  # (N, 2) grid row and column
        "query_block": block,  # (N,) the query block of each position
    })


def generation_order(n, params):
    """The positions in the order a causal run generates them (block raster)."""
    g = Grid.make(n, params["width"], params["block_rows"], params["block_cols"], params["mem_rows"],
                  params["mem_cols"], True)
    return g.generation_rank(torch.arange(n)).argsort()


def cost(s, width, block_rows, block_cols, mem_rows, mem_cols):
    g = Grid.make(s.n, width, block_rows, block_cols, mem_rows, mem_cols, s.causal)
    mr, mc = g.memory
    # the padded memory block is computed whole, even where it is larger than the grid
    return sparse_cost(s, mr * mc / (2 if s.causal else 1), cap=False)


register_variant(VariantSpec(
    name="image_local_2d",
    display_name="Image Transformer 2-D local",
    family="fixed pattern",
    paper="Parmar et al. 2018, Image Transformer (ICML 2018; arXiv:1802.05751), §3.2 2-D local attention",
    complexity="O(N·(bh + 2·mh)·(bw + 2·mw)·d)",
    complexity_class="sparse",
    fn=image_local_2d,
    cost=cost,
    params=(
        Param("width", "int", 0, "grid width W in positions (0 = ⌈√N⌉: a near-square grid)", low=0, high="N"),
        Param("block_rows", "int", 8, "query block height (grid rows)", low=1, high="N"),
        Param("block_cols", "int", 8, "query block width (grid columns)", low=1, high="N"),
        Param("mem_rows", "int", 8, "memory rows above the query block (and below when not causal)", low=0, high="N"),
        Param("mem_cols", "int", 8, "memory columns left and right of the query block", low=0, high="N"),
    ),
    causal=True,
    causal_order=generation_order,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW,
               Artifact("grid", "ids", ("N", "2"), "(grid row, grid column) of each position"),
               Artifact("query_block", "ids", ("N",), "the query block of each position")),
    exact_when=lambda n, d, h: {"block_rows": n, "block_cols": n},
    content_based=False,
    description="Rectangular query blocks on an H×W grid attend a memory block around them (causal in "
                "block-raster order).",
))
