"""Linformer (Wang et al. 2020): project the N keys and values down to k rows.

    out = softmax(Q (E K)ᵀ·scale) (F V),   E, F: k × N.

The paper *learns* E and F (one pair per layer, optionally shared, E = F). Here they are fixed,
shared by every batch element and head, and chosen by ``projection``:
- "gaussian": entries drawn from N(0, 1/k) with the run's seed — the random projection of the
  paper's Theorem 1 (Johnson–Lindenstrauss), E[EᵀE] = I. ``shared`` = False draws F independently.
- "pool": row r of E averages the r-th of k contiguous segments (sizes ⌊N/k⌋ or ⌈N/k⌉), a
  fixed stand-in for the learned projection; E = F (so ``shared`` changes nothing).
- "identity": E = F = I, allowed only with k = N; this is exact attention.
Untrained, the Gaussian projections are a poor approximation: E K and F V have entries about
√(N/k) times those of K and V, so the logits sharpen and the output grows with N/k (relative
error ≈ 3 at N = 128, ≈ 50 at N = 1024, k = 64, d = 16); "pool" stays bounded (0.6, 0.8).
The effective weights are P·F with P the N × k softmax: rank ≤ k, and not row-stochastic in
general (Gaussian F has negative entries; a row of P·F sums to a P-weighted mean of F's row sums).
Not causal: every projected key mixes all N positions.
Cross-attention (N_q ≠ N_k): E and F project the N_k keys and values (k × N_k); the queries are
untouched, so any N_q works and the matrix is P·F, (N_q × N_k).
Compute: O(N·k·d) time and memory; no N×N tensor.
Wang et al. 2020, Linformer: Self-Attention with Linear Complexity (arXiv:2006.04768), §4.
"""
import math

import torch

from ..core.errors import ParameterError
from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import Output, check_budget
from ..kernels.dense import cast_checked
from ..kernels.segments import segment_ids


def projection_matrix(ctx, kind: str, rank: int, n: int, salt: int) -> torch.Tensor | None:
    """The k × N projection (CPU; Gaussian float32, pooling float64), or None for the identity."""
    if kind == "identity":
        return None
    if kind == "gaussian":
        return torch.randn(rank, n, generator=ctx.generator(salt)) / math.sqrt(rank)
    seg = segment_ids(n, rank)
    e = torch.zeros(rank, n, dtype=torch.float64)  # 1/size in float64: float32 rows of thirds sum to 1 + 3e-8
    e[seg, torch.arange(n)] = 1.0 / torch.bincount(seg, minlength=rank).double()[seg]
    return e


def linformer(q, k, v, ctx, rank: int, projection: str, shared: bool):
    n = k.shape[-2]  # the projections act on the keys' length (cross-attention: N_k)
    cdt = torch.promote_types(q.dtype, torch.float32)
    e = projection_matrix(ctx, projection, rank, n, salt=1)
    f = e if (shared or projection != "gaussian") else projection_matrix(ctx, projection, rank, n, salt=2)
    e, f = ((None if t is None else t.to(q.device, cdt)) for t in (e, f))
    k_proj = k.to(cdt) if e is None else e @ k.to(cdt)  # (B, H, k, d)
    v_proj = v.to(cdt) if f is None else f @ v.to(cdt)  # (B, H, k, dv)
    p = torch.softmax(q.to(cdt) @ k_proj.transpose(-1, -2) * ctx.scale, dim=-1)  # (B, H, N, k)
    out = cast_checked(p @ v_proj, v.dtype, "the Linformer output (random projections can exceed |v|)")

    def matrix():
        return cast_checked(p if f is None else p @ f, v.dtype, "the Linformer weights")

    def proj():
        if e is None:
            check_budget((n, n), q.element_size(), "the identity projection")
            return torch.eye(n, dtype=q.dtype, device=q.device)[None]
        return torch.stack([e] if shared else [e, f]).to(q.dtype)

    # projection: (1, k, N) = E when shared, else (2, k, N) = E, F.
    return Output(out=out, matrix=matrix, artifacts={"projection": proj})


def linformer_cost(s, rank, projection, shared):
    b, h, n, nk, d, dv = s.b, s.h, s.n, s.nk, s.d, s.dv
    k = min(rank, nk)
    project = 0 if projection == "identity" else 2 * k * nk * (d + dv)
    flops = b * h * (project + 2 * n * k * (d + dv) + 3 * n * k)
    nbytes = 4 * (b * h * ((n + nk) * (d + dv) + n * k + k * (d + dv))
                  + (0 if projection == "identity" else (1 if shared else 2) * k * nk))
    return Cost(float(flops), float(nbytes))


def _check(params, n, d, heads):
    if params["projection"] == "identity" and params["rank"] != n:
        raise ParameterError(
            f"projection = 'identity' needs rank = N = {n} (an N × N identity); got rank = {params['rank']}. "
            f"Set rank = {n}, or use projection 'gaussian' or 'pool'."
        )


register_variant(VariantSpec(
    name="linformer",
    display_name="Linformer",
    family="low rank",
    paper="Wang et al. 2020, Linformer: Self-Attention with Linear Complexity (arXiv:2006.04768)",
    complexity="O(N·k·d)",
    complexity_class="linear",
    fn=linformer,
    cost=linformer_cost,
    params=(
        Param("rank", "int", 64, "projected length k (E, F: k × N_k; k ≤ N_k)", low=1, high="N", log=True),
        Param("projection", "choice", "gaussian", "E, F: seeded N(0, 1/k) (the paper learns them), segment "
              "means, or the identity (k = N only)", choices=("gaussian", "pool", "identity")),
        Param("shared", "bool", False, "share one projection for keys and values (E = F)"),
    ),
    causal=False,
    cross=True,
    stochastic=True,
    row_stochastic=lambda p: p["projection"] != "gaussian",  # pooling and the identity keep rows stochastic
    signed=lambda p: p["projection"] == "gaussian",
    low_rank=lambda k, fixed: {"rank": k},
    artifacts=(Artifact("projection", "matrix", ("1 or 2", "k", "N"), "the length projections E (and F)"),),
    exact_when=lambda n, d, h: {"projection": "identity", "rank": n},
    check=_check,
    content_based=False,
    description="softmax(Q(EK)ᵀ/√d)(FV) with fixed k × N projections E, F.",
))
