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
whatever γ, comparable with softmax on one scale.
Computed as linear attention is, from log features (``xviz.kernels.logfeature``, causal chunks with a
running maximum), because φ = elu + 1 underflows (×30 inputs: rows of zeros) and overflows (huge
inputs: inf / inf): the decay joins the logs, γ^(i−j) φ(q_i)·φ(k_j) = Σ_m exp((ℓq_im + i·log γ) +
(ℓk_jm − j·log γ)). In float32 the log-weights then carry an absolute error of about
N·|log γ|·6e−8 (4096 tokens at γ = e^−1: 2e−4), far below what the weights show.
Decay: ``decay`` = γ for every head, or 0 (the default) for RetNet's per-head γ_h = 1 − 2^(−5−h).
φ is applied to q and k as they are (as in ``linear``): the logit scale is not used.
Complexity: O(N·c·d·(1 + d_v/d) + N·d·d_v) time, O(c²·d + d·d_v) memory (chunked, c ≤ 64).
Artifacts: the final (numerator) state S_N, ‖S_t‖_F over t, the per-step decay γ.
"""
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..core.registry import Param, VariantSpec, register_variant
from ..core.result import Output
from ..kernels.logfeature import log_elu1, log_feature_attention
from ..kernels.recurrent import RECURRENT_ARTIFACTS, head_decays, per_step, recurrent_cost, state_artifacts, work


def decayed_linear(q, k, v, ctx, decay: float):
    qw, kw = work(q), work(k)
    log_decay = per_step(torch.log(head_decays(q.shape[1], decay)), qw)  # (B, H, N)
    steps = torch.arange(q.shape[-2], device=q.device, dtype=qw.dtype)[:, None] * log_decay[..., None]
    out, matrix = log_feature_attention(log_elu1(qw) + steps, log_elu1(kw) - steps, v.to(qw.dtype), causal=True)
    dt = v.dtype
    return Output(out=out.to(dt), matrix=lambda: matrix().to(dt),
                  artifacts=state_artifacts(F.elu(kw) + 1, v, log_decay))


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
