"""Exact top-k attention: each query keeps its ``top_k`` = k largest logits q_i·k_j·scale and takes the
softmax over those keys only (the others get weight 0).

Explicit Sparse Transformer (Zhao et al. 2019) and top-k attention (Gupta et al. 2021) keep the
k largest scores per query; content-based sparse methods (Reformer, Routing, clustering) are
cheaper approximations of this choice, which makes it the reference for them. It is a
*diagnostic*: choosing the keys needs every logit, O(N²·d), so it is quadratic. The logits
are computed in query chunks (at most ~4M at a time); the output comes from those very logits
(softmax over the chosen values, times the gathered values V_j), never recomputed. The key lists
(``patterns.topk``, the same selection) give the matrix and mask on
request, lazily. Causal: the future is masked *before* choosing, so row i picks among j ≤ i (rows
with i + 1 ≤ k keep every past key). Ties are broken by torch.topk. top_k = N is exact attention.
Cross-attention (N_q ≠ N_k, non-causal) needs no rule: each query picks among the N_k keys.
(The parameter is ``top_k``, not ``k``: ``xviz.run(name, q, k, v, ...)`` already has an argument
named k.)
"""
import torch

from ..kernels import patterns
from ..kernels.lazy import lazy_views
from ..kernels.dense import work_dtype
from ..core.registry import Cost, Param, VariantSpec, register_variant
from ..kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention
from ..kernels.costs import sparse_cost


def topk(q, k, v, ctx, top_k: int):
    """Softmax over each query's top_k largest logits."""
    b, h, nq, _ = q.shape
    n = k.shape[-2]
    keep = min(top_k, n)
    wd = work_dtype(q.dtype)
    q_, k_, v_ = q.to(wd), k.to(wd), v.to(wd)
    vflat = v_.reshape(b * h * n, -1)
    base = torch.arange(b * h, device=q.device).view(b, h, 1, 1) * n
    out = v_.new_empty(b, h, nq, v.shape[-1])
    step = max(1, patterns.TOPK_LOGIT_ELEMENTS // max(1, b * h * n))
    for s in range(0, nq, step):
        rows = torch.arange(s, min(nq, s + step), device=q.device)
        vals, idx = patterns.topk_logits(q_, k_, rows, keep, ctx.scale, ctx.causal)
        probs = torch.softmax(vals, dim=-1)  # a causal row always holds itself: never all −inf
        vg = vflat.index_select(0, (idx + base).flatten()).view(b, h, rows.numel(), keep, -1)
        out[:, :, s:s + step] = torch.matmul(probs.unsqueeze(-2), vg).squeeze(-2)
    return lazy_views(out.to(v.dtype), lambda: sparse_attention(
        q, k, v, ctx, lambda r: patterns.topk(r, n, q=q_, k=k_, keep=keep, scale=ctx.scale, causal=ctx.causal),
        width=keep, compute_out=False))


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
    cross=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW),
    content_based=True,
    exact_when=lambda n, d, h: {"top_k": n},
    description="Each query keeps its k largest logits: the content-based oracle the learnable patterns approximate.",
))
