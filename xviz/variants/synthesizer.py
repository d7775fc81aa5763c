"""Random Synthesizer (Tay et al. 2021): attention weights that ignore the queries and keys.

Weights softmax(R) per row, out = softmax(R) V, with R an N × N matrix per head:
- "full": R has iid N(0, 1) entries (the Random Synthesizer);
- "factorized": R = R₁R₂ᵀ with R₁, R₂: N × k with iid N(0, 1/√k) entries, so R's entries
  still have unit variance (the Factorized Random Synthesizer).
The paper *learns* R (or R₁, R₂) as parameters, or keeps a random initialisation fixed; here it
is that fixed random draw, seeded per head and shared across the batch. Q, K and the logit
scale are not used, so the variant is not content-based. Causal: R's upper triangle is masked, and
R is drawn row by row in position order (``kernels.draws``), so row i is the same draw at any N:
appending tokens moves no earlier output.
R is generated and used in blocks of rows (a fixed block size for a given N, so ``out``,
``matrix()`` and the "logits" artifact see the same R): quadratic time, O(block·N) memory; drawing
the N² entries of "full" R (mt19937, one core) costs more than the attention itself. "factorized"
is attention with queries R₁ and keys R₂: one fused SDPA call, no N² draws.
Tay et al. 2021, Synthesizer: Rethinking Self-Attention for Transformer Models (ICML 2021;
arXiv:2005.00743), §3.
"""
import torch

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import Output, check_budget
from ..kernels import draws

ROW_ELEMENTS = 1 << 22
_FACTOR_SALTS = (10_001, 10_002)  # R₁, R₂ (full mode's streams use salts 1 … H)


def factors(ctx, heads: int, n: int, rank: int, device, dtype):
    """R₁, R₂: (H, N, k) with N(0, 1/√k) entries, rows drawn in position order (``draws``)."""
    std = rank ** -0.25
    r1, r2 = (draws.normal(ctx.generator(salt), n, heads, rank).transpose(0, 1) * std for salt in _FACTOR_SALTS)
    return r1.to(device, dtype), r2.to(device, dtype)


def logit_blocks(ctx, heads: int, n: int, mode: str, rank: int, device, dtype):
    """Yield (head, start, stop, R[head, start:stop] (c, N)) in a fixed order, from the run's seed.
    Full mode draws row by row from one stream per head (``draws``); causal rows draw only j ≤ i (0
    above the diagonal, masked), so row i's logits are the same at any N: a causal prefix is reproducible."""
    step = max(1, min(n, ROW_ELEMENTS // n))
    if mode == "factorized":
        r1, r2 = factors(ctx, heads, n, rank, device, dtype)
    cols = torch.arange(n)
    for h in range(heads):
        g = ctx.generator(1 + h)  # full mode: one stream per head, drawn block by block in order
        for start in range(0, n, step):
            stop = min(n, start + step)
            if mode == "factorized":
                r = r1[h, start:stop] @ r2[h].T
            elif ctx.causal:
                drawn = cols <= torch.arange(start, stop)[:, None]
                r = torch.zeros(stop - start, n)
                r[drawn] = draws.normal(g, int(drawn.sum()))
                r = r.to(device, dtype)
            else:
                r = draws.normal(g, stop - start, n).to(device, dtype)
            yield h, start, stop, r


def _weights(r, start, stop, causal):
    if causal:
        cols = torch.arange(r.shape[-1], device=r.device)
        rows = torch.arange(start, stop, device=r.device)
        r = r.masked_fill(cols > rows[:, None], float("-inf"))
    return torch.softmax(r, dim=-1)


def synthesizer(q, k, v, ctx, mode: str, rank: int):
    b, heads, n, _ = q.shape
    cdt = torch.promote_types(q.dtype, torch.float32)
    v_ = v.to(cdt)
    out = v_.new_empty(b, heads, n, v.shape[-1])
    blocks = lambda: logit_blocks(ctx, heads, n, mode, rank, q.device, cdt)  # noqa: E731
    if mode == "factorized":  # softmax(R₁R₂ᵀ)V is attention with queries R₁ and keys R₂: one fused call
        out = _factorized_out(ctx, heads, n, rank, v_)
    else:
        for h, start, stop, r in blocks():
            out[:, h, start:stop] = _weights(r, start, stop, ctx.causal) @ v_[:, h]

    def matrix():
        dense = v_.new_empty(1, heads, n, n)
        for h, start, stop, r in blocks():
            dense[0, h, start:stop] = _weights(r, start, stop, ctx.causal)
        return dense.expand(b, -1, -1, -1).to(v.dtype)

    def logits():
        check_budget((1, heads, n, n), v.element_size(), "the synthesizer logits")
        dense = v_.new_empty(1, heads, n, n)
        for h, start, stop, r in blocks():
            dense[0, h, start:stop] = r
        return dense.to(v.dtype)

    return Output(out=out.to(v.dtype), matrix=matrix, artifacts={"logits": logits})  # (1, H, N, N) R


def _factorized_out(ctx, heads: int, n: int, rank: int, v: torch.Tensor) -> torch.Tensor:
    """SDPA(R₁, R₂, V, scale 1) with ``factors``' R₁ and R₂, zero-padded to V's head size (the CPU flash
    kernel wants one head size; zero columns change no logit)."""
    r1, r2 = factors(ctx, heads, n, rank, v.device, v.dtype)
    width = max(rank, v.shape[-1])
    pad = lambda x: torch.nn.functional.pad(x, (0, width - rank))[None].expand(v.shape[0], -1, -1, -1)  # noqa: E731
    vp = torch.nn.functional.pad(v, (0, width - v.shape[-1]))
    out = torch.nn.functional.scaled_dot_product_attention(pad(r1), pad(r2), vp, is_causal=ctx.causal, scale=1.0)
    return out[..., : v.shape[-1]]


def synthesizer_cost(s, mode, rank):
    b, h, n, dv, causal = s.b, s.h, s.n, s.dv, s.causal
    # R and its softmax are made once per head (shared by the batch); no QKᵀ, only weights times V.
    make_r = h * n * n * (2 * rank if mode == "factorized" else 1)
    flops = make_r + 3 * h * n * n + b * h * 2 * n * n * dv * (0.5 if causal else 1.0)
    block = min(n * n, max(ROW_ELEMENTS, n))  # one block of R and of its softmax
    nbytes = 4 * (b * h * n * 2 * dv + 2 * block + (2 * h * n * rank if mode == "factorized" else 0))
    return Cost(float(flops), float(nbytes))


register_variant(VariantSpec(
    name="synthesizer",
    display_name="Random Synthesizer",
    family="learnable pattern",
    paper="Tay et al. 2021, Synthesizer: Rethinking Self-Attention for Transformer Models (ICML 2021; "
          "arXiv:2005.00743)",
    complexity="O(N²·d)",
    complexity_class="quadratic",
    fn=synthesizer,
    cost=synthesizer_cost,
    params=(
        Param("mode", "choice", "full", "full: R is a random N × N matrix; factorized: R = R₁R₂ᵀ of rank k",
              choices=("full", "factorized")),
        Param("rank", "int", 8, "rank k of R₁R₂ᵀ (factorized mode only)", low=1, high="N", log=True),
    ),
    causal=True,
    stochastic=True,
    row_stochastic=True,
    artifacts=(Artifact("logits", "matrix", ("1", "H", "N", "N"),
                        "the fixed random logits R (causal: drawn for j ≤ i only, 0 above the diagonal)"),),
    content_based=False,
    description="softmax(R)V with R fixed random (seeded; the paper learns it), full or factorised.",
))
