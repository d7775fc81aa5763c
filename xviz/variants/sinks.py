"""Attention sinks + a window (Xiao et al. 2023, StreamingLLM).

Every query attends the first ``sinks`` positions (the "attention sinks" a pretrained LM dumps
surplus attention on; keeping their keys and values is what lets a window-attention LM stream
past its training length) and the keys within ``window`` of it: |i − j| ≤ window (causal:
0 ≤ i − j ≤ window, the rolling KV cache of the paper). A sink inside the window counts once.
Nothing is learned; the paper keeps 4 sinks, as here. window ≥ N is exact attention.
This is the built-in form of the tutorial plugin ``examples/sink_window.py`` (which stays the
example, computed through per-row key lists); the tests hold the two equal.
Compute: the band as query blocks against neighbouring key blocks, the sink columns outside the
band as one matmul, merged by their log-sum-exps (``blocks.block_sparse_part``, ``columns_part``,
``merge``): O(N·(2w + 1 + s)·d), no gather and no N×N tensor; the key lists give the matrix and
mask on request.
Xiao et al. 2023, Efficient Streaming Language Models with Attention Sinks (ICLR 2024;
arXiv:2309.17453), §3.
"""
import torch

from ..core.registry import Param, VariantSpec, register_variant
from ..kernels.blocks import block_sparse_part, columns_part, lazy_views, merge
from ..kernels.costs import sparse_cost
from ..kernels.dense import work_dtype
from ..kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention


def sink_keys(rows: torch.Tensor, sinks: int, reach: int, causal: bool):
    """Key lists: the sinks 0 … s − 1, then the window i − w … i (+ w when not causal)."""
    offsets = torch.arange(-reach, 1 if causal else reach + 1, device=rows.device)
    sink = torch.arange(sinks, device=rows.device).expand(rows.numel(), -1)
    return torch.cat([sink, rows[:, None] + offsets], 1), None


def sinks_window(q, k, v, ctx, sinks: int, window: int):
    n = q.shape[-2]
    cdt = work_dtype(q.dtype)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    reach = min(window, n - 1)
    block = max(1, reach)
    nb = -(-n // block)
    blocks = (torch.arange(nb)[:, None] + torch.arange(-1, 1 if ctx.causal else 2))[None]
    parts = [block_sparse_part(qc, kc, vc, ctx.scale, ctx.causal, block, blocks,
                               allowed=lambda i, j: (i - j).abs() <= reach)]
    s = min(sinks, n)
    if s:
        parts.append(columns_part(qc, kc, vc, ctx.scale, ctx.causal, torch.arange(s)[None],
                                  exclude=lambda i, j: (i - j).abs() <= reach))
    width = s + (reach + 1 if ctx.causal else 2 * reach + 1)
    return lazy_views(merge(parts).to(v.dtype), lambda: sparse_attention(
        q, k, v, ctx, lambda rows: sink_keys(rows, s, reach, ctx.causal), width=width, compute_out=False))


register_variant(VariantSpec(
    name="sinks",
    display_name="Attention sinks + window",
    family="fixed pattern",
    paper="Xiao et al. 2023, Efficient Streaming Language Models with Attention Sinks (ICLR 2024; arXiv:2309.17453)",
    complexity="O(N·(2w + 1 + s)·d)",
    complexity_class="sparse",
    fn=sinks_window,
    cost=lambda s, sinks, window: sparse_cost(s, min(s.n, sinks + (window + 1 if s.causal else 2 * window + 1))),
    params=(Param("sinks", "int", 4, "attention sinks: the first s positions, attended by every query", low=0, high="N"),
            Param("window", "int", 64, "keys on each side of the query (|i − j| ≤ window; causal: the last window)",
                  low=1, high="N")),
    causal=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW),
    content_based=False,
    exact_when=lambda n, d, h: {"window": n},
    description="The first s tokens (sinks) plus a sliding window of reach w.",
))
