"""Grouped-query attention (Ainslie et al. 2023); G = 1 is multi-query attention (Shazeer 2019).

The H query heads are split into G contiguous groups of H/G heads; all heads of a group share
one key head and one value head. From an H-head K, V we build the shared heads as the GQA
paper's uptraining conversion does: the mean of the group's original K (and V) heads. Each
query head then runs exact softmax attention on its group's K, V (PyTorch's fused kernel with
``enable_gqa``). G = H is exact multi-head attention. Causal as exact attention.
What GQA saves is the K/V cache (G instead of H heads), not attention FLOPs. Sharing mixes heads:
a query head's output depends on the other heads of its group through the pooled K, V, and there
is no per-head N × N matrix A with A·v = out (has_matrix = False); each head's softmax weights
over its group's keys are the "weights" artifact.
Compute: O(H·N²·d) time like exact attention; K, V memory O(G·N·d).
Ainslie et al. 2023, GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
Checkpoints (EMNLP; arXiv:2305.13245); Shazeer 2019, Fast Transformer Decoding: One Write-Head
is All You Need (arXiv:1911.02150).
"""
import torch
import torch.nn.functional as F

from ..core.errors import ParameterError
from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import Output, check_budget
from ..kernels.costs import quadratic_cost
from ..kernels.dense import dense_weights


def grouped_query(q, k, v, ctx, groups: int):
    b, h, n, d = q.shape
    size = h // groups
    nk = k.shape[-2]
    k_g = k.reshape(b, groups, size, nk, d).mean(dim=2)  # (B, G, N_k, d)
    v_g = v.reshape(b, groups, size, nk, v.shape[-1]).mean(dim=2)
    out = F.scaled_dot_product_attention(q, k_g, v_g, is_causal=ctx.causal, scale=ctx.scale, enable_gqa=True)
    # No effective matrix: out_h = A_h · V̄_g mixes the value heads of a group, so no (B, H, N, N)
    # matrix A satisfies A @ v == out. "weights" are each query head's softmax over its group's keys.
    return Output(out=out, matrix=None, artifacts={
        "group_of_head": torch.arange(h, device=q.device) // size,  # (H,)
        "weights": lambda: _weights(q, k_g, size, ctx),  # (B, H, N, N)
    })


def _weights(q, k_g, size, ctx):
    b, h, n, _ = q.shape
    check_budget((b, h, n, n), q.element_size(), "the grouped-query weights")
    return dense_weights(q, k_g.repeat_interleave(size, dim=1), ctx.scale, ctx.causal)


def grouped_query_cost(s, groups):
    base = quadratic_cost(s)
    pool = s.b * s.h * s.nk * (s.d + s.dv)  # the mean over each group's heads
    # q and out for H heads, the H-head K and V read once, the pooled K and V for G heads.
    nbytes = 4 * s.b * (s.n * s.h * (s.d + s.dv) + s.nk * s.h * (s.d + s.dv) + s.nk * groups * (s.d + s.dv))
    return Cost(base.flops + pool, float(nbytes))


def _check(params, n, d, heads):
    g = params["groups"]
    if heads % g:
        divisors = [x for x in range(1, heads + 1) if heads % x == 0]
        raise ParameterError(f"groups = {g} must divide the number of heads H = {heads}; "
                             f"valid values: {', '.join(map(str, divisors))}.")


register_variant(VariantSpec(
    name="grouped_query",
    display_name="Grouped-query / multi-query",
    family="memory/downsampling",
    paper="Ainslie et al. 2023, GQA (EMNLP 2023; arXiv:2305.13245); Shazeer 2019, multi-query attention "
          "(arXiv:1911.02150)",
    complexity="O(H·N²·d), K/V for G heads",
    complexity_class="quadratic",
    fn=grouped_query,
    cost=grouped_query_cost,
    mixes_heads=True,
    params=(Param("groups", "int", 1, "key/value head groups G (must divide H; 1 = multi-query, H = exact)",
                  low=1),),
    causal=True,
    cross=True,
    row_stochastic=True,
    has_matrix=False,
    artifacts=(Artifact("group_of_head", "ids", ("H",), "the K/V group of each query head"),
               Artifact("weights", "matrix", ("B", "H", "N", "N"), "each query head's softmax over its group's keys")),
    exact_when=lambda n, d, h: {"groups": h},
    check=_check,
    content_based=True,
    description="Each group of query heads shares one K and V head, the mean of the group's heads.",
))
