"""Performer, FAVOR+ (Choromanski et al. 2021): softmax attention through random features.

With x = q·scale^½ and y = k·scale^½ (so that the kernel estimated is exp(q·k·scale)) and W an
m × d matrix of random rows w ~ N(0, I_d):
- "positive" features: φ(x) = exp(Wx − ‖x‖²/2)/√m, so E[φ(x)ᵀφ(y)] = exp(xᵀy) with every
  feature positive (the implicit weights are row-stochastic);
- "trig" features: φ(x) = exp(‖x‖²/2)/√m · [sin(Wx), cos(Wx)] (2m features), the random
  Fourier features of the paper's baseline: also unbiased, but weights can be negative and
  normalisers near zero, so the output can blow up.
``orthogonal`` draws W in blocks of d mutually orthogonal rows (Haar-random, from a QR
decomposition with the sign fix), each row rescaled by an independent χ_d-distributed norm so
it is marginally N(0, I_d) like an iid row: still unbiased, lower variance (the paper's Thm 2).
``stabilize`` keeps every number in range with shifts that cancel exactly. Positive features are
handled in log space (xviz.kernels.logfeature): a per-feature maximum over the keys is moved from
the keys to the queries (the product φ(q)ᵀφ(k) is unchanged) and each query row is shifted by its
own maximum (cancels in its normalisation), so every row's largest term is exactly 1 and no row
can underflow to zero, however large the logits (an earlier version subtracted one global key
maximum and lost most rows at inputs ×30 in float32); causal rows use a running per-feature
maximum and exact in-chunk weights. Trig features subtract each query's ‖x‖²/2 and the keys'
largest. The trig shifts are constants for autograd (detached), as they are for the output.
Without ``stabilize`` features that overflow or underflow are refused with a ParameterError.
One W is drawn per run (seeded) and shared by every batch element and head; the paper
redraws it during training, which is not a learned choice.
out = D⁻¹ φ(Q)(φ(K)ᵀV) through xviz.kernel.linear_attention; causal via its chunked prefix sums.
Compute: O(N·m·d) time, O(N·m) memory.
Choromanski et al. 2021, Rethinking Attention with Performers (ICLR; arXiv:2009.14794), §2.
"""
import math

import torch

from ..core.errors import ParameterError
from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..core.result import Output, all_finite
from ..kernels.costs import linear_cost
from ..kernels.feature import kernel_output
from ..kernels.logfeature import log_feature_attention


def draw_projection(gen: torch.Generator, m: int, d: int, orthogonal: bool) -> torch.Tensor:
    """An m × d float64 random projection whose rows are each marginally N(0, I_d). Orthogonal: blocks of
    d mutually orthogonal rows; the last block's k = m mod d rows are a Haar k-frame from the reduced QR of a
    d × k Gaussian, so memory stays O(m·d) even when d is far larger than m (no d × d block)."""
    if not orthogonal:
        return torch.randn(m, d, generator=gen, dtype=torch.float64)
    full, rest = divmod(m, d)
    g = torch.randn(full, d, d, generator=gen, dtype=torch.float64)  # independent blocks
    blocks = [g] + ([torch.randn(1, rest, d, generator=gen, dtype=torch.float64)] if rest else [])
    rows = []
    for b in blocks:
        qm, r = torch.linalg.qr(b.transpose(-1, -2))  # (·, d, k) orthonormal columns
        qm = qm * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]  # sign fix: Haar-distributed
        rows.append(qm.transpose(-1, -2).reshape(-1, d))  # each block's orthonormal rows, stacked
    norms = torch.randn(m, d, generator=gen, dtype=torch.float64).norm(dim=1)  # χ_d
    return torch.cat(rows)[:m] * norms[:, None]


def feature_map(x: torch.Tensor, w: torch.Tensor, kernel: str, stabilize: bool, is_query: bool) -> torch.Tensor:
    """φ(x) for x (..., N, d) already multiplied by scale^½; w (..., m, d). Without ``stabilize``,
    φ(x)ᵀφ(y) is an unbiased estimate of exp(xᵀy)."""
    m = w.shape[-2]
    u = x @ w.mT  # (..., N, m)
    half_sq = (x * x).sum(-1, keepdim=True) / 2
    if kernel == "positive":
        log_phi = u - half_sq
        if stabilize:
            top = log_phi.amax(-1, keepdim=True) if is_query else log_phi.amax((-1, -2), keepdim=True)
            log_phi = log_phi - top.detach()
        return torch.exp(log_phi) / math.sqrt(m)
    log_scale = half_sq
    if stabilize:
        top = log_scale if is_query else log_scale.amax(-2, keepdim=True)
        log_scale = log_scale - top.detach()
    return torch.exp(log_scale) * torch.cat([torch.sin(u), torch.cos(u)], dim=-1) / math.sqrt(m)


def log_positive_features(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """log φ(x) = Wx − ‖x‖²/2 − log √m for the positive features (x already multiplied by scale^½)."""
    return (x @ w.mT).sub_((x * x).sum(-1, keepdim=True) / 2 + 0.5 * math.log(w.shape[-2]))


def performer(q, k, v, ctx, features: int, kernel: str, orthogonal: bool, stabilize: bool):
    d = q.shape[-1]
    cdt = torch.promote_types(q.dtype, torch.float32)
    w = draw_projection(ctx.generator(1), features, d, orthogonal)
    w_c = w.to(q.device, cdt)
    root = math.sqrt(ctx.scale)
    xq, xk = q.to(cdt) * root, k.to(cdt) * root
    if kernel == "positive" and stabilize:
        lq, lk = log_positive_features(xq, w_c), log_positive_features(xk, w_c)
        out, matrix = log_feature_attention(lq, lk, v.to(cdt), ctx.causal)
        dt = v.dtype
        return Output(out=out.to(dt), matrix=lambda: matrix().to(dt), artifacts={
            # (2, B, H, N, m): φ(Q), φ(K), each divided by its largest entry (display)
            "features": lambda: torch.stack([torch.exp(lq - lq.amax((-1, -2), keepdim=True)),
                                             torch.exp(lk - lk.amax((-1, -2), keepdim=True))]).to(q.dtype),
            "projection": w.to(q.device, q.dtype),  # (m, d) W
        })
    phi_q = feature_map(xq, w_c, kernel, stabilize, is_query=True)
    phi_k = feature_map(xk, w_c, kernel, stabilize, is_query=False)
    result = kernel_output(phi_q, phi_k, v, ctx.causal, {
        "features": lambda: torch.stack([phi_q, phi_k]).to(q.dtype),  # (2, B, H, N, m or 2m): φ(Q), φ(K)
        "projection": w.to(q.device, q.dtype),  # (m, d) W
    })
    _check_features(phi_q, phi_k, result.out, kernel, stabilize, ctx.causal)
    return result


def _check_features(phi_q, phi_k, out, kernel: str, stabilize: bool, causal: bool) -> None:
    """Refuse, naming the parameter, what floating point cannot represent on the unstabilised or
    trigonometric paths: non-finite features or output, or (positive features) a row whose every
    weight underflowed to zero."""
    finite = all_finite(phi_q) and all_finite(phi_k) and all_finite(out)
    empty = False
    if finite and kernel == "positive":  # each row's normaliser φ(q_i)·Σ_j φ(k_j), over j ≤ i when causal
        keys = phi_k.cumsum(-2) if causal else phi_k.sum(-2, keepdim=True)
        empty = bool(((phi_q * keys).sum(-1) == 0).any())
    if not finite or empty:
        what = "overflowed" if not finite else "underflowed to zero for some rows"
        fix = ("use stabilize = True or smaller inputs" if not stabilize or kernel == "positive"
               else "use kernel = 'positive', or smaller inputs")
        raise ParameterError(f"kernel = {kernel!r} with stabilize = {stabilize}: the random features {what} at "
                             f"these logits; {fix}.")


def performer_cost(s, features, kernel, orthogonal, stabilize):
    m = features if kernel == "positive" else 2 * features
    c = linear_cost(s, m, 2 * features * s.d + 2 * s.d + 3 * m)
    # the float64 projection W: its Gaussian draw, the QR's factor and W itself, m × d each (and the χ_d draw)
    return type(c)(c.flops, c.bytes + 4 * 8 * features * s.d)


register_variant(VariantSpec(
    name="performer",
    display_name="Performer (FAVOR+)",
    family="kernel",
    paper="Choromanski et al. 2021, Rethinking Attention with Performers (ICLR 2021; arXiv:2009.14794)",
    complexity="O(N·m·d)",
    complexity_class="linear",
    fn=performer,
    cost=performer_cost,
    params=(
        Param("features", "int", 266, "random features m (266 ≈ d·ln d at d = 64; trig uses 2m)",
              low=1, high=8192, log=True),
        Param("kernel", "choice", "positive", "positive: exp(Wx − ‖x‖²/2); trig: sin/cos random Fourier "
              "features (not row-stochastic)", choices=("positive", "trig")),
        Param("orthogonal", "bool", True, "blocks of d orthogonal rows with χ_d norms (else iid Gaussian rows)"),
        Param("stabilize", "bool", True, "subtract each query's max and the keys' global max before exp "
              "(cancels in the normalisation)"),
    ),
    causal=True,
    cross=True,
    stochastic=True,
    row_stochastic=lambda p: p["kernel"] == "positive",  # trig features give signed weights
    signed=lambda p: p["kernel"] == "trig",
    low_rank=lambda k, fixed: {"features": max(1, k // 2) if fixed.get("kernel") == "trig" else k},
    artifacts=(Artifact("features", "matrix", ("2", "B", "H", "N", "m"), "the feature maps φ(Q) and φ(K)"),
               Artifact("projection", "matrix", ("m", "d"), "the random projection W")),
    content_based=True,
    description="D⁻¹φ(Q)(φ(K)ᵀV) with FAVOR+ positive orthogonal random features.",
))
