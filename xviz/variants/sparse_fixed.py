"""Sparse Transformer, fixed pattern (Child et al. 2019, §4.2 "Fixed attention pattern").

Query i attends every key of its own block, ⌊i/l⌋ = ⌊j/l⌋, and the *summary* columns
j mod l ≥ l − c of every block (causal: of every block up to its own, and j ≤ i), so
information from a block reaches all later positions through its last c cells. The paper
designed it for text, where strided offsets do not match the data's structure; it reports
c ∈ {8, 16, 32} for l ∈ {128, 256} and that heads attending *distinct* length-c sub-blocks
worked better than all heads sharing one. Our choices: both parts are united in every head;
``distinct_heads`` = True shifts head h's summary sub-block back by h·c (wrapping within the
block; head 0 keeps the last c). Nothing is learned. stride = N (one block) is exact.
Cost O(N·(l + c·N/l)·d): O(N√N·d) at l ≈ √N with c fixed; defaults l = 32, c = 4 suit N ≈ 1,024.
Pattern: ``patterns.sparse_fixed`` — own-block tiles (one matmul per block, no gather) plus the
summary columns as shared key columns met by one matmul per chunk of queries (minus the own
block's, counted once), joined to the tile's logits for one softmax; no N×N tensor.
Cross-attention (N_q ≠ N_k, non-causal): query i sits at key position c(i) = ⌊(i + ½)·N_k/N_q⌋ and
gets the keys the pattern gives c(i) (``blocks.centres``).
"""
import math

from ..kernels import patterns
from ..kernels.blocks import pattern_output
from ..core.errors import ParameterError
from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..kernels.sparse import KEYS_PER_ROW, MASK
from ..kernels.costs import sparse_cost


def sparse_fixed(q, k, v, ctx, stride: int, summary: int, distinct_heads: bool):
    """Own block ∪ summary columns (the last ``summary`` cells of every block)."""
    h = q.shape[1]
    pattern = patterns.sparse_fixed(k.shape[-2], stride=stride, summary=summary, distinct_heads=distinct_heads,
                                    heads=h, causal=ctx.causal)
    residues = patterns.fixed_summary_residues(stride, summary, h, distinct_heads)
    return pattern_output(q, k, v, ctx, pattern, extra={"summary_positions": residues.expand(h, -1)})


def check(params, n, d, heads):
    if params["summary"] > params["stride"]:
        raise ParameterError(
            f"summary = {params['summary']} must be at most stride = {params['stride']} "
            f"(valid range [1, {params['stride']}]): the summary cells are part of a block."
        )


def cost(s, stride, summary, distinct_heads):
    stride = min(stride, s.nk)
    summary = min(summary, stride)
    cols = math.ceil(s.nk / stride) * summary
    keys = ((stride + 1) / 2 + cols / 2) if s.causal else stride + cols
    return sparse_cost(s, min(s.nk, keys))


register_variant(VariantSpec(
    name="sparse_fixed",
    display_name="Sparse Transformer (fixed)",
    family="combined pattern",
    paper="Child et al. 2019, Generating Long Sequences with Sparse Transformers (arXiv:1904.10509), §4.2",
    complexity="O(N·(l + c·N/l)·d); O(N√N·d) at l ≈ √N",
    complexity_class="n sqrt n",
    fn=sparse_fixed,
    cost=cost,
    params=(
        Param("stride", "int", 32, "block length l: queries attend their whole block", low=1, high="N", log=True),
        Param("summary", "int", 4, "summary cells c: the last c positions of every block are attended by all",
              low=1, high="N"),
        Param("distinct_heads", "bool", False, "head h uses the summary sub-block shifted back by h·c"),
    ),
    causal=True,
    cross=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW, Artifact("summary_positions", "ids", ("H", "c"), "the positions in a block that serve as summary columns")),
    content_based=False,
    check=check,
    exact_when=lambda n, d, h: {"stride": n},
    description="Blocks of l tokens attend to themselves and to the last c tokens of every block.",
))
