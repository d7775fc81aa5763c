"""Exact softmax attention (Vaswani et al. 2017), through PyTorch's fused kernel.

The fused kernel never builds the N×N weights; ``matrix()`` recomputes them for display.
"""
import torch.nn.functional as F

from ..core.registry import VariantSpec, register_variant
from ..core.result import Output
from ..kernels.costs import quadratic_cost
from ..kernels.dense import dense_weights


def exact(q, k, v, ctx):
    out = F.scaled_dot_product_attention(q, k, v, is_causal=ctx.causal, scale=ctx.scale)
    return Output(out=out, matrix=lambda: dense_weights(q, k, ctx.scale, ctx.causal))


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
    cross=True,
    row_stochastic=True,
    content_based=True,
    exact_when=lambda n, d, h: {},
    description="softmax(QKᵀ/√d)V via torch.nn.functional.scaled_dot_product_attention.",
))
