"""Exact softmax attention (Vaswani et al. 2017), through PyTorch's fused kernel.

The fused kernel never builds the N×N weights; ``matrix()`` recomputes them for display.
"""
import torch
import torch.nn.functional as F

from ..registry import Cost, VariantSpec, register_variant
from ..result import Output


def dense_weights(q, k, scale: float, causal: bool, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(QKᵀ·scale + bias) with the causal mask: the reference every variant is held against."""
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale
    if bias is not None:
        logits = logits + bias
    if causal:
        n = q.shape[-2]
        logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.softmax(logits, dim=-1)


def exact(q, k, v, ctx):
    out = F.scaled_dot_product_attention(q, k, v, is_causal=ctx.causal, scale=ctx.scale)
    return Output(out=out, matrix=lambda: dense_weights(q, k, ctx.scale, ctx.causal))


def quadratic_cost(b, h, n, d, dv, causal=False, **_):
    flops = b * h * 2 * n * n * (d + dv) * (0.5 if causal else 1.0)
    return Cost(float(flops), float(4 * b * h * n * (2 * d + 2 * dv)))


register_variant(VariantSpec(
    name="exact",
    display_name="Exact softmax",
    family="exact",
    paper="Vaswani et al. 2017, Attention Is All You Need (arXiv:1706.03762)",
    complexity="O(N²·d) time, O(N) memory (fused kernel)",
    complexity_class="quadratic",
    fn=exact,
    cost=quadratic_cost,
    causal=True,
    row_stochastic=True,
    content_based=True,
    exact_when=lambda n, d, h: {},
    description="softmax(QKᵀ/√d)V via torch.nn.functional.scaled_dot_product_attention.",
))
