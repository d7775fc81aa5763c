"""Sparse attention from per-query key lists, computed in query chunks.

Every sparse variant (window, Longformer, BigBird, LSH, routing, top-k, …) describes its
pattern as a function ``keys_for(rows) -> (idx, valid)``: for the query positions ``rows``
(a contiguous range), the key positions each may attend to (``idx``, shape broadcastable to
(B, H, c, K)) and which of them count (``valid``). This module does the rest: causal masking,
removal of duplicate keys (so a union of lists is a set union), the masked softmax, and — only
on request — the dense N×N weights and mask. Work and memory are O(N·K·d); chunks keep the
gathered keys under ``CHUNK_ELEMENTS`` elements.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..core.registry import Artifact
from ..core.result import Output, check_budget
from .dense import work_dtype

CHUNK_ELEMENTS = 1 << 24  # 64 MB of float32 gathered keys+values per chunk
LOCAL_SPAN = 8  # a chunk whose keys span at most this many times K positions takes its logits by one matmul

KeysFor = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]


@dataclass
class Chunk:
    start: int
    stop: int
    idx: torch.Tensor  # (b, h, c, K) long, clamped to [0, N)
    valid: torch.Tensor  # (b, h, c, K) bool; b, h are 1 where the pattern is shared
    probs: torch.Tensor | None  # (B, H, c, K) softmax weights (0 where not valid)


def _dedupe(idx: torch.Tensor, valid: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mark repeated keys in a row invalid, so each key counts once (union semantics)."""
    key = torch.where(valid, idx, torch.full_like(idx, n))  # n sorts after every real key
    key, _ = key.sort(dim=-1)
    repeat = torch.zeros_like(valid)
    repeat[..., 1:] = key[..., 1:] == key[..., :-1]
    return key.clamp(max=n - 1), (key < n) & ~repeat


def _pattern_chunk(keys_for: KeysFor, rows: torch.Tensor, n: int, causal: bool, self_only_when_alone: bool):
    idx, valid = keys_for(rows)
    idx = idx.long()
    inside = (idx >= 0) & (idx < n)
    valid = inside if valid is None else valid & inside
    if causal:
        valid = valid & (idx <= rows[:, None])
    idx, valid = torch.broadcast_tensors(idx, valid)
    while idx.dim() < 4:
        idx, valid = idx.unsqueeze(0), valid.unsqueeze(0)
    idx, valid = _dedupe(idx, valid, n)
    if self_only_when_alone:
        is_self = idx == rows[:, None]
        others = valid & ~is_self
        alone = ~others.any(dim=-1, keepdim=True)
        valid = others | (valid & is_self & alone)
    return idx, valid


def _valid_span(idx: torch.Tensor, valid: torch.Tensor, n: int) -> tuple[int, int]:
    """[lo, hi): the positions the chunk's valid keys lie in ((0, 0) when none is valid)."""
    if not bool(valid.any()):
        return 0, 0
    lo = int(torch.where(valid, idx, torch.full_like(idx, n)).min())
    hi = int(torch.where(valid, idx, torch.full_like(idx, -1)).max()) + 1
    return lo, hi


def _chunk_rows(n: int, width: int, per_row: int) -> int:
    return max(1, min(n, CHUNK_ELEMENTS // max(1, width * per_row)))


def iter_chunks(q, k, v, scale: float, causal: bool, keys_for: KeysFor, width: int,
                self_only_when_alone: bool = False, with_probs: bool = True) -> Iterator[Chunk]:
    """Walk the queries in chunks, yielding the pattern and (optionally) the softmax weights.
    Keys are positions in [0, N_k); queries run over N_q (cross-attention: N_q ≠ N_k)."""
    b, h, nq, d = q.shape
    n = k.shape[-2]
    step = _chunk_rows(nq, width, b * h * (d + v.shape[-1]))
    bi = torch.arange(b, device=q.device)[:, None, None, None]
    hi_ = torch.arange(h, device=q.device)[None, :, None, None]
    for start in range(0, nq, step):
        stop = min(nq, start + step)
        rows = torch.arange(start, stop, device=q.device)
        idx, valid = _pattern_chunk(keys_for, rows, n, causal, self_only_when_alone)
        probs = None
        if with_probs:
            full_idx = idx.expand(b, h, -1, -1)
            cdt = work_dtype(q.dtype)  # logits and softmax at float32 for half inputs
            lo, hi = _valid_span(idx, valid, n)
            if 0 < hi - lo <= LOCAL_SPAN * idx.shape[-1]:
                # the chunk's keys lie in a short span (a window, local blocks): one matmul over the span,
                # then its K logits picked out; 3× faster than gathering (B, H, c, K, d) keys
                span = torch.matmul(q[:, :, start:stop].to(cdt), k[:, :, lo:hi].to(cdt).transpose(-1, -2))
                logits = span.gather(-1, (full_idx - lo).clamp(0, max(hi - lo - 1, 0))) * scale
            else:
                kg = k[bi, hi_, full_idx]  # (B, H, c, K, d)
                logits = torch.matmul(kg.to(cdt), q[:, :, start:stop, :, None].to(cdt)).squeeze(-1) * scale
            logits = logits.masked_fill(~valid, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            probs = torch.nan_to_num(probs, nan=0.0).to(q.dtype)  # a row with no key at all: zero weights
        yield Chunk(start, stop, idx, valid, probs)


def sparse_attention(q, k, v, ctx, keys_for: KeysFor, width: int, *, full_rows: torch.Tensor | None = None,
                     self_only_when_alone: bool = False, extra_artifacts: dict | None = None,
                     compute_out: bool = True) -> Output:
    """Attention restricted to ``keys_for``'s key lists (plus ``full_rows``: query positions that
    attend to every key, such as global tokens). Returns out, a lazy dense matrix, and the
    artifacts ``mask`` (lazy, dense bool (b, h, N, N) with b, h = 1 where shared),
    ``keys_per_row`` ((b, h, N) counts of attended keys). ``compute_out=False`` leaves ``out`` to the
caller (a faster path such as ``blocks.execute``) and keeps the rest."""
    b, h, nq, _ = q.shape
    n = k.shape[-2]
    scale, causal = ctx.scale, ctx.causal
    bi = torch.arange(b, device=q.device)[:, None, None, None]
    hi = torch.arange(h, device=q.device)[None, :, None, None]
    out = q.new_zeros(b, h, nq, v.shape[-1]) if compute_out else None
    counts = None
    for ch in iter_chunks(q, k, v, scale, causal, keys_for, width, self_only_when_alone, with_probs=compute_out):
        if compute_out:
            vg = v[bi, hi, ch.idx.expand(b, h, -1, -1)]  # (B, H, c, K, dv)
            out[:, :, ch.start:ch.stop] = torch.matmul(ch.probs.unsqueeze(-2), vg).squeeze(-2)
        c = ch.valid.sum(-1, dtype=torch.int32)
        if counts is None:
            counts = torch.zeros(*c.shape[:2], nq, dtype=torch.int32, device=q.device)
        counts[:, :, ch.start:ch.stop] = c
    if full_rows is not None and full_rows.numel():
        full_rows = full_rows.to(q.device).long()
        if compute_out:
            out[:, :, full_rows] = torch.matmul(_full_row_probs(q, k, full_rows, scale, causal), v)
        allowed = (full_rows + 1) if causal else torch.full_like(full_rows, n)
        counts[:, :, full_rows] = allowed.to(torch.int32)

    def matrix() -> torch.Tensor:
        dense = q.new_zeros(b, h, nq, n)
        for ch in iter_chunks(q, k, v, scale, causal, keys_for, width, self_only_when_alone):
            dense[:, :, ch.start:ch.stop].scatter_add_(-1, ch.idx.expand(b, h, -1, -1), ch.probs)
        if full_rows is not None and full_rows.numel():
            dense[:, :, full_rows] = _full_row_probs(q, k, full_rows, scale, causal)
        return dense

    def mask() -> torch.Tensor:
        pb, ph = counts.shape[:2]
        check_budget((pb, ph, nq, n), 1, "the dense mask")
        dense = torch.zeros(pb, ph, nq, n, dtype=torch.uint8, device=q.device)
        for ch in iter_chunks(q, k, v, scale, causal, keys_for, width, self_only_when_alone, with_probs=False):
            idx, valid = torch.broadcast_tensors(ch.idx, ch.valid)
            idx, valid = idx.expand(pb, ph, -1, -1), valid.expand(pb, ph, -1, -1)
            dense[:, :, ch.start:ch.stop].scatter_add_(-1, idx, valid.to(torch.uint8))
        if full_rows is not None and full_rows.numel():
            cols = torch.arange(n, device=q.device)
            dense[:, :, full_rows] = (cols[None, :] <= full_rows[:, None]).to(torch.uint8) if causal else 1
        return dense > 0

    artifacts = {"mask": mask, "keys_per_row": counts}
    if full_rows is not None:
        artifacts["global_rows"] = full_rows
    artifacts.update(extra_artifacts or {})
    return Output(out=out, matrix=matrix, artifacts=artifacts)


def _full_row_probs(q, k, rows: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    wd = work_dtype(q.dtype)  # float32 logits for half inputs (float16 overflows at 65,504)
    logits = torch.matmul(q[:, :, rows].to(wd), k.to(wd).transpose(-1, -2)) * scale  # (B, H, G, N)
    if causal:
        cols = torch.arange(k.shape[-2], device=q.device)
        logits = logits.masked_fill(cols[None, :] > rows[:, None], float("-inf"))
    return torch.softmax(logits, dim=-1).to(q.dtype)


# The artifacts every key-list pattern returns (see ``sparse_attention``).
MASK = Artifact("mask", "mask", ("b", "h", "N", "N"), "which keys each query may attend (b, h = 1 where shared)")
KEYS_PER_ROW = Artifact("keys_per_row", "curve", ("b", "h", "N"), "how many keys each query attends")
GLOBAL_ROWS = Artifact("global_rows", "curve", ("g",), "positions of the global tokens (rows that attend every key)")
