"""Segment-level recurrence with a cache: Transformer-XL's memory and the Compressive Transformer's
compressed memory, as gather-free kernels plus dense references.

The sequence is cut into segments of L positions; query i in segment s = ⌊i/L⌋ attends, causally,
the keys [max(0, s·L − mem), i]: its own segment up to itself and the ``mem`` cached positions
before it. ``memory_part`` computes that from one strided view per segment (the keys
[s·L − mem, s·L + L) of every segment are a ``unfold`` of the padded keys, so nothing is gathered)
and returns a partial softmax (out, lse) for ``dense.merge``. Optional relative-position terms
(Transformer-XL's (b), (c), (d)) are added to the logits; they depend on i − j only through a
table of ``mem + L`` position vectors, gathered per (row, key) offset as the paper's "relative
shift" does.

Compression (Rae et al. 2020): at each segment step the oldest L cached positions are evicted and
compressed, ``rate`` c at a time, into ⌈L/c⌉ slots, which join a FIFO of ``slots`` compressed
memories. Eviction chunk t holds the positions [t·L − mem, (t + 1)·L − mem), so every position
falls in exactly one group and a group's slot never changes once made. ``compression_groups``
numbers the groups, ``compress`` pools them, ``slots_part`` lets every segment attend its FIFO
window of slots (gathered once per segment, never per query).

``memory_logits_dense`` and ``slot_weights_dense`` are the plain references (O(N²), display and
tests only): the fast paths are held to them.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..core.registry import Artifact
from ..core.result import check_budget
from .dense import masked_softmax

PASS_ELEMENTS = 1 << 24  # logits + gathered keys held by one pass (64 MB of float32)


class Relative(NamedTuple):
    """Transformer-XL's relative-position terms, per head: ``pos`` (H, P, d) the projected
    encodings W_R·R_Δ for offsets Δ = i − j = 0 … P − 1; ``u``, ``w`` (H, d) the global content
    and position biases (the paper's u and v). Logit(i, j) gains (q_i + w)·pos_{i−j} + u·k_j."""

    pos: torch.Tensor
    u: torch.Tensor
    w: torch.Tensor


def first_key(n: int, segment: int, mem: int, device=None) -> torch.Tensor:
    """(N,) the earliest key each query reaches: max(0, ⌊i/L⌋·L − mem)."""
    i = torch.arange(n, device=device)
    return ((i // segment) * segment - mem).clamp(min=0)


def memory_mask(n: int, segment: int, mem: int, device=None) -> torch.Tensor:
    """(N, N) bool: key j is in query i's segment up to i, or among the ``mem`` positions before it."""
    j = torch.arange(n, device=device)
    return (j[None, :] <= j[:, None]) & (j[None, :] >= first_key(n, segment, mem, device)[:, None])


def segment_artifacts(n: int, segment: int, mem: int, device=None) -> dict:
    """What every segment-memory variant shows: the mask (lazy, (1, 1, N, N)), keys per row
    ((1, 1, N)), the segment of each position and how many cached positions each query reaches."""
    seg, mem = max(1, min(segment, n)), min(mem, n)
    i = torch.arange(n, device=device)
    first = first_key(n, seg, mem, device)

    def mask():
        check_budget((n, n), 1, "the dense mask")
        return memory_mask(n, seg, mem, device)[None, None]

    return {"mask": mask, "keys_per_row": (i - first + 1).to(torch.int32)[None, None],
            "segment_ids": i // seg, "memory_span": i - i % seg - first}


SEGMENT_IDS = Artifact("segment_ids", "ids", ("N",), "the segment ⌊i/L⌋ of each position")
MEMORY_SPAN = Artifact("memory_span", "curve", ("N",), "how many cached positions (earlier segments) each query reaches")


def _segment_views(x: torch.Tensor, segment: int, mem: int, total: int) -> torch.Tensor:
    """(B, H, S, d, mem + L): for segment s the rows s·L − mem … s·L + L − 1 of x (zeros outside)."""
    return F.pad(x, (0, 0, mem, total - x.shape[-2])).unfold(-2, mem + segment, segment)


def memory_part(q, k, v, scale: float, segment: int, mem: int, rel: Relative | None = None):
    """Causal attention of each segment to itself and the ``mem`` positions before it (see the
    module docstring). Work O(N·(mem + L)·d) in batched matmuls on strided views; memory per pass
    bounded by ``PASS_ELEMENTS``. Returns (out, lse): (B, H, N, dv), (B, H, N)."""
    bsz, h, n, d = q.shape
    dv = v.shape[-1]
    seg = max(1, min(segment, n))
    mem = max(0, min(mem, n))
    nseg = -(-n // seg)
    total = nseg * seg
    span = mem + seg
    qs = F.pad(q, (0, 0, 0, total - n)).view(bsz, h, nseg, seg, d)
    kw, vw = _segment_views(k, seg, mem, total), _segment_views(v, seg, mem, total)
    r = torch.arange(seg, device=q.device)[:, None]
    t = torch.arange(span, device=q.device)[None, :]
    delta = r + mem - t  # (L, span) i − j: the same for every segment
    if rel is not None:
        pos = rel.pos[:, :span].to(q.dtype)  # (H, span, d) offsets 0 … span − 1
        uk = _segment_views((k @ rel.u.to(q.dtype)[:, :, None]), seg, mem, total)[..., 0, :]  # (B, H, S, span)
        shift = delta.clamp(min=0).expand(bsz, h, 1, seg, span)
    out = q.new_empty(bsz, h, nseg, seg, dv)
    lse = q.new_empty(bsz, h, nseg, seg)
    step = max(1, PASS_ELEMENTS // max(1, bsz * h * seg * (3 * span + d + dv)))
    for s0 in range(0, nseg, step):
        s1 = min(nseg, s0 + step)
        logits = torch.matmul(qs[:, :, s0:s1], kw[:, :, s0:s1])  # (B, H, c, L, span)
        if rel is not None:
            by_offset = torch.matmul(qs[:, :, s0:s1] + rel.w.to(q.dtype)[None, :, None, None], pos[None, :, None].transpose(-1, -2))
            logits = logits + by_offset.gather(-1, shift.expand(-1, -1, s1 - s0, -1, -1)) + uk[:, :, s0:s1, None, :]
        j = torch.arange(s0, s1, device=q.device)[:, None, None] * seg - mem + t  # (c, 1, span)
        keep = (delta >= 0) & (j >= 0) & (j < n)
        probs, l = masked_softmax(logits * scale, keep)
        out[:, :, s0:s1] = torch.matmul(probs, vw[:, :, s0:s1].transpose(-1, -2))
        lse[:, :, s0:s1] = l
    return out.view(bsz, h, total, dv)[:, :, :n], lse.view(bsz, h, total)[:, :, :n]


def memory_logits_dense(q, k, scale: float, segment: int, mem: int, rel: Relative | None = None) -> torch.Tensor:
    """The reference: (B, H, N, N) logits (relative terms included), −inf outside ``memory_mask``."""
    bsz, h, n, _ = q.shape
    check_budget((bsz, h, n, n), q.element_size(), "the dense memory logits")
    logits = torch.matmul(q, k.transpose(-1, -2))
    if rel is not None:
        i = torch.arange(n, device=q.device)
        delta = (i[:, None] - i[None, :]).clamp(0, rel.pos.shape[1] - 1)
        by_offset = torch.matmul(q + rel.w.to(q.dtype)[None, :, None], rel.pos.to(q.dtype).transpose(-1, -2))
        logits = logits + by_offset.gather(-1, delta.expand(bsz, h, n, n)) + (k @ rel.u.to(q.dtype)[:, :, None]).transpose(-1, -2)
    mask = memory_mask(n, min(segment, n), min(mem, n), q.device)
    return (logits * scale).masked_fill(~mask, float("-inf"))


# ---------------------------------------------------------------- compression


def compression_groups(n: int, segment: int, mem: int, rate: int, device=None):
    """Group of each position: (gid (N,) long, groups per eviction chunk G_c, number of group ids).

    Eviction chunk t = ⌊(j + mem)/L⌋ holds positions [t·L − mem, (t + 1)·L − mem); inside it,
    position p = (j + mem) mod L is in group ⌊p/c⌋ of ⌈L/c⌉. Group ids run t·G_c + ⌊p/c⌋ (ids of
    chunk 0 that would hold only positions before 0 stay empty)."""
    j = torch.arange(n, device=device)
    per_chunk = -(-segment // rate)
    chunk, p = (j + mem) // segment, (j + mem) % segment
    gid = chunk * per_chunk + p // rate
    return gid, per_chunk, int(gid[-1]) + 1


def group_weights(n: int, segment: int, mem: int, rate: int, taps: torch.Tensor) -> torch.Tensor:
    """(N,) each position's weight in its group's slot: its tap (by place in the group, c taps,
    positive) renormalised over the group's positions, so every slot is a convex combination of
    its tokens (equal taps: the mean)."""
    j = torch.arange(n, device=taps.device)
    gid, _, groups = compression_groups(n, segment, mem, rate, taps.device)
    w = taps[((j + mem) % segment) % rate]
    total = torch.zeros(groups, dtype=taps.dtype, device=taps.device).index_add_(0, gid, w)
    return w / total[gid]


def compress(x: torch.Tensor, gid: torch.Tensor, groups: int, how: str, weights: torch.Tensor | None = None):
    """Slots (B, H, G, d) from x (B, H, N, d): Σ weights·x over each group ("mean"/"conv": pass
    ``group_weights``), or the element-wise maximum ("max"). Empty groups give zeros."""
    bsz, h, n, d = x.shape
    if how == "max":
        out = x.new_full((bsz, h, groups, d), float("-inf"))
        out = out.scatter_reduce(2, gid.view(1, 1, n, 1).expand(bsz, h, n, d), x, "amax", include_self=True)
        return torch.where(torch.isinf(out), torch.zeros_like(out), out)
    return x.new_zeros(bsz, h, groups, d).index_add_(2, gid, x * weights.to(x.dtype)[:, None])


def slot_windows(n: int, segment: int, per_chunk: int, slots: int, gid: torch.Tensor, groups: int):
    """The compressed memories each segment attends: ids (S, slots) and valid (S, slots). Segment s
    has seen chunks 0 … s − 1 evicted, so its FIFO holds group ids [s·G_c − slots, s·G_c), minus
    ids with no position (before the sequence start)."""
    nseg = -(-n // segment)
    ids = torch.arange(nseg, device=gid.device)[:, None] * per_chunk - slots + torch.arange(slots, device=gid.device)
    filled = torch.zeros(groups + 1, dtype=torch.bool, device=gid.device)
    filled[gid] = True
    valid = (ids >= 0) & filled[ids.clamp(0, groups)] & (ids < groups)
    return ids.clamp(0, max(groups - 1, 0)), valid


def slots_part(q, kc, vc, scale: float, segment: int, ids: torch.Tensor, valid: torch.Tensor):
    """Every query of segment s attends the slots ``ids[s]`` of kc, vc ((B, H, G, ·)). Work
    O(N·slots·d); the slots are gathered once per segment. Returns (out, lse)."""
    bsz, h, n, d = q.shape
    seg = max(1, min(segment, n))
    nseg = ids.shape[0]
    total = nseg * seg
    qs = F.pad(q, (0, 0, 0, total - n)).view(bsz, h, nseg, seg, d)
    out = q.new_empty(bsz, h, nseg, seg, vc.shape[-1])
    lse = q.new_empty(bsz, h, nseg, seg)
    width = max(1, ids.shape[1])
    step = max(1, PASS_ELEMENTS // max(1, bsz * h * width * (2 * seg + d + vc.shape[-1])))
    for s0 in range(0, nseg, step):
        s1 = min(nseg, s0 + step)
        at = ids[s0:s1]
        logits = torch.matmul(qs[:, :, s0:s1], kc[:, :, at].transpose(-1, -2)) * scale  # (B, H, c, L, slots)
        probs, l = masked_softmax(logits, valid[s0:s1, None, :])
        out[:, :, s0:s1] = torch.matmul(probs, vc[:, :, at])
        lse[:, :, s0:s1] = l
    return out.view(bsz, h, total, -1)[:, :, :n], lse.view(bsz, h, total)[:, :, :n]


def slot_logits_dense(q, kc, scale: float, segment: int, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The reference: (B, H, N, G) logits of every query against every slot, −inf where the
    query's segment does not hold that slot."""
    n, groups = q.shape[-2], kc.shape[-2]
    seg = torch.arange(n, device=q.device) // max(1, min(segment, n))
    held = torch.zeros(ids.shape[0], groups + 1, dtype=torch.bool, device=q.device)
    held.scatter_(1, torch.where(valid, ids, torch.full_like(ids, groups)), True)
    logits = torch.matmul(q, kc.transpose(-1, -2)) * scale
    return logits.masked_fill(~held[seg, :groups], float("-inf"))
