"""Deliberately broken variants: each must fail exactly the check named in its docstring."""
from dataclasses import replace

import torch

import xviz
from xviz.kernels.costs import quadratic_cost, sparse_cost
from xviz.kernels.dense import dense_weights
from xviz.kernels.sparse import sparse_attention


def _window(q, k, v, ctx, reach=4):
    offsets = torch.arange(-reach, 1 if ctx.causal else reach + 1)
    return sparse_attention(q, k, v, ctx, lambda rows: (rows[:, None] + offsets, None), width=offsets.numel())


def leaky_causal(q, k, v, ctx):
    """Fails causality: mixes in a summary of *all* values (future included), as pooled landmarks do."""
    base = _window(q, k, v, ctx)
    n = q.shape[-2]
    out = 0.9 * base.out + 0.1 * v.mean(dim=-2, keepdim=True)
    return xviz.Output(out=out, matrix=lambda: 0.9 * base.matrix() + 0.1 / n)


def length_dependent(q, k, v, ctx):
    """Fails appending tokens: a causal window whose temperature depends on N (as M = N in cosFormer, or
    draws shaped by N): gradient-causal, yet every earlier output moves when a token is appended."""
    return _window(q, k, v, replace(ctx, scale=ctx.scale * (1 + 1 / q.shape[-2])))


def unnormalised(q, k, v, ctx):
    """Fails rows-are-distributions: weights scaled by 1.1."""
    return xviz.Output(out=1.1 * _window(q, k, v, ctx).out, matrix=lambda: 1.1 * _window(q, k, v, ctx).matrix())


def nondeterministic(q, k, v, ctx):
    """Fails determinism: random keys drawn from the global RNG instead of ctx.generator."""
    n = q.shape[-2]
    idx = torch.randint(0, n, (n, 4))

    def keys_for(rows):
        return torch.cat([rows[:, None], idx[rows]], dim=1), None

    return sparse_attention(q, k, v, ctx, keys_for, width=5)


def quadratic_claims_linear(q, k, v, ctx):
    """Fails complexity: builds the N×N weights on its compute path while claiming linear cost."""
    a = dense_weights(q, k, ctx.scale, ctx.causal)
    return xviz.Output(out=a @ v, matrix=lambda: a)


def _spec(name, fn, **kw):
    base = dict(display_name=name, family="fixed pattern", paper="test fixture", complexity="O(N·d)",
                complexity_class="sparse", cost=lambda s: sparse_cost(s, 9),
                causal=False, row_stochastic=True, content_based=False)
    base.update(kw)
    return xviz.VariantSpec(name=name, fn=fn, **base)


for _s in (
    _spec("broken_leaky_causal", leaky_causal, causal=True),
    _spec("broken_length_dependent", length_dependent, causal=True),
    _spec("broken_unnormalised", unnormalised),
    _spec("broken_nondeterministic", nondeterministic, stochastic=False),
    _spec("broken_quadratic", quadratic_claims_linear, complexity_class="linear", content_based=True,
          cost=quadratic_cost),
):
    xviz.register_variant(_s)
