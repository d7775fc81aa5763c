"""The rank-k SVD oracle: the best rank-k approximation of the exact attention matrix.

Builds the exact A = softmax(QKᵀ·scale) (quadratic by nature), takes its singular value
decomposition A = U Σ Wᵀ and keeps the k largest singular values: A_k = U_k Σ_k W_kᵀ,
out = A_k V. By the Eckart–Young–Mirsky theorem A_k is the best rank-k matrix in both the
Frobenius norm (error √Σ_{i>k} σᵢ²) and the spectral norm (error σ_{k+1}), so no rank-k method
(Linformer, Nyström at rank/landmarks k) can have a smaller error in those norms. Not a method
anyone runs: a yardstick. It needs A itself, so it is refused with BudgetError (before
allocating) when B·H·N² would pass the matrix budget; the SVD is done in float32, or float64
for float64 inputs.

Not causal: the truncated A_k of a lower-triangular A is not lower-triangular.
Not row-stochastic: A_k has negative entries and its rows need not sum to one.
Compute: O(N²·d) for A plus O(N³) for the SVD; O(N²) memory.
Eckart & Young 1936, The approximation of one matrix by another of lower rank (Psychometrika 1(3));
the comparison is the one of Wang et al. 2020, Linformer, Fig. 1 (arXiv:2006.04768).
"""
import torch

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import Output, check_budget
from ..kernels.dense import dense_weights


def svd_oracle(q, k, v, ctx, rank: int):
    b, h, n, _ = q.shape
    cdt = torch.promote_types(q.dtype, torch.float32)
    # A, U and Wᵀ are each B·H·N² at the compute dtype.
    check_budget((3, b, h, n, n), torch.finfo(cdt).bits // 8, "the SVD oracle's exact matrix and its factors")
    a = dense_weights(q.to(cdt), k.to(cdt), ctx.scale, causal=False)
    u, s, wt = torch.linalg.svd(a, full_matrices=False)
    u_k, s_k, wt_k = u[..., :rank], s[..., :rank], wt[..., :rank, :]
    out = ((u_k * s_k[..., None, :]) @ (wt_k @ v.to(cdt))).to(v.dtype)
    return Output(
        out=out,
        matrix=lambda: ((u_k * s_k[..., None, :]) @ wt_k).to(v.dtype),
        artifacts={"singular_values": s.to(v.dtype)},  # (B, H, N), all of them, largest first
    )


def svd_cost(s, rank):
    b, h, n, d, dv = s.b, s.h, s.n, s.d, s.dv
    k = min(rank, n)
    # A: 2N²d plus the softmax; a full SVD with both factors ≈ 22 N³ (Golub & Van Loan); A_k V: 2Nk(N + dv).
    flops = b * h * (2 * n * n * d + 5 * n * n + 22 * n**3 + 2 * k * n * dv + 2 * n * k * dv)
    nbytes = 4 * b * h * (n * (2 * d + 2 * dv) + 3 * n * n + n)
    return Cost(float(flops), float(nbytes))


register_variant(VariantSpec(
    name="svd",
    display_name="SVD oracle (best rank k)",
    family="low rank",
    paper="Eckart & Young 1936, The approximation of one matrix by another of lower rank (Psychometrika 1(3)); "
          "as in Wang et al. 2020, Linformer, Fig. 1 (arXiv:2006.04768)",
    complexity="O(N²·d + N³)",
    complexity_class="cubic",
    fn=svd_oracle,
    cost=svd_cost,
    params=(Param("rank", "int", 32, "singular values kept, k (k ≤ N)", low=1, high="N", log=True),),
    causal=False,
    cross=True,
    row_stochastic=False,
    signed=True,  # a truncated SVD of a stochastic matrix has negative entries
    low_rank=lambda k, fixed: {"rank": k},
    artifacts=(Artifact("singular_values", "curve", ("B", "H", "N"), "every singular value of the exact matrix, largest first"),),
    exact_when=lambda n, d, h: {"rank": n},
    content_based=True,
    description="A_k V with A_k the truncated SVD of the exact softmax matrix (Eckart–Young optimal).",
))
