"""Linear attention (Katharopoulos et al. 2020): softmax's exp(q·k) replaced by φ(q)·φ(k), φ = elu + 1.

    out_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / φ(q_i)ᵀ (Σ_j φ(k_j)),

so the N × N product is never formed (xviz.kernel.linear_attention). φ(x) = elu(x) + 1 is applied
to q and k as they are: the paper has no 1/√d, so the logit scale (``scale``) is not used.
Features are positive, so the implicit weights are row-stochastic.
Causal: prefix sums Σ_{j≤i} (the paper's "transformers are RNNs" form), chunked in xviz.kernel.
Compute: O(N·d·d_v) time, O(N·d) memory.
Katharopoulos et al. 2020, Transformers are RNNs: Fast Autoregressive Transformers with Linear
Attention (arXiv:2006.16236), §3.2.
"""
import torch
import torch.nn.functional as F

from ..kernel import CAUSAL_CHUNK, linear_attention, linear_attention_matrix, linear_cost
from ..registry import Cost, VariantSpec, register_variant
from ..result import Output


def kernel_cost(b, h, n, m, d, dv, causal, feature_flops_per_token):
    """linear_cost plus, when causal, the masked c × c products inside each chunk of xviz.kernel."""
    base = linear_cost(b, h, n, m, d, dv, feature_flops_per_token)
    if not causal:
        return base
    c = min(CAUSAL_CHUNK, n)
    extra = b * h * 2 * n * c * (m + dv + 1)
    return Cost(base.flops + extra, base.bytes + 4 * b * h * c * c)


def kernel_output(phi_q, phi_k, v, causal, artifacts) -> Output:
    """Run xviz.kernel on features (computed at ≥ float32) and return out and matrix at v's dtype."""
    out = linear_attention(phi_q, phi_k, v.to(phi_q.dtype), causal).to(v.dtype)
    return Output(out=out, matrix=lambda: linear_attention_matrix(phi_q, phi_k, causal).to(v.dtype),
                  artifacts=artifacts)


def linear(q, k, v, ctx):
    cdt = torch.promote_types(q.dtype, torch.float32)
    phi_q, phi_k = F.elu(q.to(cdt)) + 1, F.elu(k.to(cdt)) + 1
    # features: (2, B, H, N, d) = φ(Q), φ(K)
    return kernel_output(phi_q, phi_k, v, ctx.causal,
                         {"features": lambda: torch.stack([phi_q, phi_k]).to(q.dtype)})


register_variant(VariantSpec(
    name="linear",
    display_name="Linear attention (elu + 1)",
    family="kernel",
    paper="Katharopoulos et al. 2020, Transformers are RNNs: Fast Autoregressive Transformers with Linear "
          "Attention (arXiv:2006.16236)",
    complexity="O(N·d·d_v)",
    complexity_class="linear",
    fn=linear,
    cost=lambda b, h, n, d, dv, causal=False: kernel_cost(b, h, n, d, d, dv, causal, 2 * d),
    causal=True,
    row_stochastic=True,
    artifacts=("features",),
    content_based=True,
    description="φ(Q)(φ(K)ᵀV) normalised, φ = elu + 1; the logit scale is not used.",
))
