"""The block-pattern representation: every fixed and combined sparse pattern written once.

A ``BlockPattern`` is a list of ``BlockPart``s plus global rows. A part is FlexAttention's model of
a sparse pattern: a *block table* (query tile t meets key blocks ``table[h, t]``) in a *layout* (an
ordering of the positions, so strides and residue classes become contiguous blocks), an *element
predicate* ``allowed(i, j)`` (FlexAttention's mask_mod) that thins the tiles, and optional shared key
*columns* every query also meets (global or summary columns). From it derive:

* ``BlockPattern.keys_for(rows)``: per-query key lists for ``xviz.kernels.sparse`` — the gather
  reference the tests hold every fast path to, and (lazily) the matrix, mask and keys_per_row;
* the output, executed elsewhere from the same table: ``xviz.kernels.tiles`` (batched dense matmuls
  over contiguous tiles, CPU and any device) and ``xviz.kernels.flex`` (FlexAttention on CUDA), both
  reached through ``xviz.kernels.blocks.execute``. This module imports neither.

Positions are those of the *keys* (N_k). Cross-attention (N_q ≠ N_k, non-causal) places query i at
key position c(i) = ⌊(i + ½)·N_k / N_q⌋ (``centres``) and gives it the keys the pattern gives c(i);
for N_q = N_k, c(i) = i. Global rows are then the queries whose c(i) is a global position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

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
