"""Axial attention in one layer: positions are laid on a grid of width ``grid_width`` (⌈N/W⌉ rows,
raster order); a query attends every key in its grid row and in its grid column.

Axial attention (Ho et al. 2019) attends along one axis of a multidimensional tensor at a time
and stacks the axes over *separate layers* (or sub-layers), each with its own Q/K/V
projections, so that two steps give every position a full receptive field. Here Q/K/V are
given and there is no projection between the steps: composing a row step and a column step
with the same Q/K/V would either reuse the inputs (not what the model computes) or feed the
row output in as the column step's values (a different, dense two-layer operator whose
effective weights are a product of two maps, not a sparse mask). We therefore show the
one-layer *union* form — the criss-cross pattern of CCNet (Huang et al. 2019) and the 2-D
factorisation the Sparse Transformer uses for images — whose mask is exact and drawable.
Causal: raster order (j ≤ i), so a query sees the earlier cells of its row and the cells
above it in its column. grid_width = N (one grid row) is exact attention.
Cost O(N·(W + N/W)·d): O(N√N·d) at W ≈ √N; the default W = 32 suits N ≈ 1,024.
Pattern: ``patterns.axial`` — a grid row is one tile of W positions, a grid column one tile in the
layout of residue classes mod W; the two parts merge by their log-sum-exps. Batched matmuls over
strided views, no per-key gather, no N×N tensor. Cross-attention (N_q ≠ N_k, non-causal): query i
sits at key position c(i) = ⌊(i + ½)·N_k/N_q⌋ and gets the keys the pattern gives c(i) (``blocks.centres``).
"""
import math

from ..kernels import patterns
from ..kernels.blocks import pattern_output
from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..kernels.sparse import KEYS_PER_ROW, MASK
from ..kernels.costs import sparse_cost


def axial(q, k, v, ctx, grid_width: int):
    """Union of the query's grid row and grid column (raster order)."""
    n = k.shape[-2]
    return pattern_output(q, k, v, ctx, patterns.axial(n, grid_width=grid_width, causal=ctx.causal),
                          extra={"grid": lambda: patterns.axial_grid(n, grid_width)})


def cost(s, grid_width):
    w = min(grid_width, s.nk)
    keys = w + math.ceil(s.nk / w) - 1
    return sparse_cost(s, min(s.nk, (keys + 1) / 2 if s.causal else keys))


register_variant(VariantSpec(
    name="axial",
    display_name="Axial (row ∪ column)",
    family="fixed pattern",
    paper="Ho et al. 2019, Axial Attention in Multidimensional Transformers (arXiv:1912.12180); "
          "one-layer union as CCNet criss-cross attention, Huang et al. 2019 (arXiv:1811.11721)",
    complexity="O(N·(W + N/W)·d); O(N√N·d) at W ≈ √N",
    complexity_class="n sqrt n",
    fn=axial,
    cost=cost,
    params=(
        Param("grid_width", "int", 32, "grid width W: tokens fill rows of W in raster order (≈ √N is cheapest)",
              low=1, high="N", log=True),
    ),
    causal=True,
    cross=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW, Artifact("grid", "ids", ("N", "2"), "(grid row, grid column) of each position")),
    content_based=False,
    exact_when=lambda n, d, h: {"grid_width": n},
    description="Each token attends its grid row and grid column (criss-cross), in one layer.",
))
