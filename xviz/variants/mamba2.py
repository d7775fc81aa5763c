"""Mamba-2's state-space duality (SSD) drawn as attention (Dao & Gu 2024, Transformers are SSMs:
Generalized Models and Efficient Algorithms Through Structured State Space Duality,
arXiv:2405.21060).

An SSM with a scalar decay per head and step, h_t = a_t h_{t−1} + B_t x_tᵀ, y_t = h_tᵀ C_t, is
the masked attention y = (L ⊙ C Bᵀ) x with the 1-semiseparable mask

    L_ij = ∏_{t=j+1..i} a_t  (j ≤ i), else 0,

so every block of M = L ⊙ CBᵀ strictly below the diagonal has rank ≤ the state size d (§3–5).
Here C = q · ``ctx.scale``, B = k, x = v (the duality's queries, keys and values).
Discretisation (zero-order hold on A, Euler on B, as the paper's code ``ssd(x·Δ, A·Δ, B, C)`` and
transformers' torch path): a_t = exp(Δ_t·A_h) and the input enters as Δ_t·x_t, so the effective
matrix is (L ⊙ CBᵀ)·diag(Δ): a token with Δ_t → 0 is neither written nor lets the state decay.
The step Δ_t (the untrained choice, made explicit by ``gate``):
- "selective" (default): a_t = exp(−Δ_t·A_h) with A_h = 1 and Δ_t = softplus(k_t·w_h + b_h), where
  w_h ~ N(0, I/d) is a seeded projection per head (Mamba-2 projects the layer input; the token is
  represented here by its key, so the matrix depends on q and k alone, as attention's does, and
  out is linear in v) and b_h = softplus⁻¹(−log γ_h) centres Δ on RetNet's per-head timescales
  γ_h = 1 − 2^(−5−h). Seeded: the seed changes the projection.
- "fixed": Δ_t = −log γ_h for every step, so a_t = γ_h: RetNet retention times the constant Δ_h
  per head.
Left out: the D·x skip, the short convolution, the gate and the norm around the SSM.
Compute: the SSD block decomposition (xviz.kernels.recurrent.scan): diagonal c × c blocks in
their quadratic (attention) form, off-diagonal blocks through the states carried between chunks;
the token loop is the reference; tests hold it to transformers' ``mamba2_chunk_scan`` torch path.
Complexity: O(N·c·(d + d_v) + N·d·d_v) time, O(N·c + (N/c)·d·d_v) memory (c = 64).
Artifacts: the final state, ‖h_t‖_F over t, the per-step decay a_t, the step Δ_t.
"""
import torch
import torch.nn.functional as F

from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..kernels.recurrent import RECURRENT_ARTIFACTS, head_decays, recurrent_cost, recurrent_output, work


def step_sizes(k: torch.Tensor, ctx, gate: str) -> torch.Tensor:
    """Δ_t > 0: (B, H, N) for "selective", (H, 1) for "fixed" (A_h = 1, so log a_t = −Δ_t)."""
    log_gamma = torch.log(head_decays(k.shape[1], 0)).to(k.device, k.dtype)
    if gate == "fixed":
        return -log_gamma[:, None]
    h, d = k.shape[1], k.shape[-1]
    w = ctx.randn(h, d, like=k, salt=1) / d**0.5  # (H, d): one projection per head
    bias = torch.log(torch.expm1(-log_gamma))  # softplus(bias) = −log γ_h
    return F.softplus(torch.einsum("bhnd,hd->bhn", k, w) + bias[:, None])


def mamba2(q, k, v, ctx, gate: str):
    q, k = work(q), work(k)
    dt = step_sizes(k, ctx, gate)
    # B̄_t = Δ_t·B_t: scaling the key by Δ_t is scaling the input, (L ⊙ CBᵀ)·diag(Δ) x
    return recurrent_output(q * ctx.scale, k * dt[..., None], v, -dt,
                            artifacts={"step": lambda: dt.expand(k.shape[:3]).to(v.dtype)})


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
    params=(Param("gate", "choice", "selective", "the step Δ_t (decay a_t = exp(−Δ_t), input scaled by Δ_t): "
                  "'selective' = softplus(k·w + b) with a seeded w per head; 'fixed' = −log of RetNet's per-head γ_h",
                  choices=("selective", "fixed")),),
    causal=True,
    causal_only=True,
    stochastic=True,
    signed=True,
    artifacts=RECURRENT_ARTIFACTS + (Artifact("step", "curve", ("B", "H", "N"),
                                              "Δ_t, the step: the input's weight and the decay's exponent"),),
    content_based=False,
    description="y = (L ⊙ CBᵀ)x with a 1-semiseparable decay mask L; SSD block decomposition.",
))
