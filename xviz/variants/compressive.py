"""Compressive Transformer (Rae et al. 2020): Transformer-XL's memory plus a compressed memory.

As Transformer-XL (``transformer_xl``): segments of L positions, each attending itself causally
and the ``mem`` cached positions before it. When a segment step evicts the oldest L cached
positions, the Compressive Transformer does not discard them: a compression function f_c maps
them, ``rate`` c at a time, to ⌈L/c⌉ compressed memories, kept in a FIFO of ``slots`` n_cm.
Query i in segment s therefore attends

    its segment up to i  ∪  the raw memory [s·L − mem, s·L)  ∪  the n_cm newest compressed slots
    (made from positions before s·L − mem).

Compression (the paper compares several; ``compression``):
- "mean": each slot is the mean of its c positions' keys (and values) — the paper's mean pooling;
- "conv": a strided 1-D convolution (kernel c, stride c) whose c taps are drawn from the seed
  (softmax of N(0, 1) draws: positive, summing to one). The paper learns a full convolution;
  we use one scalar tap per position shared by every channel, which keeps each slot a convex
  combination of its tokens, so the effective N×N weights exist and stay row-stochastic (mean
  pooling is the case of equal taps). Linear compression commutes with the key and value
  projections, so compressing k and v equals projecting the compressed hidden states, as the
  paper does; keys and values therefore share the taps.
- "max": element-wise max pooling of keys and of values (the paper's max pooling). A slot's
  value is then not a weighted sum of the values, so there is no effective matrix (the output
  is still computed; ``matrix()`` refuses).
A group that would reach before position 0, or the last group of a chunk when c ∤ L, has fewer
than c positions; its taps are renormalised over the positions it has.
No relative-position terms here (Transformer-XL's ``relative`` is off), so ``slots = 0`` is
exactly ``transformer_xl`` with the same segment and mem, and mem ≥ N is exact causal attention.
Compute: the raw part as Transformer-XL's strided views, the slots gathered once per segment
(never per query), merged by their log-sum-exps: O(N·(mem + L + n_cm)·d) time, no N×N tensor.
Rae et al. 2020, Compressive Transformers for Long-Range Sequence Modelling (ICLR;
arXiv:1911.05507), §3.
"""
import torch

from ..core.registry import Artifact, Param, VariantSpec, register_variant
from ..core.result import Output, check_budget
from ..kernels.costs import sparse_cost
from ..kernels.dense import masked_softmax, merge, work_dtype
from ..kernels.segments_memory import (MEMORY_SPAN, SEGMENT_IDS, compress, compression_groups, group_weights,
                                       memory_logits_dense, memory_part, segment_artifacts, slot_logits_dense,
                                       slot_windows, slots_part)

_SALT = 0xC0DE


def compressive(q, k, v, ctx, segment: int, mem: int, rate: int, slots: int, compression: str):
    b, h, n, d = q.shape
    cdt = work_dtype(q.dtype)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    seg, m = min(segment, n), min(mem, n)
    c = min(rate, seg)
    gid, per_chunk, groups = compression_groups(n, seg, m, c, q.device)
    taps = (torch.softmax(torch.randn(c, generator=ctx.generator(_SALT), dtype=torch.float64), 0)
            if compression == "conv" else torch.ones(c, dtype=torch.float64)).to(q.device, cdt)
    weights = group_weights(n, seg, m, c, taps)
    k_slot, v_slot = compress(kc, gid, groups, compression, weights), compress(vc, gid, groups, compression, weights)
    ids, valid = slot_windows(n, seg, per_chunk, slots, gid, groups)
    parts = [memory_part(qc, kc, vc, ctx.scale, seg, m)]
    if slots and bool(valid.any()):
        parts.append(slots_part(qc, k_slot, v_slot, ctx.scale, seg, ids, valid))
    out = merge(parts)

    def matrix():
        check_budget((b, h, n, n), q.element_size(), "the compressive attention matrix")
        raw = memory_logits_dense(qc, kc, ctx.scale, seg, m)
        slot = slot_logits_dense(qc, k_slot, ctx.scale, seg, ids, valid)
        probs, _ = masked_softmax(torch.cat([raw, slot], -1), None)
        spread = probs[..., n:][..., gid] * weights  # a slot's weight over its tokens, by their taps
        return (probs[..., :n] + spread).to(v.dtype)

    shared = segment_artifacts(n, seg, m, q.device)  # no "mask": compressed slots are not raw keys
    artifacts = {"segment_ids": shared["segment_ids"], "memory_span": shared["memory_span"],
        "slot_of_token": gid,  # (N,) the compression group (slot id) of each position
        "slot_weights": weights.to(q.dtype),  # (N,) each position's weight in its slot
        "memory_kind": lambda: _memory_kind(n, seg, m, gid, ids, valid, q.device),
        "slots_per_segment": torch.where(valid, ids, torch.full_like(ids, -1)),  # (S, n_cm), −1 = empty
    }
    return Output(out=out.to(v.dtype), matrix=None if compression == "max" else matrix, artifacts=artifacts)


def _memory_kind(n, seg, m, gid, ids, valid, device):
    """(N, N) int8: 0 not attended, 1 the query's own segment, 2 raw memory, 3 compressed (the key's
    token was pooled into a slot the query attends)."""
    check_budget((n, n), 1, "the memory-kind map")
    i = torch.arange(n, device=device)
    start = (i // seg) * seg
    kind = torch.zeros(n, n, dtype=torch.int8, device=device)
    kind[(i[None, :] >= start[:, None]) & (i[None, :] <= i[:, None])] = 1
    kind[(i[None, :] < start[:, None]) & (i[None, :] >= start[:, None] - m)] = 2
    held = torch.zeros(ids.shape[0], int(gid.max()) + 2, dtype=torch.bool, device=device)
    held.scatter_(1, torch.where(valid, ids, torch.full_like(ids, held.shape[1] - 1)), True)
    pooled = held[i // seg][:, gid] & (i[None, :] < start[:, None] - m)
    kind[pooled] = 3
    return kind


def cost(s, segment, mem, rate, slots, compression):
    seg, m = min(segment, s.n), min(mem, s.n)
    c = sparse_cost(s, m + (seg + 1) / 2 + slots)
    pool = 2 * s.b * s.h * s.n * (s.d + s.dv)
    return type(c)(c.flops + pool, c.bytes + 4 * s.b * s.h * (s.n // max(1, min(rate, seg)) + 1) * (s.d + s.dv))


register_variant(VariantSpec(
    name="compressive",
    display_name="Compressive Transformer",
    family="recurrence",
    paper="Rae et al. 2020, Compressive Transformers for Long-Range Sequence Modelling (ICLR 2020; arXiv:1911.05507)",
    complexity="O(N·(mem + L + n_cm)·d)",
    complexity_class="sparse",
    fn=compressive,
    cost=cost,
    params=(
        Param("segment", "int", 64, "segment length L: positions processed together", low=1, high="N"),
        Param("mem", "int", 64, "raw memory: cached positions before the segment", low=0, high="N"),
        Param("rate", "int", 4, "compression rate c: evicted positions pooled into one slot", low=1, high="N"),
        Param("slots", "int", 32, "compressed memory n_cm: the newest slots each segment attends (0 = none)",
              low=0, high="N"),
        Param("compression", "choice", "mean", "f_c: mean pooling, a strided convolution with seeded taps, "
              "or max pooling (no effective matrix)", choices=("mean", "conv", "max")),
    ),
    causal=True,
    causal_only=True,
    row_stochastic=lambda p: p["compression"] != "max",
    artifacts=(
        SEGMENT_IDS, MEMORY_SPAN,
        Artifact("slot_of_token", "ids", ("N",), "the compressed slot each position is (or will be) pooled into"),
        Artifact("slot_weights", "curve", ("N",), "each position's weight in its slot (its tap, renormalised)"),
        Artifact("memory_kind", "matrix", ("N", "N"), "per (query, key): 1 own segment, 2 raw memory, 3 compressed"),
        Artifact("slots_per_segment", "ids", ("S", "n_cm"), "the slot ids each segment attends (−1: empty)"),
    ),
    exact_when=lambda n, d, h: {"mem": n},
    content_based=False,
    description="Transformer-XL plus evicted memories pooled c-to-1 into a compressed memory of n_cm slots.",
))
