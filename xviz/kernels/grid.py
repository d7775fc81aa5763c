"""2-D local attention on a grid (Image Transformer §3.2): positions in raster order on a grid of
width W; rectangular query blocks attend a memory block around them.

``grid_local_part`` computes it without a gather: the keys (and their positions) are laid on the
padded grid, and every query block's memory block is one window of a 2-D ``unfold`` (a strided
view), copied per pass of block rows; each query block meets its memory block in one batched
matmul. ``grid_local_keys`` gives the same pattern as per-query key lists (for
``sparse.sparse_attention``: the matrix, mask and key counts), and the tests hold the two together.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .dense import masked_softmax

PASS_ELEMENTS = 1 << 24


class Grid(NamedTuple):
    """Grid geometry: width W, rows R = ⌈N/W⌉; query blocks bh × bw; the memory block adds ``top``
    rows above, ``bottom`` below and ``side`` columns left and right."""

    n: int
    width: int
    rows: int
    bh: int
    bw: int
    top: int
    bottom: int
    side: int
    causal: bool

    @classmethod
    def make(cls, n: int, width: int, block_rows: int, block_cols: int, mem_rows: int, mem_cols: int, causal: bool):
        w = min(width, n) if width else default_width(n)
        r = -(-n // w)
        top = min(mem_rows, r - 1)
        return cls(n, w, r, min(block_rows, r), min(block_cols, w), top, 0 if causal else top, min(mem_cols, w - 1),
                   causal)

    def generation_rank(self, pos: torch.Tensor) -> torch.Tensor:
        """Each position's place in the causal generation order: query blocks in raster order of blocks,
        raster order inside a block (§3.2). Key j is visible to query i when rank(j) ≤ rank(i): the block
        to the left is visible whole, the block to the right not at all, whatever their grid rows."""
        r, c = pos // self.width, pos % self.width
        block = (r // self.bh) * (-(-self.width // self.bw)) + c // self.bw
        return block * (self.bh * self.bw) + (r % self.bh) * self.bw + c % self.bw

    def visible(self, kpos: torch.Tensor, qpos: torch.Tensor) -> torch.Tensor:
        """Keys that exist (kpos ≥ 0) and, causal, come no later than the query in generation order."""
        keep = kpos >= 0
        return keep & (self.generation_rank(kpos) <= self.generation_rank(qpos)) if self.causal else keep

    @property
    def memory(self) -> tuple[int, int]:
        return self.bh + self.top + self.bottom, self.bw + 2 * self.side


def default_width(n: int) -> int:
    """⌈√N⌉: the grid width when ``width`` = 0 (N factorised into a near-square grid)."""
    w = int(n ** 0.5)
    return w if w * w >= n else w + 1


def _on_grid(x: torch.Tensor, g: Grid, rows: int, cols: int, value=0) -> torch.Tensor:
    """(…, N, c) -> (…, rows, cols, c) in raster order, padded with ``value``."""
    x = F.pad(x, (0, 0, 0, g.rows * g.width - g.n), value=value)
    x = x.view(*x.shape[:-2], g.rows, g.width, x.shape[-1])
    return F.pad(x, (0, 0, 0, cols - g.width, 0, rows - g.rows), value=value)


def _windows(x: torch.Tensor, g: Grid, nbr: int, nbc: int, value=0) -> torch.Tensor:
    """(…, N, c) -> (…, nbr, nbc, c, mr, mc): the memory block of every query block (a strided view)."""
    mr, mc = g.memory
    grid = _on_grid(x, g, nbr * g.bh, nbc * g.bw, value)
    grid = F.pad(grid, (0, 0, g.side, g.side, g.top, g.bottom), value=value)
    d = grid.dim()
    return grid.unfold(d - 3, mr, g.bh).unfold(d - 2, mc, g.bw)


def grid_local_part(q, k, v, scale: float, g: Grid):
    """Query block (a, c) — grid rows a·bh … and columns c·bw … — attends its memory block; causal in
    the generation order (``Grid.generation_rank``) when ``g.causal``. Returns (out, lse) like ``blocks``
    kernels."""
    bsz, h, n, d = q.shape
    dv = v.shape[-1]
    nbr, nbc = -(-g.rows // g.bh), -(-g.width // g.bw)
    mr, mc = g.memory
    pos = torch.arange(n, device=q.device)[:, None]
    qpos = _on_grid(pos, g, nbr * g.bh, nbc * g.bw, -1)[..., 0].view(nbr, g.bh, nbc, g.bw).permute(0, 2, 1, 3)
    qpos = qpos.reshape(nbr, nbc, g.bh * g.bw)
    kpos = _windows(pos, g, nbr, nbc, -1)[..., 0, :, :].reshape(nbr, nbc, mr * mc)
    qb = _on_grid(q, g, nbr * g.bh, nbc * g.bw).view(bsz, h, nbr, g.bh, nbc, g.bw, d)
    qb = qb.permute(0, 1, 2, 4, 3, 5, 6).reshape(bsz, h, nbr, nbc, g.bh * g.bw, d)
    kwin, vwin = _windows(k, g, nbr, nbc), _windows(v, g, nbr, nbc)  # (B, H, nbr, nbc, ·, mr, mc)
    out = q.new_empty(bsz, h, nbr, nbc, g.bh * g.bw, dv)
    lse = q.new_empty(bsz, h, nbr, nbc, g.bh * g.bw)
    per_row = bsz * h * nbc * mr * mc * (2 * g.bh * g.bw + d + dv)
    step = max(1, PASS_ELEMENTS // max(1, per_row))
    for a0 in range(0, nbr, step):
        a1 = min(nbr, a0 + step)
        kt = kwin[:, :, a0:a1].reshape(bsz, h, a1 - a0, nbc, d, mr * mc)
        vt = vwin[:, :, a0:a1].reshape(bsz, h, a1 - a0, nbc, dv, mr * mc).transpose(-1, -2)
        keep = g.visible(kpos[a0:a1, :, None, :], qpos[a0:a1, :, :, None])
        probs, l = masked_softmax(torch.matmul(qb[:, :, a0:a1], kt) * scale, keep)
        out[:, :, a0:a1] = torch.matmul(probs, vt)
        lse[:, :, a0:a1] = l
    out = out.view(bsz, h, nbr, nbc, g.bh, g.bw, dv).permute(0, 1, 2, 4, 3, 5, 6)
    out = out.reshape(bsz, h, nbr * g.bh, nbc * g.bw, dv)[:, :, :g.rows, :g.width].reshape(bsz, h, -1, dv)[:, :, :n]
    lse = lse.view(bsz, h, nbr, nbc, g.bh, g.bw).permute(0, 1, 2, 4, 3, 5)
    lse = lse.reshape(bsz, h, nbr * g.bh, nbc * g.bw)[:, :, :g.rows, :g.width].reshape(bsz, h, -1)[:, :, :n]
    return out, lse


def grid_local_keys(rows: torch.Tensor, g: Grid):
    """The same pattern as key lists: (idx (c, mr·mc), valid) for the query positions ``rows``, causal
    masking (in generation order) included."""
    mr, mc = g.memory
    r, c = rows // g.width, rows % g.width
    r0 = (r // g.bh) * g.bh - g.top
    c0 = (c // g.bw) * g.bw - g.side
    rr = r0[:, None, None] + torch.arange(mr, device=rows.device)[None, :, None]
    cc = c0[:, None, None] + torch.arange(mc, device=rows.device)[None, None, :]
    idx = (rr * g.width + cc).flatten(1)
    valid = ((rr >= 0) & (cc >= 0) & (cc < g.width)).expand(-1, mr, mc).flatten(1) & (idx < g.n)
    valid = valid & g.visible(torch.where(valid, idx, -1), rows[:, None])
    return idx, valid
