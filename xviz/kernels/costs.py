"""Cost models shared by the variants: FLOPs (a multiply-add counts 2) and the bytes each algorithm
materialises, at a ``Shape``. A variant's own ``cost(shape, **params)`` combines these."""
from __future__ import annotations

from ..core.registry import Cost, Shape

CAUSAL_CHUNK = 256  # query chunk of the causal prefix-sum kernels (xviz.kernels.feature)


def quadratic_cost(s: Shape, **_) -> Cost:
    """Fused exact attention: 2·N_q·N_k·(d + d_v) per head (half when causal), O(N) memory."""
    flops = s.b * s.h * 2 * s.n * s.nk * (s.d + s.dv) * (0.5 if s.causal else 1.0)
    return Cost(float(flops), float(4 * s.b * s.h * (s.n + s.nk) * (s.d + s.dv)))


def sparse_cost(s: Shape, keys_per_row: float, full_rows: int = 0, cap: bool = True) -> Cost:
    """Sparse attention with ``keys_per_row`` keys per query plus ``full_rows`` dense rows. ``cap=False``
    for kernels that compute whole blocks or spans, which may exceed N keys per row (padding, edges)."""
    kk = min(keys_per_row, s.nk) if cap else keys_per_row
    flops = s.b * s.h * (2 * s.n * kk * (s.d + s.dv) + full_rows * 2 * s.nk * (s.d + s.dv))
    nbytes = 4 * s.b * s.h * (s.n * (2 * s.d + 2 * s.dv) + s.n * kk * 2)  # inputs/outputs + logits and indices
    return Cost(float(flops), float(nbytes))


def linear_cost(s: Shape, m: int, feature_flops_per_token: float = 0.0) -> Cost:
    """φ(Q)(φ(K)ᵀV) with m features, plus the masked c × c products of the causal chunks."""
    n, nk = s.n, s.nk
    flops = s.b * s.h * (2 * nk * m * s.dv + 2 * n * m * s.dv + 2 * (n + nk) * m
                         + (n + nk) * feature_flops_per_token)
    nbytes = 4 * s.b * s.h * ((n + nk) * (s.d + s.dv) + (n + nk) * m + m * s.dv)
    if s.causal:
        c = min(CAUSAL_CHUNK, n)
        flops += s.b * s.h * 2 * n * c * (m + s.dv + 1)
        nbytes += 4 * s.b * s.h * c * c
    return Cost(float(flops), float(nbytes))
