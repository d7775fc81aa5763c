"""Exact top-k attention: each query keeps its ``top_k`` = k largest logits q_i·k_j·scale and takes the
softmax over those keys only (the others get weight 0).

Explicit Sparse Transformer (Zhao et al. 2019) and top-k attention (Gupta et al. 2021) keep the
k largest scores per query; content-based sparse methods (Reformer, Routing, clustering) are
cheaper approximations of this choice, which makes it the reference for them. It is a
*diagnostic*: choosing the keys needs every logit, O(N²·d), so it is quadratic. The logits
are computed in query chunks (at most ~4M at a time) and only the (N, k) indices are kept;
the softmax then runs through xviz.sparse on the chosen keys. Causal: the future is masked
*before* choosing, so row i picks among j ≤ i (rows with i + 1 ≤ k keep every past key).
Ties are broken by torch.topk. top_k = N is exact attention. (The parameter is ``top_k``, not
``k``: ``xviz.run(name, q, k, v, ...)`` already has an argument named k.)
"""
from ..kernels import patterns
from ..core.registry import Cost, Param, VariantSpec, register_variant
from ..kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention
from ..kernels.costs import sparse_cost


def topk(q, k, v, ctx, top_k: int):
    """Softmax over each query's top_k largest logits."""
    keep = top_k
    n = q.shape[-2]
    return sparse_attention(
        q, k, v, ctx,
        lambda rows: patterns.topk(rows, n, q=q, k=k, keep=keep, scale=ctx.scale, causal=ctx.causal),
        width=min(keep, n))


def cost(s, top_k):
    choose = s.b * s.h * 2 * s.n * s.nk * s.d * (0.5 if s.causal else 1.0)
    sp = sparse_cost(s, min(s.nk, top_k))
    return Cost(sp.flops + choose, sp.bytes)


register_variant(VariantSpec(
    name="topk",
    display_name="Exact top-k",
    family="learnable pattern",
    paper="Gupta et al. 2021, Memory-efficient Transformers via Top-k Attention (arXiv:2106.06899); "
          "Zhao et al. 2019, Explicit Sparse Transformer (arXiv:1912.11637)",
    complexity="O(N²·d) to choose + O(N·k·d)",
    complexity_class="quadratic",
    fn=topk,
    cost=cost,
    params=(
        Param("top_k", "int", 32, "keys kept per query: its top_k largest logits", low=1, high="N", log=True),
    ),
    causal=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW),
    content_based=True,
    exact_when=lambda n, d, h: {"top_k": n},
    description="Each query keeps its k largest logits: the content-based oracle the learnable patterns approximate.",
))
