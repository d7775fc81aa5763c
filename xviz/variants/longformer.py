"""Longformer attention: a sliding window plus global tokens (Beltagy et al. 2020, §3.1–3.2).

Every query attends keys with |i − j| ≤ ``window`` (causal: 0 ≤ i − j ≤ window) and the
``num_global`` global tokens; the global tokens' own rows attend every key (symmetric global
attention). Longformer picks global positions per task ([CLS] for classification, question
tokens for QA) and uses separate linear projections for global attention; with given Q/K/V
we take the *first* g positions as global (the [CLS] choice) and the same projections.
Causal: global rows attend only j ≤ i, so nothing reaches the future. window ≥ N is exact.
Compute: the band as chunks of w queries against their neighbouring chunks and the global
columns as one matmul, merged by their log-sum-exps (``patterns.block_sparse_part``,
``columns_part``, ``merge``: no per-row gather), plus the dense global rows:
O(N·(2w + 1 + g)·d + g·N·d), no N×N tensor. Its native output (Longformer's (N, 2w + 1) band plus global rows, see
the catalog's pitfalls) is drawn here as the N×N mask.
"""
import torch

from ..kernels import patterns
from ..kernels.blocks import block_sparse_part, columns_part, dense_rows, lazy_views, merge
from ..core.registry import Param, VariantSpec, register_variant
from ..kernels.sparse import GLOBAL_ROWS, KEYS_PER_ROW, MASK, sparse_attention
from ..kernels.costs import sparse_cost


def longformer(q, k, v, ctx, window: int, num_global: int):
    """Band of reach ``window`` ∪ global columns 0…g−1, with the rows 0…g−1 attending everything."""
    n = q.shape[-2]
    kw = dict(window=window, num_global=num_global, causal=ctx.causal)
    width = patterns.longformer(torch.zeros(1, dtype=torch.long, device=q.device), n, **kw)[0].shape[-1]
    glob = patterns.global_rows(n, num_global, q.device)
    reach = min(window, n - 1)
    # the band: chunks of max(reach, 1) queries meet their own and neighbouring chunks, |i − j| ≤ reach
    block = max(1, min(reach, n))
    nb = -(-n // block)
    blocks = (torch.arange(nb)[:, None] + torch.arange(-1, 1 if ctx.causal else 2))[None]
    parts = [block_sparse_part(q, k, v, ctx.scale, ctx.causal, block, blocks,
                                        allowed=lambda i, j: (i - j).abs() <= reach)]
    if glob.numel():  # global columns outside the band
        parts.append(columns_part(q, k, v, ctx.scale, ctx.causal, glob[None],
                                           exclude=lambda i, j: (i - j).abs() <= reach))
    out = merge(parts)
    if glob.numel():
        out[:, :, glob] = dense_rows(q, k, v, ctx.scale, ctx.causal, glob)
    return lazy_views(out, lambda: sparse_attention(
        q, k, v, ctx, lambda rows: patterns.longformer(rows, n, **kw), width=width, full_rows=glob,
        compute_out=False), extra={"global_rows": glob})


def cost(s, window, num_global):
    # keys per query of the algorithm, not capped at N: at window ≥ N the block kernels still compute
    # three (causal: two) chunks of N − 1 keys per query, beyond what a cap at N would admit
    g = min(num_global, s.n)
    band = min(window, s.n - 1) * (1 if s.causal else 2) + 1
    return sparse_cost(s, band + g, full_rows=g, cap=False)


register_variant(VariantSpec(
    name="longformer",
    display_name="Longformer (window + global)",
    family="combined pattern",
    paper="Beltagy et al. 2020, Longformer: The Long-Document Transformer (arXiv:2004.05150)",
    complexity="O(N·(2w + 1 + g)·d + g·N·d)",
    complexity_class="sparse",
    fn=longformer,
    cost=cost,
    params=(
        Param("window", "int", 64, "keys on each side of the query (|i − j| ≤ window)", low=1, high="N"),
        Param("num_global", "int", 1, "global tokens: the first g positions (as [CLS]) attend and are attended by all",
              low=0, high="N"),
    ),
    causal=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW, GLOBAL_ROWS),
    content_based=False,
    exact_when=lambda n, d, h: {"window": n},
    description="Sliding window plus global tokens whose rows and columns are dense.",
))
