"""Sliding-window attention: query i attends keys with |i − j| ≤ w (causal: 0 ≤ i − j ≤ w).

As in the local attention of Longformer (Beltagy et al. 2020) and Image Transformer
(Parmar et al. 2018). ``window`` is the reach on each side, so window ≥ N − 1 is exact attention.
Compute: blocks of queries against contiguous key spans (``band_attention``), O(N·w·d), no
gather and no N×N tensor; the (N, 2w+1) key lists serve the matrix and mask for display.
"""
import torch

from ..core.registry import Param, VariantSpec, register_variant
from ..kernels.band import band_attention
from ..kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention
from ..kernels.costs import sparse_cost


def window_offsets(window: int, n: int, causal: bool, device) -> torch.Tensor:
    reach = min(window, n - 1)
    return torch.arange(-reach, 1 if causal else reach + 1, device=device)


def sliding_window(q, k, v, ctx, window: int):
    offsets = window_offsets(window, q.shape[-2], ctx.causal, q.device)
    result = sparse_attention(q, k, v, ctx, lambda rows: (rows[:, None] + offsets, None), width=offsets.numel(),
                              compute_out=False)
    result.out = band_attention(q, k, v, ctx, back=window, forward=window)
    return result


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
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW),
    content_based=False,
    exact_when=lambda n, d, h: {"window": n},
))
