"""Attention sinks + a window (Xiao et al. 2023, StreamingLLM).

Every query attends the first ``sinks`` positions (the "attention sinks" a pretrained LM dumps
surplus attention on; keeping their keys and values is what lets a window-attention LM stream
past its training length) and the keys within ``window`` of it: |i − j| ≤ window (causal:
0 ≤ i − j ≤ window, the rolling KV cache of the paper). A sink inside the window counts once.
Nothing is learned; the paper keeps 4 sinks, as here. window ≥ N is exact attention.
This is the built-in form of the tutorial plugin ``examples/sink_window.py`` (which stays the
example, computed through per-row key lists); the tests hold the two equal.
Compute: one block pattern (``kernels.patterns.window`` with the sinks as columns every query
meets): band tiles plus the sink columns, no gather and no N×N tensor, O(N·(2w + 1 + s)·d); the
pattern's key lists give the matrix and mask on request.
Xiao et al. 2023, Efficient Streaming Language Models with Attention Sinks (ICLR 2024;
arXiv:2309.17453), §3.
"""
import torch

from ..core.registry import Param, VariantSpec, register_variant
from ..kernels import patterns
from ..kernels.blocks import pattern_output
from ..kernels.costs import sparse_cost
from ..kernels.sparse import KEYS_PER_ROW, MASK


def sinks_window(q, k, v, ctx, sinks: int, window: int):
    """The window as one block pattern (band tiles) with the sinks as columns every query meets."""
    n = q.shape[-2]
    pattern = patterns.window(n, back=window, forward=window, causal=ctx.causal)
    s = min(sinks, n)
    pattern.parts[0].columns = torch.arange(s)[None] if s else None
    return pattern_output(q, k, v, ctx, pattern)


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
