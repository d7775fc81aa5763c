"""The tile executor of ``block_pattern.BlockPattern``: a part's query tiles against their key blocks as
plain 3-D matmuls, per (batch, head) row, over chunks of tiles sized to stay in cache.

* A band table (tile t meets blocks t + offsets) reads its keys as strided views of the layout: no
  copy (only the edge tiles read a small zero-padded copy); K is stored transposed so QKᵀ is a
  plain product. Any other table gathers its key blocks whole (never key by key).
* The element predicate, causality and validity become an additive 0 / −inf bias that the matmul
  adds as it writes (``baddbmm``), broadcast over rows where it does not depend on them.
* Shared columns join the tile's logits, so one softmax covers both; a part that is merged with
  others returns its log-sum-exp (``softmax_out``), one that is alone uses ``torch.softmax``.
* A tile wider than the budget (a block as long as N: an exact limit) is split by rows.

Held to the gather reference (``blocks.pattern_views(compute_out=True)``) by tests/test_patterns.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .block_pattern import BlockPart, BlockPattern, centres
from .dense import merge, work_dtype

# Logit elements one pass holds: 2 MB of float32, so a chunk's logits stay in a core's L2 cache.
TILE_ELEMENTS = 1 << 19


def execute_tiles(q, k, v, scale: float, pattern: BlockPattern) -> torch.Tensor:
    wd = work_dtype(q.dtype)
    qs, k_, v_ = (q.to(wd) * scale), k.to(wd), v.to(wd)  # the scale folded into q once
    b, h, nq, _ = q.shape
    out = None
    groups: dict[tuple, list[BlockPart]] = {}
    for p in pattern.parts:
        groups.setdefault(tuple(p.heads.tolist()) if p.heads is not None else (), []).append(p)
    for heads, parts in groups.items():
        sel = list(heads) if heads else slice(None)
        qh, kh, vh = (x[:, sel] for x in (qs, k_, v_))
        res = merge([part_tiles(qh, kh, vh, p, pattern, need_lse=len(parts) > 1) for p in parts])
        if not heads and len(groups) == 1:
            out = res  # one group on every head: no copy
        else:
            out = q.new_empty(b, h, nq, v.shape[-1], dtype=wd) if out is None else out
            out[:, sel] = res
    full = pattern.query_full_rows(nq, q.device)
    if full is not None:
        out[:, :, full] = dense_rows(qs, k_, v_, 1.0, pattern.causal, full)
    return out.to(v.dtype)


@dataclass
class TilePlan:
    q_slots: torch.Tensor | None  # (T·bq,) query index per tile row (≥ nq: padding); None: contiguous
    table: torch.Tensor  # (hb, T, L) key blocks per query tile (−1 or out of range: none)
    bq: int
    band: torch.Tensor | None  # (L,) offsets when table[t] = t + offsets (a strided view serves the keys)


def plan_tiles(p: BlockPart, n: int, nq: int, device) -> TilePlan:
    """Query tiles for ``nq`` queries: the part's own tiles (tile t holds the queries at its slots).
    Cross-attention: tile t holds the queries whose position c(i) falls in its slots (padded to the
    most any tile holds), so it keeps the part's table, band views included."""
    table = p.table.to(device).long()
    t = table.shape[1]
    band = None
    if table.shape[0] == 1:
        off = table[0] - torch.arange(t, device=device)[:, None]
        if bool((off == off[0]).all()) and bool((off[0].diff() == 1).all()):
            band = off[0]
    if nq == n:
        return TilePlan(None if p.order is None else p.order.to(device), table, p.q_block, band)
    slot = p.inverse(n, device)[centres(nq, n, device)]
    order = torch.argsort(slot, stable=True)  # queries by slot (c is monotone: a stable sort keeps i in order)
    tile = slot[order] // p.q_block
    count = torch.bincount(tile, minlength=t)
    bq = max(1, int(count.max()))
    rank = torch.arange(nq, device=device) - (torch.cumsum(count, 0) - count)[tile]
    q_slots = torch.full((t * bq,), nq, dtype=torch.long, device=device)
    q_slots[tile * bq + rank] = order
    return TilePlan(q_slots, table, bq, band)


def tile_rows(x: torch.Tensor, slots, rows_total: int) -> torch.Tensor:
    """(B, h, N, ·) rows arranged by tile slot: a padded view, or one gather for a layout."""
    if slots is None:
        return torch.nn.functional.pad(x, (0, 0, 0, rows_total - x.shape[-2])) if rows_total > x.shape[-2] else x
    b, h, n, c = x.shape  # index_select on 3-D rows: several times faster than on 4-D or fancy indexing
    return x.reshape(b * h, n, c).index_select(1, slots.clamp(max=n - 1)).view(b, h, -1, c)


def dedupe_blocks(table: torch.Tensor, nkb: int) -> torch.Tensor:
    """Repeated key blocks in a tile's row marked as none (each key counts once)."""
    key = torch.where((table >= 0) & (table < nkb), table, nkb).sort(-1).values
    key[..., 1:][key[..., 1:] == key[..., :-1]] = nkb
    return key


class _Keys:
    """The keys (``transposed``: stored d × slots, so QKᵀ is a plain product) or values of query
    tiles, per (batch, head) row bh. A band table's tiles are strided views (tile t meets slots
    t·b + lo … + span: no copy; only the edge tiles read a small zero-padded copy); any other
    table's tiles are its key blocks, gathered whole."""

    def __init__(self, x: torch.Tensor, p: BlockPart, plan: TilePlan, n: int, transposed: bool):
        b, h, _, c = x.shape
        self.p, self.plan, self.n, self.bk, self.heads, self.tr = p, plan, n, p.k_block, h, transposed
        self.nkb = -(-p.slots(n) // self.bk)
        xl = tile_rows(x, p.order, self.nkb * self.bk).reshape(b * h, -1, c)
        t = plan.table.shape[1]
        self.span = plan.table.shape[-1] * self.bk
        if plan.band is None:
            self.table = dedupe_blocks(plan.table, self.nkb)
            self.x = xl.reshape(b * h, self.nkb, self.bk, c)
            self.segments = [(0, t, None, 0)]
            return
        xl = xl.transpose(1, 2).contiguous() if transposed else xl.contiguous()
        slots, lo, bk, span = self.nkb * self.bk, int(plan.band[0]) * self.bk, self.bk, self.span
        self.lo = lo
        first = min(t, -(-max(0, -lo) // bk))  # tiles before it reach below slot 0
        last = max(first, min(t, (slots - span - lo) // bk + 1))  # tiles from it on reach past the end
        self.segments = []
        if first > 0:
            self.segments.append((0, first, self._edge(xl, lo, (first - 1) * bk + lo + span), lo))
        if last > first:
            self.segments.append((first, last, xl, 0))
        if t > last:
            start = last * bk + lo
            self.segments.append((last, t, self._edge(xl, start, (t - 1) * bk + lo + span), start))

    def _edge(self, x, start: int, stop: int) -> torch.Tensor:
        """Slots [start, stop) of x, zero where they fall outside it (a small copy)."""
        dim = -1 if self.tr else -2
        size = x.shape[dim]
        part = x.narrow(dim, max(0, start), max(0, min(size, stop) - max(0, start)))
        pad = (max(0, -start), max(0, stop - size))
        pads = pad if self.tr else (0, 0) + pad
        return torch.nn.functional.pad(part, pads).contiguous()

    def blocks(self, s: int, e: int):
        """(key-block ids, their validity) of tiles s … e − 1: (hb, c, L)."""
        blocks = self.plan.table[:, s:e] if self.plan.band is not None else self.table[:, s:e]
        return blocks, (blocks >= 0) & (blocks < self.nkb)

    def positions(self, s: int, e: int) -> torch.Tensor:
        """(hb, c, S) key positions of tiles s … e − 1 (n: none)."""
        dev = self.plan.table.device
        if self.plan.band is not None:
            jslot = (torch.arange(s, e, device=dev) * self.bk + self.lo)[:, None] + torch.arange(self.span, device=dev)
            return self.p.positions(jslot[None], self.n)
        blocks, ok = self.blocks(s, e)
        jslot = blocks.clamp(0, self.nkb - 1)[..., None] * self.bk + torch.arange(self.bk, device=dev)
        return self.p.positions(torch.where(ok[..., None], jslot, -1).flatten(-2), self.n)

    def tiles(self, bh: int, s: int, e: int, segment) -> torch.Tensor:
        """Tiles s … e − 1 (inside ``segment``) for row bh: (c, d, S) keys when transposed, else (c, S, ·)."""
        _, _, src, base = segment
        if src is None:
            hh = bh % self.heads if self.table.shape[0] > 1 else 0
            x = self.x[bh][self.table[hh, s:e].clamp(0, self.nkb - 1)].reshape(e - s, self.span, -1)
            return x.transpose(1, 2) if self.tr else x
        x = src[bh]
        first = s * self.bk + self.lo - base
        if self.tr:  # (c, S) slots along the last dim of a (d, slots) matrix
            return x.as_strided((e - s, x.shape[0], self.span), (self.bk, x.shape[1], 1), x.storage_offset() + first)
        c = x.shape[-1]
        return x.as_strided((e - s, self.span, c), (self.bk * c, c, 1), x.storage_offset() + first * c)


def part_tiles(qs, k, v, p: BlockPart, pattern: BlockPattern, need_lse: bool = True):
    """One part on the tiles: (out, lse) of shape (B, h, N_q, d_v), (B, h, N_q) (lse None when not
    ``need_lse`` and nothing else needs it); q is pre-scaled. Loops over chunks of tiles and, inside,
    the (batch, head) rows: every product is a plain 3-D matmul on views."""
    b, h, nq, d = qs.shape
    n, dv, dev = k.shape[-2], v.shape[-1], qs.device
    plan = plan_tiles(p, n, nq, dev)
    t, bq = plan.table.shape[1], plan.bq
    qt = tile_rows(qs, plan.q_slots, t * bq).reshape(b * h, t, bq, d)
    keys, values = _Keys(k, p, plan, n, transposed=True), _Keys(v, p, plan, n, transposed=False)
    qpos = (plan.q_slots if plan.q_slots is not None else torch.arange(t * bq, device=dev)).view(t, bq)
    cpos = qpos if nq == n else torch.where(qpos < nq, centres(nq, n, dev)[qpos.clamp(max=nq - 1)], n)
    cols = p.columns.to(dev).long() if p.columns is not None and p.columns.numel() else None
    if cols is not None:
        kc, vc = _columns(k, cols).reshape(b * h, -1, d), _columns(v, cols).reshape(b * h, -1, dv)
        col_block = p.inverse(n, dev)[cols.clamp(max=n - 1)] // p.k_block  # (hc, S)
    width = keys.span + (cols.shape[-1] if cols is not None else 0)
    per_tile = bq * width
    step = max(1, TILE_ELEMENTS // 2 // max(1, per_tile))
    # a tile wider than the budget is split by rows (a block as long as N: an exact limit)
    rstep = bq if per_tile <= TILE_ELEMENTS else min(bq, max(32, TILE_ELEMENTS // max(1, width)))
    out = qs.new_empty(b * h, t, bq, dv)
    lse = qs.new_empty(b * h, t, bq) if need_lse else None
    for s, e, kseg, vseg in ((s, min(e0, s + step), ks, vs) for ks, vs in zip(keys.segments, values.segments)
                             for s0, e0 in [ks[:2]] for s in range(s0, e0, step)):
        j = keys.positions(s, e)
        blocks, ok_block = keys.blocks(s, e)
        for r0 in range(0, bq, rstep):
            r1 = min(bq, r0 + rstep)
            i = cpos[s:e, r0:r1]  # (c, rows) positions of the queries, n: padding
            keep = (j < n)[:, :, None, :]  # broadcast over rows until a row-dependent term needs them
            if p.allowed is not None:
                keep = keep & p.allowed(i[None, :, :, None], j[:, :, None, :])
            if pattern.causal:
                keep = keep & (j[:, :, None, :] <= i[None, :, :, None])
            if bool((i >= n).any()):
                keep = keep | (i >= n)[None, :, :, None]  # padding rows see every slot: finite, then dropped
            # the mask as an additive bias (0 / −inf) that the matmul adds as it writes (baddbmm)
            bias = None if bool(keep.all()) else torch.zeros(keep.shape, dtype=qs.dtype, device=dev).masked_fill_(
                ~keep, float("-inf"))
            if cols is not None:
                ckeep = _columns_keep(cols, col_block, blocks, ok_block, i, p, n, pattern.causal)
                if bool((i >= n).any()):
                    ckeep = ckeep | (i >= n)[None, :, :, None]
                cbias = torch.zeros(ckeep.shape, dtype=qs.dtype, device=dev).masked_fill_(~ckeep, float("-inf"))
                empty = ~(keep.any(-1) | ckeep.any(-1))
            else:
                empty = ~keep.any(-1)
            safe = need_lse or bool(empty.any())  # an empty row needs the guarded softmax
            for bh in range(b * h):
                hh = bh % h
                qb = qt[bh, s:e, r0:r1]
                qk = (qb, keys.tiles(bh, s, e, kseg))
                logits = torch.bmm(*qk) if bias is None else torch.baddbmm(bias[hh if bias.shape[0] > 1 else 0], *qk)
                vt = values.tiles(bh, s, e, vseg)
                if cols is not None:  # the columns join the tile's logits: one softmax over both
                    logits = torch.cat([logits, _columns_logits(qb, kc[bh], cbias[hh if cbias.shape[0] > 1 else 0])], -1)
                    vt = (vt, vc[bh])
                if not safe:  # written in place: no copy of the output
                    _probs_times(torch.softmax(logits, -1), vt, out=out[bh, s:e] if rstep == bq else None,
                                 into=out[bh, s:e, r0:r1])
                    continue
                o, l = softmax_out(logits, None, vt)
                out[bh, s:e, r0:r1] = o
                lse[bh, s:e, r0:r1] = l
    out = out.view(b, h, t * bq, dv)
    lse = lse.view(b, h, t * bq) if lse is not None else None
    if plan.q_slots is None:
        return out[:, :, :nq], (lse[:, :, :nq] if lse is not None else None)
    real = torch.nonzero(plan.q_slots < nq).flatten()  # tile rows holding a query
    row_of = torch.empty(nq, dtype=torch.long, device=dev)
    row_of[plan.q_slots[real]] = real  # the tile row of each query: a gather, not a scatter
    full_o = out.reshape(b * h, -1, dv).index_select(1, row_of).view(b, h, nq, dv)
    return full_o, (lse.reshape(b * h, -1).index_select(1, row_of).view(b, h, nq) if lse is not None else None)


def _columns(x: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(B, h, S, ·) the column keys (shared, or per head when cols is (h, S))."""
    at = cols.clamp(max=x.shape[-2] - 1)
    if at.shape[0] == 1:
        return x[:, :, at[0]]
    return x[:, torch.arange(x.shape[1], device=x.device)[:, None], at]


def _columns_keep(cols, col_block, blocks, ok_block, i, p: BlockPart, n: int, causal: bool) -> torch.Tensor:
    """(·, c, rows, S) which shared columns a chunk of tile rows meets: not the keys the tiles already
    hold (a column in a tile's table block that ``allowed`` keeps), so the two parts stay disjoint."""
    j = cols[:, None, None, :]  # (hc, 1, 1, S)
    keep = (j < n) & (i < n)[None, :, :, None]
    if causal:
        keep = keep & (j <= i[None, :, :, None])
    in_table = ((col_block[:, None, :, None] == blocks[:, :, None, :]) & ok_block[:, :, None, :]).any(-1)  # (·, c, S)
    dup = in_table[:, :, None, :]
    if p.allowed is not None:
        dup = dup & p.allowed(i[None, :, :, None], j)
    return keep & ~dup


def _columns_logits(qt, kc, bias):
    """The shared columns' logits for a chunk of tile rows, (c, rows, S), in one matmul, masked by ``bias``."""
    c, r, d = qt.shape
    return torch.mm(qt.reshape(c * r, d), kc.transpose(0, 1)).view(c, r, -1).add_(bias)


def _probs_times(p, vt, out=None, into=None):
    """p·v for a tile's values, or for (tile values, column values) when the columns joined the tile;
    into ``out`` (a contiguous buffer the product is written to) or copied ``into`` a view. Under
    autograd (out= does not record a graph) the product is always copied."""
    if out is not None and torch.is_grad_enabled() and (p.requires_grad or any(
            x.requires_grad for x in (vt if isinstance(vt, tuple) else (vt,)))):
        into, out = out, None
    if isinstance(vt, tuple):
        v_tile, v_cols = vt
        span = v_tile.shape[-2]
        c, r, _ = p.shape
        o = torch.bmm(p[..., :span], v_tile, out=out)
        o.add_(torch.mm(p[..., span:].reshape(c * r, -1), v_cols).view(c, r, -1))
    else:
        o = torch.bmm(p, vt, out=out)
    if into is not None and out is None:
        into.copy_(o)
    return o


def softmax_out(logits: torch.Tensor, keep: torch.Tensor | None, vt: torch.Tensor):
    """softmax(logits)·v over ``keep`` with its log-sum-exp, in place on ``logits`` (normalised after
    the product, one pass fewer). A row with no key: out 0, lse −inf. The max is detached (a
    softmax does not depend on it), so the graph stays differentiable."""
    if keep is not None:
        logits.masked_fill_(~keep, float("-inf"))
    m = logits.detach().amax(-1, keepdim=True).clamp_(min=torch.finfo(logits.dtype).min)
    p = logits.sub_(m).exp_()
    s = p.sum(-1, keepdim=True)
    o = (_probs_times(p, vt) if p.dim() == 3 or isinstance(vt, tuple) else torch.matmul(p, vt))
    o = o / s.clamp_min(torch.finfo(s.dtype).tiny)
    return o, (s.log() + m).squeeze(-1)


def dense_rows(q, k, v, scale: float, causal: bool, rows: torch.Tensor) -> torch.Tensor:
    """Exact attention output of the query indices ``rows`` over all keys (j ≤ i when causal):
    global tokens. O(G·N·d), logits in chunks."""
    rows = rows.to(q.device).long()
    bsz, h, n, _ = k.shape
    out = q.new_empty(bsz, h, rows.numel(), v.shape[-1])
    step = max(1, TILE_ELEMENTS * 8 // max(1, bsz * h * n))
    cols = torch.arange(n, device=q.device)
    for s in range(0, rows.numel(), step):
        r = rows[s:s + step]
        logits = torch.matmul(q[:, :, r], k.transpose(-1, -2)) * scale  # (B, H, g, N)
        keep = (cols[None, :] <= r[:, None]) if causal else None
        out[:, :, s:s + step] = softmax_out(logits, keep, v)[0]
    return out
