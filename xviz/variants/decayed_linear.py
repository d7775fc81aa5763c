"""Decayed linear attention: linear attention (elu + 1 features) whose fast-weight state decays.

    S_t = γ S_{t−1} + φ(k_t) v_tᵀ,  z_t = γ z_{t−1} + φ(k_t),   o_t = S_tᵀ φ(q_t) / z_tᵀ φ(q_t),

i.e. weights γ^(i−j) φ(q_i)·φ(k_j) normalised over j ≤ i: gated linear attention with a fixed
per-head gate (Yang et al. 2023, Gated Linear Attention Transformers with Hardware-Efficient
Training, arXiv:2312.06635, whose gates are data-dependent and whose state is not normalised) on
the features of Katharopoulos et al. 2020 (arXiv:2006.16236). This is one step of a line of
descent: the state is a fast-weight matrix written by keys and values (Schlag et al. 2021, Linear
Transformers Are Secretly Fast Weight Programmers, arXiv:2102.11174); linear attention adds
every write forever (γ = 1), this one forgets geometrically, RetNet drops φ and the normaliser,
and DeltaNet replaces the additive write by an error-correcting one.
Normalised: so that γ = 1 is exactly the causal ``linear`` variant (the line of descent is visible
in the numbers), and so that the weights stay a distribution (non-negative, rows summing to 1)
whatever γ, comparable with softmax on one scale. The normaliser is the same recurrence run on
a column of ones, so it costs one extra value column.
Decay: ``decay`` = γ for every head, or 0 (the default) for RetNet's per-head γ_h = 1 − 2^(−5−h).
φ is applied to q and k as they are (as in ``linear``): the logit scale is not used.
Complexity: O(N·c·(d + d_v) + N·d·d_v) time, O(N·c + (N/c)·d·d_v) memory (chunked, c = 64).
Artifacts: the final (numerator) state S_N, ‖S_t‖_F over t, the per-step decay γ.
"""
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..core.registry import Param, VariantSpec, register_variant
from ..kernels.recurrent import RECURRENT_ARTIFACTS, head_decays, recurrent_cost, recurrent_output, work


def decayed_linear(q, k, v, ctx, decay: float):
    phi_q, phi_k = F.elu(work(q)) + 1, F.elu(work(k)) + 1
    log_decay = torch.log(head_decays(q.shape[1], decay))
    return recurrent_output(phi_q, phi_k, v, log_decay, normalize=True)


register_variant(VariantSpec(
    name="decayed_linear",
    display_name="Decayed linear attention",
    family="recurrence",
    paper="Yang et al. 2023, Gated Linear Attention Transformers with Hardware-Efficient Training "
          "(arXiv:2312.06635), with a fixed gate on Katharopoulos et al. 2020 (arXiv:2006.16236)",
    complexity="O(N·c·(d + d_v) + N·d·d_v)",
    complexity_class="linear",
    fn=decayed_linear,
    # one more value column (the normaliser's ones) and elu on q and k
    cost=lambda s, decay: recurrent_cost(replace(s, dv=s.dv + 1), delta=False, extra_flops_per_token=4 * s.d),
    params=(Param("decay", "float", 0.0, "γ, the state's decay per token, for every head; 0 = per-head "
                  "γ_h = 1 − 2^(−5−h); 1 = linear attention", low=0.0, high=1.0),),
    causal=True,
    causal_only=True,
    row_stochastic=True,
    artifacts=RECURRENT_ARTIFACTS,
    content_based=False,
    description="elu + 1 linear attention whose state decays by γ per token, normalised.",
))
