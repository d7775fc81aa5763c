"""BigBird block-sparse attention (Zaheer et al. 2020, §2 and Appendix D).

The sequence is cut into blocks of ``block`` tokens. Each query block attends
* ``window_blocks`` neighbouring blocks, centred on itself (an odd total: w = window_blocks // 2
each side),
* the ``global_blocks`` global blocks, whose own rows attend every key (BigBird-ITC: global
  tokens are existing tokens), and
* ``random_blocks`` random blocks, drawn per head and per query block from the seed, uniformly
  *without* replacement among the blocks not already in its window or global set.
Our choices: the global blocks are the *first* g blocks (the paper's ITC and the HF code use the
first and last block; with a causal option the last block's columns would be useless); the
random blocks differ between heads (as in the HF implementation) but not between batch
elements. Causal: the window keeps blocks ≤ the query block, j ≤ i inside, global rows attend
only the past, and random blocks are drawn only from blocks ≤ the query block (the
lower-triangular random pattern the paper's autoregressive variant needs).
Defaults: b = 32, a 3-block window, 1 global block, r = 3 (the paper's 3-block window and r = 3;
it uses b = 64 at N = 4,096, where b = 32 keeps the random blocks visible at the app's N = 256).
Limits: a window covering every block (window_blocks ≥ 2·⌈N/b⌉ − 1) is exact attention.
Cost O(N·(window + global + random)·b·d + g·b·N·d); drawing the random blocks is O(H·(N/b)·r²).
Pattern: ``patterns.bigbird`` — one block table per head (window ∪ global ∪ random key blocks per
query block, repeats once), BigBird's own block-sparse scheme: each query block meets its key
blocks, gathered whole, in one matmul (no per-key gather), plus the dense global rows; no N×N
tensor. The key lists derived from the same table give the matrix and mask on request.
Cross-attention (N_q ≠ N_k, non-causal): query i sits at key position
c(i) = ⌊(i + ½)·N_k/N_q⌋ and gets the keys the pattern gives c(i) (``blocks.centres``); the global
rows are the queries sitting in a global block.
"""
import math

from ..kernels import patterns
from ..kernels.blocks import pattern_output
from ..core.errors import ParameterError
from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..kernels.sparse import GLOBAL_ROWS, KEYS_PER_ROW, MASK
from ..kernels.costs import sparse_cost

_SALT = 0xB16B


def bigbird(q, k, v, ctx, block: int, window_blocks: int, global_blocks: int, random_blocks: int):
    """Window ∪ global ∪ random key blocks per query block; global rows dense."""
    n, h = k.shape[-2], q.shape[1]
    nb = math.ceil(n / block)
    rnd = patterns.bigbird_random_blocks(
        n, block=block, window_blocks=window_blocks, global_blocks=global_blocks, random_blocks=min(random_blocks, nb),
        heads=h, generator=ctx.generator(_SALT), causal=ctx.causal)
    pattern = patterns.bigbird(n, block=block, window_blocks=window_blocks, global_blocks=global_blocks, random=rnd,
                               causal=ctx.causal)
    return pattern_output(q, k, v, ctx, pattern, extra={"random_blocks": rnd})


def check(params, n, d, heads):
    nb = math.ceil(n / params["block"])
    w = params["window_blocks"]
    if w % 2 == 0 and w < 2 * nb - 1:
        raise ParameterError(
            f"window_blocks = {w} must be odd (a centred window: 1, 3, 5, …, up to {2 * nb - 1}, "
            f"which covers all {nb} blocks)."
        )


def cost(s, block, window_blocks, global_blocks, random_blocks):
    block = min(block, s.nk)
    nb = math.ceil(s.nk / block)
    win = min(window_blocks, 2 * nb - 1)
    win = (win // 2 + 0.5) if s.causal else win
    rnd = min(random_blocks, nb) / (2 if s.causal else 1)
    keys = (win + min(global_blocks, nb) + rnd) * block
    return sparse_cost(s, min(s.nk, keys), full_rows=min(s.nk, global_blocks * block) * s.n // s.nk)


def exact_when(n, d, h):
    block = _BLOCK.fit_default(n, d)
    return {"window_blocks": 2 * math.ceil(n / block) - 1}


_BLOCK = Param("block", "int", 32, "block size b: attention is decided per block of b tokens", low=1, high="N", log=True)

register_variant(VariantSpec(
    name="bigbird",
    display_name="BigBird",
    family="combined pattern",
    paper="Zaheer et al. 2020, Big Bird: Transformers for Longer Sequences (arXiv:2007.14062)",
    complexity="O(N·(w + g + r)·b·d + g·b·N·d)",
    complexity_class="sparse",
    fn=bigbird,
    cost=cost,
    params=(
        _BLOCK,
        Param("window_blocks", "int", 3, "neighbouring blocks each query block attends (odd, centred)",
              low=1, high="N"),
        Param("global_blocks", "int", 1, "global blocks (the first g): their rows and columns are dense",
              low=0, high="N"),
        Param("random_blocks", "int", 3, "random key blocks per query block and head (seeded)", low=0, high="N"),
    ),
    causal=True,
    cross=True,
    stochastic=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW, GLOBAL_ROWS,
               Artifact("random_blocks", "ids", ("H", "blocks", "r"), "the random key blocks of each query block (−1: none)")),
    content_based=False,
    check=check,
    exact_when=exact_when,
    description="Block window ∪ global blocks ∪ random blocks per head (ITC).",
))
