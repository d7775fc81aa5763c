"""RetNet retention (Sun et al. 2023, Retentive Network: A Successor to Transformer for Large
Language Models, arXiv:2307.08621), one retention head drawn as attention.

    o = (QKᵀ ⊙ D) V,   D_nm = γ^(n−m) for n ≥ m, else 0       (parallel form, §2.1 eq. 5)
    S_n = γ S_{n−1} + k_n v_nᵀ,  o_n = S_nᵀ q_n                  (recurrent form, eq. 6)

and the chunkwise form (eq. 7) that mixes the two, which is the compute path here
(``xviz.kernels.recurrent``: c × c blocks inside a chunk, the state S carried between chunks).
No softmax and no normaliser: weights are signed and rows do not sum to one.
Decay: ``decay`` = γ for every head, or 0 (the default) for the paper's multi-scale per-head
γ_h = 1 − 2^(−5−h), h = 0 … H−1 (memory lengths 32, 64, … tokens).
Scaling: the paper scales k by d^−1/2; here k is multiplied by the logit scale ``ctx.scale``,
which is d^−1/2 unless the caller sets another.
Untrained choices: q, k, v are the inputs as given. Left out because they are not part of the
attention map: the xPos rotation e^{inθ} (a relative position encoding of q and k, like RoPE: it
belongs to the inputs), the swish gate and the GroupNorm after retention, and the paper's score
normalisations (§2.2), which only rescale rows ahead of that scale-invariant GroupNorm.
Complexity: O(N·c·(d + d_v) + N·d·d_v) time, O(N·c + (N/c)·d·d_v) memory (c = 64), no N×N tensor.
Artifacts: the final state S_N, ‖S_t‖_F over t, the per-step decay γ (xviz.analysis.state).
"""
import torch

from ..core.registry import Param, VariantSpec, register_variant
from ..kernels.recurrent import RECURRENT_ARTIFACTS, head_decays, recurrent_cost, recurrent_output, work


def retnet(q, k, v, ctx, decay: float):
    q, k = work(q), work(k)
    log_decay = torch.log(head_decays(q.shape[1], decay))
    return recurrent_output(q, k * ctx.scale, v, log_decay)


register_variant(VariantSpec(
    name="retnet",
    display_name="RetNet retention",
    family="recurrence",
    paper="Sun et al. 2023, Retentive Network: A Successor to Transformer for Large Language Models "
          "(arXiv:2307.08621)",
    complexity="O(N·c·(d + d_v) + N·d·d_v)",
    complexity_class="linear",
    fn=retnet,
    cost=lambda s, decay: recurrent_cost(s, delta=False),
    params=(Param("decay", "float", 0.0, "γ, the state's decay per token, for every head; 0 = the paper's "
                  "per-head γ_h = 1 − 2^(−5−h)", low=0.0, high=1.0),),
    causal=True,
    causal_only=True,
    signed=True,
    artifacts=RECURRENT_ARTIFACTS,
    content_based=False,
    description="(QKᵀ ⊙ D)V with D = γ^(n−m) below the diagonal; chunkwise recurrent compute.",
))
