"""DeltaNet: linear attention with the delta rule (Schlag et al. 2021, Linear Transformers Are
Secretly Fast Weight Programmers, arXiv:2102.11174; chunked by Yang et al. 2024, Parallelizing
Linear Transformers with the Delta Rule over Sequence Length, arXiv:2406.06484).

    S_t = S_{t−1} (I − β k_t k_tᵀ) + β v_t k_tᵀ = S_{t−1} + β (v_t − S_{t−1} k_t) k_tᵀ,   o_t = S_t q_t:

the fast-weight memory S is corrected towards v_t at key k_t (one step of online regression with
step β) instead of being added to, so an old value stored under a similar key is overwritten.
q and k are L2-normalised per head (so I − β k kᵀ is a contraction for β ∈ (0, 1]), q is then
multiplied by the logit scale ``ctx.scale`` (1/√d by default), v is used as given.
Untrained choices: the paper's β_t = σ(W_β x_t) is a learned per-token gate; here ``beta`` is one
fixed value, 0.5 by default (σ(0), the gate of an untrained zero-initialised W_β). The short
convolutions and output norm of the 2024 architecture are outside the attention map.
Compute: the chunked UT-transform form (xviz.kernels.recurrent.scan); the token loop is the
reference (tests). Implicit matrix: o = A v with A lower triangular and A_ij =
β q_iᵀ (∏_{t=i..j+1} (I − β k_t k_tᵀ)) k_j — signed: an erased write shows up as a negative weight.
Complexity: O(N·c·(d + d_v) + N·d·d_v) time, O(N·c + (N/c)·d·d_v) memory (c = 64).
Artifacts: the final state (as M = Sᵀ: keys on rows), ‖S_t‖_F over t, the decay (1 every step).
"""

from ..core.registry import VariantSpec, register_variant
from ..kernels.dense import unit
from ..kernels.recurrent import BETA, RECURRENT_ARTIFACTS, recurrent_cost, recurrent_output, work


def deltanet(q, k, v, ctx, beta: float):
    q, k = unit(work(q)) * ctx.scale, unit(work(k))
    return recurrent_output(q, k, v, q.new_zeros(()), q.new_tensor(beta))


register_variant(VariantSpec(
    name="deltanet",
    display_name="DeltaNet (delta rule)",
    family="recurrence",
    paper="Schlag et al. 2021, Linear Transformers Are Secretly Fast Weight Programmers (arXiv:2102.11174); "
          "Yang et al. 2024, Parallelizing Linear Transformers with the Delta Rule (arXiv:2406.06484)",
    complexity="O(N·c·(d + d_v) + N·d·d_v)",
    complexity_class="linear",
    fn=deltanet,
    cost=lambda s, beta: recurrent_cost(s, delta=True),
    params=(BETA,),
    causal=True,
    causal_only=True,
    signed=True,
    artifacts=RECURRENT_ARTIFACTS,
    content_based=False,
    description="Fast weights written by the delta rule S ← S + β(v − Sk)kᵀ; chunked UT transform.",
))
