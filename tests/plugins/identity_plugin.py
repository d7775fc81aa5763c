"""A minimal plugin for the engine tests: out = v (every token attends only to itself)."""
import xviz
from xviz.kernels.costs import sparse_cost
from xviz.kernels.sparse import sparse_attention


def identity(q, k, v, ctx):
    return sparse_attention(q, k, v, ctx, lambda rows: (rows[:, None], None), width=1)


xviz.register_variant(xviz.VariantSpec(
    name="identity_plugin", display_name="Identity (plugin)", family="fixed pattern", paper="test fixture",
    complexity="O(N·d)", complexity_class="linear", fn=identity,
    cost=lambda s: sparse_cost(s, 1),
    causal=True, row_stochastic=True, artifacts=("mask",), content_based=False,
))
