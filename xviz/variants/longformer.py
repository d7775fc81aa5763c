"""Longformer attention: a sliding window plus global tokens (Beltagy et al. 2020, §3.1–3.2).

Every query attends keys with |i − j| ≤ ``window`` (causal: 0 ≤ i − j ≤ window) and the
``num_global`` global tokens; the global tokens' own rows attend every key (symmetric global
attention). Longformer picks global positions per task ([CLS] for classification, question
tokens for QA) and uses separate linear projections for global attention; with given Q/K/V
we take the *first* g positions as global (the [CLS] choice) and the same projections.
Causal: global rows attend only j ≤ i, so nothing reaches the future. window ≥ N is exact.
Pattern: ``patterns.longformer`` — the band on band-shaped tiles (strided views of K and V, no
gather) plus the global columns, joined to each tile's logits (one matmul per chunk of queries,
one softmax over both), plus the dense global rows: O(N·(2w + 1 + g)·d + g·N·d), no N×N tensor. Its native output
(Longformer's (N, 2w + 1) band plus global rows, see the catalog's pitfalls) is drawn here as the
N×N mask. Cross-attention (N_q ≠ N_k, non-causal): query i sits at key position
c(i) = ⌊(i + ½)·N_k/N_q⌋ and gets the keys the pattern gives c(i) (``blocks.centres``); the global
rows are the queries sitting at a global position.
"""
from ..kernels import patterns
from ..kernels.blocks import pattern_output
from ..core.registry import Param, VariantSpec, register_variant
from ..kernels.sparse import GLOBAL_ROWS, KEYS_PER_ROW, MASK
from ..kernels.costs import sparse_cost


def longformer(q, k, v, ctx, window: int, num_global: int):
    """Band of reach ``window`` ∪ global columns 0…g−1, with the rows 0…g−1 attending everything."""
    return pattern_output(q, k, v, ctx, patterns.longformer(k.shape[-2], window=window, num_global=num_global,
                                                           causal=ctx.causal))


def cost(s, window, num_global):
    # keys per query of the algorithm, not capped at N (the tiles of a window ≥ N still compute their keys)
    g = min(num_global, s.nk)
    band = min(window, s.nk - 1) * (1 if s.causal else 2) + 1
    return sparse_cost(s, band + g, full_rows=g * s.n // s.nk, cap=False)


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
    cross=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW, GLOBAL_ROWS),
    content_based=False,
    exact_when=lambda n, d, h: {"window": n},
    description="Sliding window plus global tokens whose rows and columns are dense.",
))
