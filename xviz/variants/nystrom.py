"""Nyströmformer (Xiong et al. 2021): a Nyström approximation of the softmax matrix from m landmarks.

Landmarks are segment means: the N positions are cut into m contiguous segments (sizes ⌊N/m⌋
or ⌈N/m⌉ when m does not divide N; token t is in segment ⌊t·m/N⌋), and Q̃, K̃ are the means of
Q and K over each segment. With F = softmax(Q K̃ᵀ·scale) (N × m), A = softmax(Q̃ K̃ᵀ·scale)
(m × m) and B = softmax(Q̃ Kᵀ·scale) (m × N),

    out = (F · A⁺) · (B V),

where A⁺ is the paper's iterative pseudo-inverse (Newton–Schulz-type iteration
Z ← ¼ Z (13I − AZ (15I − AZ (7I − AZ))) from Z₀ = Aᵀ / (‖A‖₁‖A‖∞), ``pinv_iterations`` steps,
6 in the paper) or, with ``pinv = "exact"``, ``torch.linalg.pinv``. The m × m inverse is
computed in float64 whatever the input dtype (it costs O(m³) and is the ill-conditioned step).
With m = N and the exact pseudo-inverse the landmarks are the tokens themselves and
F A⁺ B = A A⁺ A = A, exact attention. Nothing here is learned in the paper either.

Cross-attention (N_q ≠ N_k): the key landmarks are m segment means of K over N_k and the query
landmarks min(m, N_q) segment means of Q over N_q; A is then rectangular and A⁺ its
pseudo-inverse (the same iteration converges to it). m_q = N_q, m = N_k and the exact
pseudo-inverse is again exact: F = A = B = softmax(QKᵀ·scale) and A A⁺ A = A.
Not causal: every landmark averages a segment, so early queries see later tokens.
The effective weights F A⁺ B are not row-stochastic (A⁺ has negative entries).
Compute: O(N·m·d + m³) time, O(N·m) memory; no N×N tensor.
Xiong et al. 2021, Nyströmformer: A Nyström-Based Algorithm for Approximating Self-Attention
(arXiv:2102.03902), §3.
"""
import torch

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import Output
from ..kernels.dense import cast_checked
from ..kernels.segments import segment_ids, segment_means


def iterative_pinv(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """The Nyströmformer pseudo-inverse of a batch of matrices a (..., m_q, m) (square unless cross).

    For a singular A (near-uniform softmax rows at small logits, repeated landmarks) the iteration
    multiplies its rounding errors in A's null space by p(0) = 13/4 per step, so run long enough it
    diverges (all-NaN at 100 steps, in float64 too). Each step's residual ‖A Z A − A‖_F (the first
    Penrose condition) is measured and each matrix keeps the iterate where it was smallest: while
    the iteration converges that is the last one, so the result is unchanged, and it never diverges."""
    eye = torch.eye(a.shape[-2], dtype=a.dtype, device=a.device)  # A Z is m_q × m_q
    norm_1 = a.abs().sum(-2).amax(-1)[..., None, None]  # largest column sum
    norm_inf = a.abs().sum(-1).amax(-1)[..., None, None]  # largest row sum (1 for softmax rows)
    z = a.transpose(-1, -2) / (norm_1 * norm_inf)
    best, best_res = z, torch.full(a.shape[:-2], float("inf"), dtype=a.dtype, device=a.device)
    for step in range(iterations + 1):
        az = a @ z
        res = torch.linalg.matrix_norm(az @ a - a)
        better = (res <= best_res)[..., None, None]  # NaN residuals (a diverged step) are never better
        best, best_res = torch.where(better, z, best), torch.where(better[..., 0, 0], res, best_res)
        if step < iterations:
            z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return best


def nystrom(q, k, v, ctx, landmarks: int, pinv_iterations: int, pinv: str):
    n, nk = q.shape[-2], k.shape[-2]
    cdt = torch.promote_types(q.dtype, torch.float32)
    q, k, v_ = q.to(cdt), k.to(cdt), v.to(cdt)
    m, mq = landmarks, min(landmarks, n)  # cross: at most N_q query landmarks
    seg, seg_q = segment_ids(nk, m, q.device), segment_ids(n, mq, q.device)
    q_l, k_l = segment_means(q, seg_q, mq), segment_means(k, seg, m)
    f = torch.softmax(q @ k_l.transpose(-1, -2) * ctx.scale, dim=-1)  # (B, H, N_q, m)
    a = torch.softmax(q_l @ k_l.transpose(-1, -2) * ctx.scale, dim=-1)  # (B, H, m_q, m)
    bm = torch.softmax(q_l @ k.transpose(-1, -2) * ctx.scale, dim=-1)  # (B, H, m_q, N_k)
    a64 = a.double()
    a_pinv = (torch.linalg.pinv(a64) if pinv == "exact" else iterative_pinv(a64, pinv_iterations)).to(cdt)
    fw = f @ a_pinv  # (B, H, N_q, m_q)
    # an ill-conditioned landmark matrix gives signed weights and outputs far beyond |v|
    out = cast_checked(fw @ (bm @ v_), v.dtype, "the Nyström output")
    dt = v.dtype
    return Output(out=out, matrix=lambda: cast_checked(fw @ bm, dt, "the Nyström weights"), artifacts={
        # (2, B, H, m, d): query, then key landmarks; cross with m_q < m: (1, B, H, m_q + m, d), queries first
        "landmarks": torch.stack([q_l, k_l]).to(dt) if mq == m else torch.cat([q_l, k_l], -2).to(dt)[None],
        "landmark_index": seg,  # (N_k,) segment of each key
        "F": lambda: f.to(dt),  # (B, H, N, m) softmax(Q K̃ᵀ)
        "A": lambda: a.to(dt),  # (B, H, m, m) softmax(Q̃ K̃ᵀ)
        "A_pinv": lambda: a_pinv.to(dt),  # (B, H, m, m) its (iterative) pseudo-inverse
        "B": lambda: bm.to(dt),  # (B, H, m, N) softmax(Q̃ Kᵀ)
    })


def nystrom_cost(s, landmarks, pinv_iterations, pinv):
    b, h, n, d, dv = s.b, s.h, max(s.n, s.nk), s.d, s.dv
    m = min(landmarks, s.nk)
    # iterative: 4 products per step plus the residual A Z A (2), once more for the last iterate
    pinv_flops = 2 * m**3 * (1 + 6 * pinv_iterations + 2) if pinv == "iterative" else 25 * m**3  # SVD ≈ 21 m³
    flops = b * h * (2 * n * d * 2  # landmark means
                     + 2 * n * m * d * 2 + 2 * m * m * d  # F, B, A logits
                     + 2 * m * n * dv + 2 * n * m * m + 2 * n * m * dv  # B V, F A⁺, (F A⁺)(B V)
                     + pinv_flops)
    nbytes = 4 * b * h * (n * (2 * d + 2 * dv) + 2 * n * m + 2 * n * m + 3 * m * m + 2 * m * d)
    return Cost(float(flops), float(nbytes))


register_variant(VariantSpec(
    name="nystrom",
    display_name="Nyströmformer",
    family="low rank",
    paper="Xiong et al. 2021, Nyströmformer: A Nyström-Based Algorithm for Approximating Self-Attention "
          "(arXiv:2102.03902)",
    complexity="O(N·m·d + m³)",
    complexity_class="linear",
    fn=nystrom,
    cost=nystrom_cost,
    params=(
        Param("landmarks", "int", 64, "landmarks m: segment means of Q and K (m ≤ N)", low=1, high="N", log=True),
        Param("pinv_iterations", "int", 6, "iterations of the iterative pseudo-inverse (the paper uses 6)",
              low=1, high=100),
        Param("pinv", "choice", "iterative", "pseudo-inverse of the landmark matrix: the paper's iteration, "
              "or exact (torch.linalg.pinv)", choices=("iterative", "exact")),
    ),
    causal=False,
    cross=True,
    row_stochastic=False,
    signed=True,  # the pseudo-inverse has negative entries
    low_rank=lambda k, fixed: {"landmarks": k},
    artifacts=(Artifact("landmarks", "points", ("2", "B", "H", "m", "d"), "query landmarks Q̃, then key landmarks K̃"),
               Artifact("landmark_index", "ids", ("N",), "the segment (landmark) of each token"),
               Artifact("F", "matrix", ("B", "H", "N", "m"), "softmax(Q K̃ᵀ)"),
               Artifact("A", "matrix", ("B", "H", "m", "m"), "softmax(Q̃ K̃ᵀ)"),
               Artifact("A_pinv", "matrix", ("B", "H", "m", "m"), "the (iterative) pseudo-inverse of A"),
               Artifact("B", "matrix", ("B", "H", "m", "N"), "softmax(Q̃ Kᵀ)")),
    exact_when=lambda n, d, h: {"landmarks": n, "pinv": "exact"},
    content_based=False,
    description="softmax(QK̃ᵀ)·pinv(softmax(Q̃K̃ᵀ))·softmax(Q̃Kᵀ)V with segment-mean landmarks Q̃, K̃.",
))
