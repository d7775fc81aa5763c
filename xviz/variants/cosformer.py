"""cosFormer (Qin et al. 2022): ReLU features with a cos-based re-weighting of distance.

Weights s_ij = ReLU(q_i)ᵀReLU(k_j) · cos(π(i − j)/(2M)), normalised per row, with a horizon M ≥ N
(``horizon``; 0: M = N when not causal, M = 8192 when causal — a causal run needs an M that does not
move with N, or appending a token would change every earlier weight; the paper's causal M is the
longest sequence trained on, and 8192 is a context length of today's small decoders).
Since cos(a − b) = cos a cos b + sin a sin b, the weight is a dot product of 2d features
[ReLU(q_i) cos(πi/2M), ReLU(q_i) sin(πi/2M)] · [ReLU(k_j) cos(πj/2M), ReLU(k_j) sin(πj/2M)],
computed without the N × N product: non-causal in plain features scaled to at most 1 (the logit
scale and any positive factor cancel), falling back to log features (xviz.kernels.logfeature; causal:
chunked prefix sums) where a row's normaliser would be 0 or underflow, so tiny or huge inputs
neither underflow nor overflow.
With M ≥ N, |i − j| < M and every cos is positive, so weights are non-negative; but a query
whose ReLU features share no positive coordinate with any key gets all-zero weights and a zero
output, so rows are not guaranteed to sum to one (row_stochastic = False). ReLU features are
positively homogeneous, so the logit scale cancels in the normalisation and is not used.
The paper learns nothing in φ.
No cross-attention: the re-weighting is a locality prior on one shared position axis, i − j.
With queries and keys from two sequences (N_q ≠ N_k) there is no such axis — aligning them at
their starts, or stretching both onto [0, 1], would each invent a correspondence the inputs do
not have — so cosFormer stays self-attention only.
Compute: O(N·d·d_v) time, O(N·d) memory.
Qin et al. 2022, cosFormer: Rethinking Softmax in Attention (ICLR; arXiv:2202.08791), §3.
"""
import math

import torch

from ..core.errors import ParameterError
from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..kernels.costs import linear_cost
from ..core.result import Output
from ..kernels.logfeature import log_feature_attention, scaled_feature_attention


CAUSAL_HORIZON = 8192  # M of a causal run with horizon 0: fixed, so earlier outputs never move


def resolve_horizon(horizon: int, n: int, causal: bool) -> int:
    """M; ParameterError when M < N (cos(π(i − j)/2M) would turn negative)."""
    m = horizon or (CAUSAL_HORIZON if causal else n)
    if m < n:
        raise ParameterError(f"horizon = {m}{' (the causal default)' if not horizon else ''} is shorter than the "
                             f"sequence (N = {n}): cos(π(i − j)/2M) turns negative beyond M; set horizon ≥ {n}.")
    return m


def reweighting(n: int, m: int, device, dtype) -> torch.Tensor:
    """(2, N): cos(πi/2M) and sin(πi/2M) for positions i."""
    angle = torch.arange(n, device=device, dtype=dtype) * (math.pi / (2 * m))
    return torch.stack([torch.cos(angle), torch.sin(angle)])


def _log_relu(x: torch.Tensor) -> torch.Tensor:
    """log ReLU(x): −∞ where x ≤ 0, formed by masking: vectorised log of 0 takes a slow path (measured
    20× slower per element on this CPU)."""
    return torch.where(x > 0, torch.log(x.clamp_min(torch.finfo(x.dtype).tiny)), float("-inf"))


def _features(x: torch.Tensor, rw: torch.Tensor) -> torch.Tensor:
    """[ReLU(x) cos(πi/2M), ReLU(x) sin(πi/2M)]: (..., N, 2d)."""
    return torch.cat([x * rw[0, :, None], x * rw[1, :, None]], dim=-1)


def _log_features(x: torch.Tensor, rw: torch.Tensor) -> torch.Tensor:
    """log of ``_features``: [log ReLU(x) + log cos(πi/2M), log ReLU(x) + log sin(πi/2M)]."""
    lx, lrw = _log_relu(x), _log_relu(rw)[..., None]
    return torch.cat([lx + lrw[0], lx + lrw[1]], dim=-1)


def cosformer(q, k, v, ctx, horizon: int):
    n = q.shape[-2]
    cdt = torch.promote_types(q.dtype, torch.float32)
    rw = reweighting(n, resolve_horizon(horizon, n, ctx.causal), q.device, cdt)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    plain = None if ctx.causal else scaled_feature_attention(_features(torch.relu(qc), rw),
                                                              _features(torch.relu(kc), rw), vc)
    if plain is not None:
        out, matrix = plain
    else:  # log features, so tiny and huge inputs neither underflow nor overflow
        out, matrix = log_feature_attention(_log_features(qc, rw), _log_features(kc, rw), vc, ctx.causal)
    dt = v.dtype
    return Output(out=out.to(dt), matrix=lambda: matrix().to(dt), artifacts={
        "features": lambda: torch.stack([torch.relu(qc), torch.relu(kc)]).to(q.dtype),  # (2, B, H, N, d): ReLU(Q), ReLU(K)
        "reweighting": rw.to(q.dtype),  # (2, N): cos, sin of πi/2M
    })


register_variant(VariantSpec(
    name="cosformer",
    display_name="cosFormer",
    family="kernel",
    paper="Qin et al. 2022, cosFormer: Rethinking Softmax in Attention (ICLR 2022; arXiv:2202.08791)",
    complexity="O(N·d·d_v)",
    complexity_class="linear",
    fn=cosformer,
    cost=lambda s, horizon: linear_cost(s, 2 * s.d, 4 * s.d),
    params=(Param("horizon", "int", 0, "M in cos(π(i − j)/2M), at least N (0: N when not causal, 8192 when "
                  "causal, fixed so that appending tokens moves no earlier output)", low=0, high=2**31 - 1),),
    causal=True,
    row_stochastic=False,
    artifacts=(Artifact("features", "matrix", ("2", "B", "H", "N", "m"), "the feature maps φ(Q) and φ(K)"),
               Artifact("reweighting", "curve", ("2", "N"), "cos and sin of πi/2M at each position")),
    content_based=False,
    description="ReLU features re-weighted by cos(π(i − j)/2M), M ≥ N, split into cos and sin halves.",
))
