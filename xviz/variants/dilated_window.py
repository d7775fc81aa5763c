"""Dilated sliding window: query i attends keys i + δ·t for |t| ≤ window (causal: −window ≤ t ≤ 0).

Longformer (Beltagy et al. 2020, §3.1 "Dilated sliding window") leaves gaps of δ − 1 between
attended keys so the receptive field grows to δ·w per layer at the same cost, and uses
*different dilations on different heads* (small ones for local context, larger ones further
away). Our choices: ``per_head`` = True gives head h the dilation 1 + (h mod δ), so head 0 stays
an undilated window and the others widen in turn; per_head = False uses δ in every head.
The dilation is fixed, not learned. dilation = 1 with window ≥ N is exact attention.
Pattern: ``patterns.dilated_window`` — in the layout of residue classes mod δ (positions r, r + δ,
r + 2δ, … side by side) the dilated window is a plain band, so tiles meet contiguous key spans
(strided views, no gather, no work on the skipped keys): O(N·(2w + 1)·d), no N×N tensor. The key
lists derived from the same pattern give the matrix and mask on request.
Cross-attention (N_q ≠ N_k, non-causal): query i sits at key position c(i) = ⌊(i + ½)·N_k/N_q⌋ and
gets the keys the pattern gives c(i) (``blocks.centres``).
"""
import torch

from ..kernels import patterns
from ..kernels.blocks import pattern_output
from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..kernels.sparse import KEYS_PER_ROW, MASK
from ..kernels.costs import sparse_cost


def dilated_window(q, k, v, ctx, window: int, dilation: int, per_head: bool):
    """Strided band: keys at multiples of the (per-head) dilation within ±window steps."""
    heads = q.shape[1]
    pattern = patterns.dilated_window(k.shape[-2], window=window, dilation=dilation, per_head=per_head,
                                      heads=heads, causal=ctx.causal)
    per = (1 + torch.arange(heads) % dilation) if per_head else torch.full((heads,), dilation)
    return pattern_output(q, k, v, ctx, pattern, extra={"dilation_per_head": per})


def cost(s, window, dilation, per_head):
    return sparse_cost(s, min(s.nk, (window + 1) if s.causal else 2 * window + 1))


register_variant(VariantSpec(
    name="dilated_window",
    display_name="Dilated window",
    family="fixed pattern",
    paper="Beltagy et al. 2020, Longformer (arXiv:2004.05150), §3.1 dilated sliding window",
    complexity="O(N·(2w + 1)·d)",
    complexity_class="sparse",
    fn=dilated_window,
    cost=cost,
    params=(
        Param("window", "int", 32, "attended steps on each side (keys i ± δ·t, t ≤ window)", low=1, high="N"),
        Param("dilation", "int", 2, "gap δ between attended keys (the largest one when per head)", low=1, high="N"),
        Param("per_head", "bool", False, "head h uses dilation 1 + (h mod δ), as Longformer varies it by head"),
    ),
    causal=True,
    cross=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW, Artifact("dilation_per_head", "curve", ("H",), "the gap δ between keys in each head")),
    content_based=False,
    exact_when=lambda n, d, h: {"window": n, "dilation": 1, "per_head": False},
    description="A sliding window that keeps every δ-th key, reaching δ·w positions at the cost of w.",
))
