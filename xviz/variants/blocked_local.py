"""Blocked local attention: the sequence is cut into chunks of ``block`` positions; every query in
a chunk attends all keys of its own chunk and of ``look_back`` chunks before and ``look_forward``
chunks after it (causal: the look-forward chunks are dropped and the own chunk is masked j ≤ i).

This is the "local attention" of Image Transformer's 1-D blocks (Parmar et al. 2018, query
blocks attending a memory block around them) and of blockwise / chunked local attention as in
lucidrains' ``local-attention`` (``look_backward`` / ``look_forward``). Unlike a sliding window,
all queries of a chunk share one key set, so the pattern is a block band. Nothing is learned.
Our choices: chunks are aligned to position 0 (the last chunk may be short); look-back/forward
beyond the sequence are clamped, so look_back = look_forward = N is exact attention.
Pattern: ``patterns.blocked_local`` — a block table whose rows are consecutive chunks, so each
chunk meets its (back + forward + 1) key chunks as one strided view of K and V and one batched
matmul (no gather), O(N·(back + forward + 1)·block·d); no N×N tensor. The key lists derived from
the same pattern give the matrix and mask on request.
Cross-attention (N_q ≠ N_k, non-causal): query i sits at key position c(i) = ⌊(i + ½)·N_k/N_q⌋ and
gets the keys the pattern gives c(i) (``blocks.centres``).
"""
from ..kernels import patterns
from ..kernels.blocks import pattern_output
from ..core.registry import Param, VariantSpec, register_variant
from ..kernels.sparse import KEYS_PER_ROW, MASK
from ..kernels.costs import sparse_cost


def blocked_local(q, k, v, ctx, block: int, look_back: int, look_forward: int):
    """Block-band attention: chunk ⌊i/block⌋ attends chunks ⌊i/block⌋ − look_back … + look_forward."""
    return pattern_output(q, k, v, ctx, patterns.blocked_local(
        k.shape[-2], block=block, look_back=look_back, look_forward=look_forward, causal=ctx.causal))


def cost(s, block, look_back, look_forward):
    block = min(block, s.nk)
    keys = look_back * block + ((block + 1) / 2 if s.causal else (look_forward + 1) * block)
    return sparse_cost(s, min(keys, s.nk))


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
    cross=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW),
    content_based=False,
    exact_when=lambda n, d, h: {"look_back": n, "look_forward": n},
    description="Chunks of b tokens attend to themselves and their neighbouring chunks (a block band).",
))
