"""Set Transformer ISAB (Lee et al. 2019): m inducing points attend to the set, the set attends to them.

ISAB_m(X) = MAB(X, H) with H = MAB(I, X): two multihead attention blocks through m inducing
points I. With only q, k, v given (no projections, residuals, LayerNorm or rFF — those are learned
or act after attention), we map them onto the two MABs as follows:

1. MAB(I, X): the inducing points are the queries; k, v are the set's keys and values:
       S = softmax(I Kᵀ·scale)                     (m × N_k)
2. MAB(X, H): q are the queries; H's keys and values are the summaries the inducing points
   made, with the first block's key and value projections (one set of K/V projections, so a
   summary of the tokens has keys S K and values S V):
       out = softmax(Q (S K)ᵀ·scale) (S V).
The effective weights are P·S with P = softmax(Q (S K)ᵀ·scale) (N_q × m): non-negative, rows
summing to one, rank ≤ m (``low_rank``). Cross-attention (N_q ≠ N_k) is natural: the inducing
points read the key set, the queries read the inducing points.

When is it exact? P·S V = exact for every V needs S to act as a permutation: if m = N and S is a
permutation matrix Π, then S K = Π K, S V = Π V and softmax(Q KᵀΠᵀ)Π V = softmax(Q Kᵀ) V. A
softmax row is never exactly one-hot, so exactness is a limit: inducing points that make I Kᵀ·scale
= α·Π (for d ≥ N, I = α (K Kᵀ)⁻¹ K / scale, the dual basis of the keys) give
S = ((e^α − 1) Π + J) / (e^α + N − 1) (J the all-ones matrix), which tends to Π as α → ∞; the
tests hold the output error to that closed form. With m > N some key is read twice (or an extra
slot averages several keys) and the result is never exact; with m < N the rank bounds it.

``inducing``: "seeded" draws I from N(0, I_d) per head with the run's seed (the paper learns I;
shared by the batch, like a parameter); "kmeans" uses m k-means centroids of each head's keys
(Lloyd, 10 iterations from m keys drawn from the seed): inducing points where the keys are.
Not causal: the inducing points read the whole set (the Set Transformer is permutation
equivariant, so there is no order to respect).
Compute: O((N_q + N_k)·m·d) time and O((N_q + N_k)·m) memory; no N×N tensor.
Lee et al. 2019, Set Transformer: A Framework for Attention-based Permutation-Invariant Neural
Networks (ICML; arXiv:1810.00825), §3 (MAB, SAB, ISAB).
"""
import torch

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import Output
from ..kernels.clustering import kmeans, random_rows
from ..kernels.dense import work_dtype

_SALT = 0x15AB
KMEANS_ITERATIONS = 10


def inducing_points(k, ctx, m: int, how: str) -> torch.Tensor:
    """(1, H, m, d) seeded Gaussian points, or (B, H, m, d) k-means centroids of the keys (detached)."""
    b, h, nk, d = k.shape
    if how == "seeded":
        return ctx.randn(1, h, m, d, like=k, salt=_SALT)
    x = k.detach()
    init = x.gather(2, random_rows(b, h, nk, m, ctx.generator(_SALT), k.device).unsqueeze(-1).expand(b, h, m, d))
    return kmeans(x, init, KMEANS_ITERATIONS, spherical=False)[0]


def isab_attention(q, k, v, points, scale: float):
    """The two MABs' attention on given inducing points (B or 1, H, m, d): returns out, P (N_q × m) and
    S (m × N_k)."""
    s = torch.softmax(torch.matmul(points, k.transpose(-1, -2)) * scale, dim=-1)  # (B, H, m, N_k)
    k_h, v_h = torch.matmul(s, k), torch.matmul(s, v)  # the summaries' keys and values
    p = torch.softmax(torch.matmul(q, k_h.transpose(-1, -2)) * scale, dim=-1)  # (B, H, N_q, m)
    return torch.matmul(p, v_h), p, s


def isab(q, k, v, ctx, inducing: int, placement: str):
    cdt = work_dtype(q.dtype)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    m = min(inducing, k.shape[-2]) if placement == "kmeans" else inducing
    points = inducing_points(kc, ctx, m, placement)
    out, p, s = isab_attention(qc, kc, vc, points, ctx.scale)
    dt = v.dtype
    return Output(out=out.to(dt), matrix=lambda: torch.matmul(p, s).to(dt), artifacts={
        "inducing_points": points.to(dt),  # (1 or B, H, m, d)
        "induced_reads": lambda: s.to(dt),  # (B, H, m, N_k): S, what each inducing point reads
        "query_reads": lambda: p.to(dt),  # (B, H, N_q, m): P, how each query weighs the points
    })


def cost(s, inducing, placement):
    m = inducing if placement == "seeded" else min(inducing, s.nk)
    km = (KMEANS_ITERATIONS + 1) * 2 * s.nk * m * s.d if placement == "kmeans" else 0
    flops = s.b * s.h * (2 * m * s.nk * (2 * s.d + s.dv) + 2 * s.n * m * (s.d + s.dv) + km)
    nbytes = 4 * s.b * s.h * ((s.n + s.nk) * (s.d + s.dv) + (s.n + s.nk) * m + m * (2 * s.d + s.dv))
    return Cost(float(flops), float(nbytes))


register_variant(VariantSpec(
    name="isab",
    display_name="Set Transformer ISAB",
    family="memory/downsampling",
    paper="Lee et al. 2019, Set Transformer: A Framework for Attention-based Permutation-Invariant Neural "
          "Networks (ICML 2019; arXiv:1810.00825)",
    complexity="O((N_q + N_k)·m·d)",
    complexity_class="linear",
    fn=isab,
    cost=cost,
    params=(
        Param("inducing", "int", 32, "inducing points m (the effective matrix has rank ≤ m)", low=1, high=4096,
              log=True),
        Param("placement", "choice", "seeded", "inducing points: seeded N(0, I) draws (the paper learns them), "
              "or k-means centroids of the keys (m ≤ N)", choices=("seeded", "kmeans")),
    ),
    causal=False,
    cross=True,
    stochastic=True,
    row_stochastic=True,
    low_rank=lambda k, fixed: {"inducing": k},
    artifacts=(Artifact("inducing_points", "points", ("1 or B", "H", "m", "d"), "the inducing points I"),
               Artifact("induced_reads", "matrix", ("B", "H", "m", "Nk"), "S = softmax(I Kᵀ): what each point reads"),
               Artifact("query_reads", "matrix", ("B", "H", "Nq", "m"), "P = softmax(Q (SK)ᵀ): how queries weigh points")),
    content_based=True,
    description="Inducing points summarise the keys and values (S K, S V); queries attend the m summaries.",
))
