"""Random sparse attention: each query attends ``keys_per_row`` keys drawn uniformly at random
(seeded, per head) plus itself.

Random attention is one of BigBird's three components (Zaheer et al. 2020, §2: a random graph
with r random keys per query shortens paths between tokens, and the Erdős–Rényi view is
where its theory starts); the catalog's "random" row describes a Bernoulli(r) mask. Our
choices: a fixed number of draws per row rather than a Bernoulli mask, so every row has the
same budget and the cost is O(N·r·d); the draws are *with replacement and repeats are
dropped*, so a row attends between 1 and r + 1 distinct keys (the expected count is
n·(1 − (1 − 1/n)^r) + about 1); the query itself is always attended, so no row is empty.
Different heads draw differently; batch elements share the draw. Causal: row i draws from
[0, i] (uniform over the past), so nothing reaches the future. Because of the replacement
there is no finite keys_per_row that is guaranteed exact, so no exact limit is declared.
Pattern: ``patterns.random_keys`` — a block table of one-position blocks (row i's tile holds its
drawn keys and itself). Per-row keys share no tile, so the per-key gather of xviz.sparse is the
fastest path here (O(N·r·d), memory-bound: ≈ 0.5 FLOP per byte gathered; no N×N tensor).
Cross-attention (N_q ≠ N_k, non-causal): query i sits at key position c(i) = ⌊(i + ½)·N_k/N_q⌋
(its own key is c(i); draws are from the N_k keys).
"""
from ..kernels import patterns
from ..kernels.blocks import pattern_output
from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..kernels.sparse import KEYS_PER_ROW, MASK
from ..kernels.costs import sparse_cost

_SALT = 0x7A4D


def random_pattern(q, k, v, ctx, keys_per_row: int):
    """Uniform random keys per row and head (with replacement, repeats dropped) plus the diagonal."""
    n, h = k.shape[-2], q.shape[1]
    table = patterns.random_table(n, keys_per_row=keys_per_row, heads=h, generator=ctx.generator(_SALT),
                                  causal=ctx.causal)
    return pattern_output(q, k, v, ctx, patterns.random_keys(n, table=table, causal=ctx.causal),
                          extra={"random_keys": table})


def cost(s, keys_per_row):
    return sparse_cost(s, min(s.nk, keys_per_row + 1))


register_variant(VariantSpec(
    name="random_pattern",
    display_name="Random keys",
    family="fixed pattern",
    paper="Zaheer et al. 2020, Big Bird (arXiv:2007.14062), §2 random attention",
    complexity="O(N·r·d)",
    complexity_class="sparse",
    fn=random_pattern,
    cost=cost,
    params=(
        Param("keys_per_row", "int", 32, "random keys drawn per query (with replacement; repeats count once)",
              low=1, high="N", log=True),
    ),
    causal=True,
    cross=True,
    stochastic=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW, Artifact("random_keys", "ids", ("H", "N", "r"), "the random keys drawn for each query")),
    content_based=False,
    description="Each query attends r uniformly drawn keys and itself; a fresh draw per seed and head.",
))
