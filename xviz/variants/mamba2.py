"""Mamba-2's state-space duality (SSD) drawn as attention (Dao & Gu 2024, Transformers are SSMs:
Generalized Models and Efficient Algorithms Through Structured State Space Duality,
arXiv:2405.21060).

An SSM with a scalar decay per head and step, h_t = a_t h_{t−1} + B_t x_tᵀ, y_t = h_tᵀ C_t, is
the masked attention y = (L ⊙ C Bᵀ) x with the 1-semiseparable mask

    L_ij = ∏_{t=j+1..i} a_t  (j ≤ i), else 0,

so every block of M = L ⊙ CBᵀ strictly below the diagonal has rank ≤ the state size d (§3–5).
Here C = q · ``ctx.scale``, B = k, x = v (the duality's queries, keys and values).
The decay (the untrained choice, made explicit by ``gate``):
- "selective" (default): a_t = exp(−Δ_t·A_h) with A_h = 1 and Δ_t = softplus(k_t·w_h + b_h), where
  w_h ~ N(0, I/d) is a seeded projection per head (Mamba-2 projects the layer input; the token is
  represented here by its key, so the matrix depends on q and k alone, as attention's does, and
  out is linear in v) and b_h = softplus⁻¹(−log γ_h) centres Δ on RetNet's per-head timescales
  γ_h = 1 − 2^(−5−h). Seeded: the seed changes the projection.
- "fixed": a_t = γ_h for every step, which makes this RetNet retention exactly.
Left out: the D·x skip, the short convolution, the gate and the norm around the SSM.
Compute: the SSD block decomposition (xviz.kernels.recurrent.scan): diagonal c × c blocks in
their quadratic (attention) form, off-diagonal blocks through the states carried between chunks;
the token loop is the reference. Complexity: O(N·c·(d + d_v) + N·d·d_v) time, O(N·c + (N/c)·d·d_v)
memory (c = 64). Artifacts: the final state, ‖h_t‖_F over t, the per-step decay a_t.
"""
import torch
import torch.nn.functional as F

from ..core.registry import Param, VariantSpec, register_variant
from ..kernels.recurrent import RECURRENT_ARTIFACTS, head_decays, recurrent_cost, recurrent_output, work


def selective_log_decay(k: torch.Tensor, ctx, gate: str) -> torch.Tensor:
    """log a_t: (B, H, N) for "selective", (H,) for "fixed"."""
    log_gamma = torch.log(head_decays(k.shape[1], 0)).to(k.device, k.dtype)
    if gate == "fixed":
        return log_gamma
    h, d = k.shape[1], k.shape[-1]
    w = ctx.randn(h, d, like=k, salt=1) / d**0.5  # (H, d): one projection per head
    bias = torch.log(torch.expm1(-log_gamma))  # softplus(bias) = −log γ_h
    dt = F.softplus(torch.einsum("bhnd,hd->bhn", k, w) + bias[:, None])
    return -dt  # A_h = 1


def mamba2(q, k, v, ctx, gate: str):
    q, k = work(q), work(k)
    return recurrent_output(q * ctx.scale, k, v, selective_log_decay(k, ctx, gate))


register_variant(VariantSpec(
    name="mamba2",
    display_name="Mamba-2 (SSD)",
    family="recurrence",
    paper="Dao & Gu 2024, Transformers are SSMs: Generalized Models and Efficient Algorithms Through "
          "Structured State Space Duality (arXiv:2405.21060)",
    complexity="O(N·c·(d + d_v) + N·d·d_v)",
    complexity_class="linear",
    fn=mamba2,
    cost=lambda s, gate: recurrent_cost(s, delta=False, extra_flops_per_token=(2 * s.d + 8) * (gate == "selective")),
    params=(Param("gate", "choice", "selective", "the decay a_t: 'selective' = exp(−softplus(k·w + b)) with a "
                  "seeded w per head; 'fixed' = RetNet's per-head γ_h", choices=("selective", "fixed")),),
    causal=True,
    causal_only=True,
    stochastic=True,
    signed=True,
    artifacts=RECURRENT_ARTIFACTS,
    content_based=False,
    description="y = (L ⊙ CBᵀ)x with a 1-semiseparable decay mask L; SSD block decomposition.",
))
