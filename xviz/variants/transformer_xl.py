"""Transformer-XL (Dai et al. 2019): segment-level recurrence with a memory of cached positions.

The sequence is processed in segments of L positions; while processing segment s, the keys and
values of the previous ``mem`` positions are cached and attended as well:

    query i (segment s = ⌊i/L⌋) attends keys j with max(0, s·L − mem) ≤ j ≤ i.

With one layer's q, k, v given, the cache holds those earlier positions' k and v: what the layer
computed for the previous segment (the paper's stop-gradient SG(·) changes training, not the
forward pass). It is a causal language model, so it always runs causally (``causal_only``).
mem = 0 is causal blocked-local attention within segments (``blocked_local`` with block = L,
look_back = 0); mem ≥ N (with ``relative = "none"``) is exact causal attention.

Relative positions (the paper's §3.3): ``relative = "sinusoidal"`` adds to q_i·k_j the terms
(b) q_i·W_R R_{i−j}, (c) u·k_j and (d) v·W_R R_{i−j}, with R the sinusoid encoding of the offset
(dimension d, sin and cos halves). W_R, u and v are learned in the paper; untrained, they are
drawn from the seed, per head: W_R with N(0, 1/d) entries (so W_R R has O(1) entries, like q) and
u, v with N(0, 1/d) entries (so the bias terms perturb the logits rather than dominate them).
The default is ``"none"``: xviz compares approximations with exact softmax attention, which has
no position term, so a random untrained bias would only add noise to what the pattern changes.
Compute: ``segments_memory.memory_part`` — each segment meets one strided view of its mem + L
keys in a batched matmul (no gather, no N×N tensor), O(N·(mem + L)·d); the relative terms cost
O(N·(mem + L)·d) more (one score per offset, gathered by the paper's relative shift). The dense
logits (``memory_logits_dense``) give the matrix and the mask on request.
Dai et al. 2019, Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context
(ACL; arXiv:1901.02860), §3.2 (recurrence) and §3.3 (relative positional encodings).
"""
import math

import torch

from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..core.result import Output
from ..kernels.costs import sparse_cost
from ..kernels.dense import work_dtype
from ..kernels.segments_memory import (MEMORY_SPAN, SEGMENT_IDS, Relative, memory_logits_dense, memory_part,
                                       segment_artifacts)
from ..kernels.sparse import KEYS_PER_ROW, MASK

_SALT = 0x7E1


def sinusoid(offsets: int, d: int) -> torch.Tensor:
    """(P, d) float64: the Transformer sinusoid encoding of offsets 0 … P − 1, [sin | cos] halves."""
    half = -(-d // 2)
    inv_freq = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) * 2 / max(d, 2))
    angle = torch.arange(offsets, dtype=torch.float64)[:, None] * inv_freq
    return torch.cat([angle.sin(), angle.cos()], -1)[:, :d]


def relative_terms(ctx, heads: int, d: int, offsets: int, like: torch.Tensor) -> Relative:
    """Seeded, per-head W_R R_Δ (Δ = 0 … P − 1), u and v (see the module docstring)."""
    g = ctx.generator(_SALT)
    w_r = torch.randn(heads, d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    u = torch.randn(heads, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    w = torch.randn(heads, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    pos = sinusoid(offsets, d) @ w_r.transpose(-1, -2)  # (H, P, d): W_R R_Δ
    return Relative(*(t.to(like.device, like.dtype) for t in (pos, u, w)))


def transformer_xl(q, k, v, ctx, segment: int, mem: int, relative: str):
    b, h, n, d = q.shape
    cdt = work_dtype(q.dtype)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    seg, m = min(segment, n), min(mem, n)
    rel = relative_terms(ctx, h, d, m + seg, qc) if relative == "sinusoidal" else None
    out, _ = memory_part(qc, kc, vc, ctx.scale, seg, m, rel)

    def matrix():
        return torch.softmax(memory_logits_dense(qc, kc, ctx.scale, seg, m, rel), dim=-1).to(v.dtype)

    artifacts = segment_artifacts(n, seg, m, q.device)
    if rel is not None:
        artifacts["relative_encoding"] = rel.pos.to(q.dtype)  # (H, mem + L, d) W_R R_Δ
    return Output(out=out.to(v.dtype), matrix=matrix, artifacts=artifacts)


def cost(s, segment, mem, relative):
    seg, m = min(segment, s.n), min(mem, s.n)
    c = sparse_cost(s, m + (seg + 1) / 2)
    extra = s.b * s.h * 2 * s.n * (m + seg) * s.d if relative == "sinusoidal" else 0
    return type(c)(c.flops + extra, c.bytes)


register_variant(VariantSpec(
    name="transformer_xl",
    display_name="Transformer-XL (segments + memory)",
    family="recurrence",
    paper="Dai et al. 2019, Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context "
          "(ACL 2019; arXiv:1901.02860)",
    complexity="O(N·(mem + L)·d)",
    complexity_class="sparse",
    fn=transformer_xl,
    cost=cost,
    params=(
        Param("segment", "int", 64, "segment length L: positions processed together", low=1, high="N"),
        Param("mem", "int", 64, "cached positions before the segment that it also attends (0 = none)",
              low=0, high="N"),
        Param("relative", "choice", "none", "relative-position terms: none, or the paper's sinusoidal R with "
              "seeded W_R, u, v (untrained)", choices=("none", "sinusoidal")),
    ),
    causal=True,
    causal_only=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW, SEGMENT_IDS, MEMORY_SPAN,
               Artifact("relative_encoding", "matrix", ("H", "P", "d"), "W_R R_Δ per offset Δ (relative = sinusoidal)")),
    exact_when=lambda n, d, h: {"mem": n, "relative": "none"},
    content_based=False,
    description="Segments of L tokens attend themselves causally and the mem cached tokens before them.",
))
