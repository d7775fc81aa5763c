"""Sliding-window attention: query i attends keys with |i − j| ≤ w (causal: 0 ≤ i − j ≤ w).

As in the local attention of Longformer (Beltagy et al. 2020) and Image Transformer
(Parmar et al. 2018). ``window`` is the reach on each side, so window ≥ N − 1 is exact attention.
Pattern: ``patterns.window`` — tiles of queries against the contiguous key span around them (a
strided view, no gather) thinned by |i − j| ≤ w: O(N·w·d), no N×N tensor; the key lists derived
from the same pattern give the matrix and mask for display.
Cross-attention (N_q ≠ N_k, non-causal): query i sits at key position c(i) = ⌊(i + ½)·N_k/N_q⌋ and
gets the keys the pattern gives c(i) (``blocks.centres``).
"""
from ..core.registry import Param, VariantSpec, register_variant
from ..kernels import patterns
from ..kernels.blocks import pattern_output
from ..kernels.sparse import KEYS_PER_ROW, MASK
from ..kernels.costs import sparse_cost


def sliding_window(q, k, v, ctx, window: int):
    """|i − j| ≤ window (causal: 0 ≤ i − j ≤ window)."""
    return pattern_output(q, k, v, ctx, patterns.window(k.shape[-2], back=window, forward=window, causal=ctx.causal))


register_variant(VariantSpec(
    name="sliding_window",
    display_name="Sliding window",
    family="fixed pattern",
    paper="Beltagy et al. 2020, Longformer (arXiv:2004.05150), §3.1 sliding window",
    complexity="O(N·w·d)",
    complexity_class="sparse",
    fn=sliding_window,
    # keys per query of the algorithm, not capped at N: at window ≥ N the band kernel still computes ~2N
    cost=lambda s, window: sparse_cost(s, min(window, s.n - 1) * (1 if s.causal else 2) + 1, cap=False),
    params=(Param("window", "int", 64, "keys on each side of the query (|i − j| ≤ window)", low=1, high="N"),),
    causal=True,
    cross=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW),
    content_based=False,
    exact_when=lambda n, d, h: {"window": n},
))
