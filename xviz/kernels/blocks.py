"""Block patterns: every fixed and combined sparse pattern written once, executed two ways.

A ``BlockPattern`` is a list of ``BlockPart``s plus global rows. A part is FlexAttention's model of
a sparse pattern: a *block table* (query tile t meets key blocks ``table[h, t]``) in a *layout* (an
ordering of the positions, so strides and residue classes become contiguous blocks), an *element
predicate* ``allowed(i, j)`` (FlexAttention's mask_mod) that thins the tiles, and optional shared key
*columns* every query also meets (global or summary columns). From it derive:

* ``BlockPattern.keys_for(rows)``: per-query key lists for ``xviz.kernels.sparse`` — the gather
  reference the tests hold every fast path to, and (lazily) the matrix, mask and keys_per_row;
* ``execute``: the output as batched dense matmuls over contiguous tiles (``xviz.kernels.tiles``:
  no per-key gather, a tile's keys are whole blocks or a strided view when the table is a band),
  parts merged exactly by their log-sum-exps; on CUDA FlexAttention with a ``BlockMask`` built from
  the same table (``xviz.kernels.flex``).

Positions are those of the *keys* (N_k). Cross-attention (N_q ≠ N_k, non-causal) places query i at
key position c(i) = ⌊(i + ½)·N_k / N_q⌋ (``centres``) and gives it the keys the pattern gives c(i);
for N_q = N_k, c(i) = i. Global rows are then the queries whose c(i) is a global position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..core.result import Output

Allowed = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def centres(nq: int, nk: int, device=None) -> torch.Tensor:
    """c(i) = ⌊(i + ½)·N_k / N_q⌋: the key position query i sits at (i itself when N_q = N_k)."""
    return (torch.arange(nq, device=device) * 2 + 1) * nk // (2 * nq)


@dataclass
class BlockPart:
    """Query tiles of ``q_block`` layout slots meet key blocks of ``k_block`` layout slots.

    table: (1 or h, tiles, L) key-block ids per query tile; ids outside [0, key blocks) mean none.
    allowed: mask_mod ``allowed(i, j)`` on positions (broadcastable LongTensors) thinning the tiles.
    columns: (1 or h, S) key positions every query of the part also meets (ascending; not thinned).
    order: the layout, (P,) position at each slot (≥ n: padding); None is the identity. P is a
      multiple of both block sizes.
    heads: the heads the part covers (None: all); parts on the same heads are merged.
    """

    table: torch.Tensor
    q_block: int
    k_block: int
    allowed: Allowed | None = None
    columns: torch.Tensor | None = None
    order: torch.Tensor | None = None
    heads: torch.Tensor | None = None

    def slots(self, n: int) -> int:
        return self.order.numel() if self.order is not None else n

    def positions(self, slot: torch.Tensor, n: int) -> torch.Tensor:
        """Positions at layout slots (≥ n where the slot is padding or out of range)."""
        slot = slot.long()
        if self.order is None:
            return torch.where((slot >= 0) & (slot < n), slot, torch.full_like(slot, n))
        inside = (slot >= 0) & (slot < self.order.numel())
        return torch.where(inside, self.order.to(slot.device)[slot.clamp(0, self.order.numel() - 1)], n)

    def inverse(self, n: int, device) -> torch.Tensor:
        """(n,) the layout slot of each position."""
        if self.order is None:
            return torch.arange(n, device=device)
        order = self.order.to(device)
        inv = torch.empty(n, dtype=torch.long, device=device)
        real = order < n
        inv[order[real]] = torch.arange(order.numel(), device=device)[real]
        return inv


@dataclass
class BlockPattern:
    """A sparse pattern on n key positions: the union of its parts' keys, plus ``full_rows``
    (positions whose rows attend every key, j ≤ i when causal)."""

    n: int
    parts: list[BlockPart]
    causal: bool = False
    full_rows: torch.Tensor | None = None

    # ------------------------------------------------------------------ key lists (the reference)
    def query_full_rows(self, nq: int, device=None) -> torch.Tensor | None:
        """Query indices that attend everything: those sitting at a global position."""
        if self.full_rows is None or not self.full_rows.numel():
            return None
        c = centres(nq, self.n, device)
        return torch.nonzero(torch.isin(c, self.full_rows.to(device))).flatten()

    def keys_for(self, rows: torch.Tensor, heads: int, nq: int | None = None):
        """(idx, valid) of shape (1, h, c, K) (h = 1 when every part is shared): the keys of the
        queries ``rows`` (query indices; positions c(rows) for cross-attention)."""
        n = self.n
        c = rows if nq is None or nq == n else centres(nq, n, rows.device)[rows]
        per_head = any(p.heads is not None or p.table.shape[0] > 1 or
                       (p.columns is not None and p.columns.shape[0] > 1) for p in self.parts)
        hh = heads if per_head else 1
        idx, valid = [], []
        for p in self.parts:
            i, ok = _part_keys(p, c, n)  # (hb, c, K)
            i, ok = i.expand(hh, -1, -1), ok.expand(hh, -1, -1)
            if p.heads is not None:
                mine = torch.zeros(hh, dtype=torch.bool, device=rows.device)
                mine[p.heads.to(rows.device)] = True
                ok = ok & mine[:, None, None]
            idx.append(i)
            valid.append(ok)
        return torch.cat(idx, -1)[None], torch.cat(valid, -1)[None]

    def width(self) -> int:
        return sum(p.table.shape[-1] * p.k_block + (p.columns.shape[-1] if p.columns is not None else 0)
                   for p in self.parts)


def _part_keys(p: BlockPart, c: torch.Tensor, n: int):
    """Keys of the part for queries at positions ``c``: table keys thinned by ``allowed``, then columns."""
    dev = c.device
    tile = p.inverse(n, dev)[c] // p.q_block  # (c,)
    blocks = p.table.to(dev)[:, tile]  # (hb, c, L)
    slot = blocks[..., None] * p.k_block + torch.arange(p.k_block, device=dev)
    nkb = -(-p.slots(n) // p.k_block)
    ok = ((blocks >= 0) & (blocks < nkb))[..., None].expand_as(slot)
    j = p.positions(torch.where(ok, slot, -1), n).flatten(-2)  # (hb, c, L·b)
    ok = ok.flatten(-2) & (j < n)
    if p.allowed is not None:
        ok = ok & p.allowed(c[:, None], j)
    if p.columns is not None and p.columns.numel():
        cols = p.columns.to(dev)
        hb = max(j.shape[0], cols.shape[0])
        j = torch.cat([j.expand(hb, -1, -1), cols[:, None, :].expand(hb, c.numel(), -1)], -1)
        ok = torch.cat([ok.expand(hb, -1, -1), (cols < n)[:, None, :].expand(hb, c.numel(), -1)], -1)
    return j, ok


# ------------------------------------------------------------------------------------ execution

def execute(q, k, v, scale: float, pattern: BlockPattern) -> torch.Tensor:
    """The pattern's attention output, (B, H, N_q, d_v) in v's dtype, from tiles (CPU and any device)
    or FlexAttention (CUDA, see ``xviz.kernels.flex``). Logits at float32 or wider."""
    from . import flex, tiles

    if flex.wanted(q):
        return flex.execute(q, k, v, scale, pattern)
    return tiles.execute_tiles(q, k, v, scale, pattern)


# ------------------------------------------------------------------------------------ outputs

def lazy_views(out: torch.Tensor, make_pattern_output, extra: dict | None = None, names=("mask", "keys_per_row")):
    """An Output whose ``out`` came from a fast kernel, with ``matrix`` and the artifacts in
    ``names`` taken — only when first asked for — from ``make_pattern_output()``, a
    ``sparse_attention(..., compute_out=False)`` call on the same pattern."""
    cache = {}

    def pattern_output():
        if "o" not in cache:
            cache["o"] = make_pattern_output()
        return cache["o"]

    def artifact(name):
        def get():
            value = pattern_output().artifacts[name]
            return value() if callable(value) and not isinstance(value, torch.Tensor) else value
        return get

    artifacts = {name: artifact(name) for name in names}
    artifacts.update(extra or {})
    return Output(out=out, matrix=lambda: pattern_output().matrix(), artifacts=artifacts)


def pattern_views(q, k, v, ctx, pattern: BlockPattern, *, compute_out: bool = False):
    """``sparse_attention`` on the pattern's key lists: the gather reference when ``compute_out``,
    else only the matrix, mask and keys_per_row (for ``lazy_views``)."""
    from .sparse import sparse_attention

    h, nq = q.shape[1], q.shape[-2]
    return sparse_attention(q, k, v, ctx, lambda rows: pattern.keys_for(rows, h, nq), width=pattern.width(),
                            full_rows=pattern.query_full_rows(nq, q.device), compute_out=compute_out)


def pattern_output(q, k, v, ctx, pattern: BlockPattern, extra: dict | None = None) -> Output:
    """What a block-pattern variant returns: the fast ``out``; matrix, mask, keys_per_row (and the
    global rows) from the same pattern's key lists, built on request. One-position blocks (per-row
    keys: random) share no tile, so there the per-key gather *is* the fast path (2× the tiles')."""
    if all(p.q_block == p.k_block == 1 for p in pattern.parts):
        result = pattern_views(q, k, v, ctx, pattern, compute_out=True)
        result.artifacts.update(extra or {})
        return result
    out = execute(q, k, v, ctx.scale, pattern)
    extra = dict(extra or {})
    full = pattern.query_full_rows(q.shape[-2], q.device)
    if full is not None:
        extra.setdefault("global_rows", full)
    return lazy_views(out, lambda: pattern_views(q, k, v, ctx, pattern), extra=extra)
