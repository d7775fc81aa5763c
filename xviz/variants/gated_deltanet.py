"""Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024, Gated Delta Networks: Improving Mamba2 with
Delta Rule, arXiv:2412.06464): the delta rule with a decaying state,

    S_t = α S_{t−1} (I − β k_t k_tᵀ) + β v_t k_tᵀ,   o_t = S_t q_t,

so the memory both forgets everything at rate α (Mamba-2's gate) and overwrites what is stored
under k_t (DeltaNet's rule). α = 1 is DeltaNet exactly.
q and k are L2-normalised per head, q is multiplied by the logit scale ``ctx.scale``.
Untrained choices: the paper's α_t = exp(−softplus(·)·A) and β_t = σ(·) are learned per-token
gates; here ``decay`` = α is one fixed value for every head, or 0 (the default) for a per-head
α_h = 1 − 2^(−5−h) (RetNet's multi-scale decays), and ``beta`` is one fixed value, 0.5 by default
(σ(0)). Short convolutions and the output gate and norm are outside the attention map.
Compute: the chunked UT transform with the in-chunk decay ratios Γ_r/Γ_t ≤ 1 (§3.3 of the paper;
xviz.kernels.recurrent.scan); the token loop is the reference.
Complexity: O(N·c·(d + d_v) + N·d·d_v) time, O(N·c + (N/c)·d·d_v) memory (c = 64).
Artifacts: the final state (as M = Sᵀ), ‖S_t‖_F over t, the per-step decay α.
"""
import torch

from ..core.registry import Param, VariantSpec, register_variant
from ..kernels.dense import unit
from ..kernels.recurrent import BETA, RECURRENT_ARTIFACTS, head_decays, recurrent_cost, recurrent_output, work


def gated_deltanet(q, k, v, ctx, decay: float, beta: float):
    q, k = unit(work(q)) * ctx.scale, unit(work(k))
    return recurrent_output(q, k, v, torch.log(head_decays(q.shape[1], decay)), q.new_tensor(beta))


register_variant(VariantSpec(
    name="gated_deltanet",
    display_name="Gated DeltaNet",
    family="recurrence",
    paper="Yang, Kautz & Hatamizadeh 2024, Gated Delta Networks: Improving Mamba2 with Delta Rule "
          "(arXiv:2412.06464)",
    complexity="O(N·c·(d + d_v) + N·d·d_v)",
    complexity_class="linear",
    fn=gated_deltanet,
    cost=lambda s, decay, beta: recurrent_cost(s, delta=True),
    params=(Param("decay", "float", 0.0, "α, the state's decay per token, for every head; 0 = per-head "
                  "α_h = 1 − 2^(−5−h); 1 = DeltaNet", low=0.0, high=1.0),
            BETA),
    causal=True,
    causal_only=True,
    signed=True,
    artifacts=RECURRENT_ARTIFACTS,
    content_based=False,
    description="The delta rule with a decaying state: S ← αS(I − βkkᵀ) + βvkᵀ; chunked UT transform.",
))
