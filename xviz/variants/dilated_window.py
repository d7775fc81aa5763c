"""Dilated sliding window: query i attends keys i + δ·t for |t| ≤ window (causal: −window ≤ t ≤ 0).

Longformer (Beltagy et al. 2020, §3.1 "Dilated sliding window") leaves gaps of δ − 1 between
attended keys so the receptive field grows to δ·w per layer at the same cost, and uses
*different dilations on different heads* (small ones for local context, larger ones further
away). Our choices: ``per_head`` = True gives head h the dilation 1 + (h mod δ), so head 0 stays
an undilated window and the others widen in turn; per_head = False uses δ in every head.
The dilation is fixed, not learned. dilation = 1 with window ≥ N is exact attention.
Compute: the positions ≡ r (mod δ) form δ subsequences on which the dilated window is a plain
window of reach w, so ``band_attention`` runs on them (batched matmuls, no gather, no work on
skipped keys): O(N·(2w + 1)·d), no N×N tensor. The key lists (``patterns.dilated_window``)
give the matrix and mask on request.
"""
import torch

from ..kernels import patterns
from ..kernels.blocks import lazy_views
from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..kernels.band import band_attention
from ..kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention
from ..kernels.costs import sparse_cost


def _residue_band(q, k, v, ctx, window: int, dil: int) -> torch.Tensor:
    """Dilation δ as δ interleaved subsequences (positions r, r + δ, r + 2δ, …), each attended
    with a plain band of reach ``window``: no gather and no work on the skipped keys."""
    b, h, n, _ = q.shape
    rows = -(-n // dil)
    total = rows * dil

    def split(x):  # (B, h, N, c) -> (B, h·δ, rows, c): "head" h·δ + r holds residue r
        x = torch.nn.functional.pad(x, (0, 0, 0, total - n))
        return x.view(b, h, rows, dil, x.shape[-1]).transpose(2, 3).reshape(b, h * dil, rows, x.shape[-1])

    length = (n - torch.arange(dil, device=q.device) + dil - 1) // dil  # real positions per residue
    length = length.repeat(h).view(-1, 1, 1, 1)
    out = band_attention(split(q), split(k), split(v), ctx, back=window, forward=window,
                         allowed=lambda i, j: j < length)
    return out.view(b, h, dil, rows, -1).transpose(2, 3).reshape(b, h, total, -1)[:, :, :n]


def dilated_window(q, k, v, ctx, window: int, dilation: int, per_head: bool):
    """Strided band: keys at multiples of the (per-head) dilation within ±window steps."""
    n, heads = q.shape[-2], q.shape[1]
    kw = dict(window=window, dilation=dilation, per_head=per_head, heads=heads, causal=ctx.causal)
    width = patterns.dilated_window(torch.zeros(1, dtype=torch.long, device=q.device), n, **kw)[0].shape[-1]
    per = (1 + torch.arange(heads) % dilation) if per_head else torch.full((heads,), dilation)
    out = q.new_empty(*q.shape[:3], v.shape[-1])
    for dil in per.unique().tolist():
        sel = (per == dil).nonzero().flatten().to(q.device)
        out[:, sel] = _residue_band(q[:, sel], k[:, sel], v[:, sel], ctx, window, dil)
    return lazy_views(out, lambda: sparse_attention(
        q, k, v, ctx, lambda rows: patterns.dilated_window(rows, n, **kw), width=width, compute_out=False),
        extra={"dilation_per_head": per})


def cost(s, window, dilation, per_head):
    return sparse_cost(s, min(s.n, (window + 1) if s.causal else 2 * window + 1))


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
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW, Artifact("dilation_per_head", "curve", ("H",), "the gap δ between keys in each head")),
    content_based=False,
    exact_when=lambda n, d, h: {"window": n, "dilation": 1, "per_head": False},
    description="A sliding window that keeps every δ-th key, reaching δ·w positions at the cost of w.",
))
