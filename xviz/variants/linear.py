"""Linear attention (Katharopoulos et al. 2020): softmax's exp(q·k) replaced by φ(q)·φ(k), φ = elu + 1.

    out_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / φ(q_i)ᵀ (Σ_j φ(k_j)),

so the N × N product is never formed. Non-causal: plain features scaled to at most 1 (the factors
cancel in the normalisation); where a row's normaliser would vanish, and causal, from log φ
(xviz.kernels.logfeature), so that no row underflows to zero and no product overflows. φ(x) = elu(x) + 1 is applied
to q and k as they are: the paper has no 1/√d, so the logit scale (``scale``) is not used.
Features are positive, so the implicit weights are row-stochastic.
Causal: prefix sums Σ_{j≤i} (the paper's "transformers are RNNs" form), chunked in xviz.kernel.
Compute: O(N·d·d_v) time, O(N·d) memory.
Katharopoulos et al. 2020, Transformers are RNNs: Fast Autoregressive Transformers with Linear
Attention (arXiv:2006.16236), §3.2.
"""
import torch
import torch.nn.functional as F

from ..core.registry import Artifact, VariantSpec, register_variant
from ..kernels.costs import linear_cost
from ..core.result import Output
from ..kernels.logfeature import log_elu1, log_feature_attention, scaled_feature_attention


def linear(q, k, v, ctx):
    cdt = torch.promote_types(q.dtype, torch.float32)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    plain = None if ctx.causal else scaled_feature_attention(F.elu(qc) + 1, F.elu(kc) + 1, vc)
    if plain is not None:
        out, matrix = plain
    else:  # the same weights from log features (xviz.kernels.logfeature): no row underflows
        out, matrix = log_feature_attention(log_elu1(qc), log_elu1(kc), vc, ctx.causal)
    dt = v.dtype
    # features: (2, B, H, N, d) = φ(Q), φ(K)
    return Output(out=out.to(dt), matrix=lambda: matrix().to(dt),
                  artifacts={"features": lambda: (F.elu(torch.stack([q, k]).to(cdt)) + 1).to(q.dtype)})


register_variant(VariantSpec(
    name="linear",
    display_name="Linear attention (elu + 1)",
    family="kernel",
    paper="Katharopoulos et al. 2020, Transformers are RNNs: Fast Autoregressive Transformers with Linear "
          "Attention (arXiv:2006.16236)",
    complexity="O(N·d·d_v)",
    complexity_class="linear",
    fn=linear,
    cost=lambda s: linear_cost(s, s.d, 2 * s.d),
    causal=True,
    cross=True,
    row_stochastic=True,
    artifacts=(Artifact("features", "matrix", ("2", "B", "H", "N", "m"), "the feature maps φ(Q) and φ(K)"),),
    content_based=True,
    description="φ(Q)(φ(K)ᵀV) normalised, φ = elu + 1; the logit scale is not used.",
))
