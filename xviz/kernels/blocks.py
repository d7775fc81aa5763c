"""Gather-free block kernels: sparse patterns computed from contiguous blocks with batched matmuls
instead of a per-row gather (which costs O(N·K·d) memory traffic and dominates on a CPU).

Each returns a *partial* result (out, lse): out normalised over its own keys, lse = log Σ exp(logits)
over them (−inf where a row has none), so disjoint parts merge exactly with ``dense.merge``. The
caller keeps the parts disjoint (each key of a row in exactly one part). ``sparse.sparse_attention
(compute_out=False)`` on the same pattern's key lists gives the matrix and mask (``lazy_views``);
the tests hold the two together.
"""
from __future__ import annotations

import torch

from ..core.result import Output
from .dense import masked_softmax, merge  # noqa: F401  (merge: the partner of every *_part below)
from .sparse import CHUNK_ELEMENTS


def _pass_elements(n: int) -> int:
    """Logit elements one pass may hold: proportional to N (64·N, a d-wide copy of the input), so
    peak memory stays O(N) even where the total work is O(N²/l); at most CHUNK_ELEMENTS."""
    return min(CHUNK_ELEMENTS, max(1 << 16, 64 * n))


def _pad_rows(x: torch.Tensor, total: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, 0, 0, total - x.shape[-2])) if total > x.shape[-2] else x


def _dedupe_blocks(blocks: torch.Tensor, ok: torch.Tensor, nb: int) -> tuple[torch.Tensor, torch.Tensor]:
    key = torch.where(ok, blocks, torch.full_like(blocks, nb))
    key, _ = key.sort(dim=-1)
    repeat = torch.zeros_like(ok)
    repeat[..., 1:] = key[..., 1:] == key[..., :-1]
    return key.clamp(max=nb - 1), (key < nb) & ~repeat


def block_sparse_part(q, k, v, scale: float, causal: bool, block: int, blocks: torch.Tensor,
                      blocks_valid: torch.Tensor | None = None, allowed=None):
    """Query block c (positions c·b … c·b + b − 1) attends the key blocks ``blocks[h, c]``
    ((1 or H, nb, L) block ids; out-of-range or ``blocks_valid`` False = none; repeats count once),
    thinned by ``allowed(i, j)`` (i: (1, c, b, 1), j: (1 or H, c, 1, L·b) positions). Work
    O(N·L·b·d) in matmuls; the gathered key blocks are O(N·L·d) per pass. Returns (out, lse)."""
    bsz, h, n, d = q.shape
    dv = v.shape[-1]
    nb = -(-n // block)
    total = nb * block
    qb = _pad_rows(q, total).view(bsz, h, nb, block, d)
    kb = _pad_rows(k, total).view(bsz, h, nb, block, d)
    vb = _pad_rows(v, total).view(bsz, h, nb, block, dv)
    blocks = blocks.to(q.device).long()
    ok = (blocks >= 0) & (blocks < nb)
    if blocks_valid is not None:
        ok = ok & blocks_valid.to(q.device)
    blocks, ok = _dedupe_blocks(blocks, ok, nb)
    hb, _, width = blocks.shape
    hi = torch.arange(h, device=q.device)[:, None, None] if hb > 1 else None
    out = q.new_empty(bsz, h, nb, block, dv)
    lse = q.new_empty(bsz, h, nb, block)
    span = width * block
    per_block = bsz * h * span * (2 * block + d + dv)  # logits, probs, keys, values
    budget = _pass_elements(n)
    step = max(1, budget // max(1, per_block))
    # a single huge block (block ~ N) is split by query rows, so memory stays bounded
    row_step = block if per_block <= budget else max(1, budget // max(1, 2 * bsz * h * span))
    inner = torch.arange(block, device=q.device)
    for s in range(0, nb, step):
        e = min(nb, s + step)
        idx = blocks[:, s:e]  # (hb, c, L)
        if hb > 1:
            kg, vg = kb[:, hi, idx], vb[:, hi, idx]  # (B, H, c, L, b, ·)
        else:
            kg, vg = kb[:, :, idx[0]], vb[:, :, idx[0]]
        kt = kg.reshape(bsz, h, e - s, span, d).transpose(-1, -2)
        vg = vg.reshape(bsz, h, e - s, span, dv)
        j = (idx[..., None] * block + inner).view(hb, e - s, 1, span)
        key_ok = ok[:, s:e].repeat_interleave(block, dim=-1).view(hb, e - s, 1, span) & (j < n)
        for r0 in range(0, block, row_step):
            r1 = min(block, r0 + row_step)
            logits = torch.matmul(qb[:, :, s:e, r0:r1], kt) * scale  # (B, H, c, rows, L·b)
            i = (torch.arange(s, e, device=q.device)[:, None] * block + inner[r0:r1]).view(1, e - s, r1 - r0, 1)
            keep = key_ok
            if causal:
                keep = keep & (j <= i)
            if allowed is not None:
                keep = keep & allowed(i, j)
            probs, l = masked_softmax(logits, keep)
            out[:, :, s:e, r0:r1] = torch.matmul(probs, vg)
            lse[:, :, s:e, r0:r1] = l
    return out.view(bsz, h, total, dv)[:, :, :n], lse.view(bsz, h, total)[:, :, :n]


def residue_part(q, k, v, scale: float, causal: bool, stride: int, exclude_self: bool = False):
    """Keys j ≡ i (mod stride): the positions r, r + l, r + 2l, … form a group, attended densely
    within itself (j ≤ i when causal; the diagonal dropped when ``exclude_self``). Work
    O(N·(N/l)·d) in matmuls, logits held in chunks. Returns (out, lse)."""
    bsz, h, n, d = q.shape
    dv = v.shape[-1]
    rows = -(-n // stride)  # group length
    total = rows * stride

    def groups(x):  # (B, H, N, ·) -> (B, H, l, rows, ·): group r holds positions r + l·t
        return _pad_rows(x, total).view(bsz, h, rows, stride, x.shape[-1]).transpose(2, 3)

    qg, kg, vg = groups(q), groups(k), groups(v)
    out = q.new_empty(bsz, h, stride, rows, dv)
    lse = q.new_empty(bsz, h, stride, rows)
    per_group = bsz * h * rows * rows
    budget = _pass_elements(n)
    g_step = max(1, budget // max(1, per_group))
    r_step = rows if per_group <= budget else max(1, budget // max(1, bsz * h * rows))
    t = torch.arange(rows, device=q.device)
    for g0 in range(0, stride, g_step):
        g1 = min(stride, g0 + g_step)
        pos_j = (t[None, :] * stride + torch.arange(g0, g1, device=q.device)[:, None])[:, None, :]  # (g, 1, rows)
        kt = kg[:, :, g0:g1].transpose(-1, -2)
        for r0 in range(0, rows, r_step):
            r1 = min(rows, r0 + r_step)
            logits = torch.matmul(qg[:, :, g0:g1, r0:r1], kt) * scale  # (B, H, g, r, rows)
            ti, tj = t[r0:r1, None], t[None, :]
            keep = (pos_j < n).expand(-1, r1 - r0, -1)
            if causal:
                keep = keep & (tj <= ti)
            if exclude_self:
                keep = keep & (tj != ti)
            probs, l = masked_softmax(logits, keep)
            out[:, :, g0:g1, r0:r1] = torch.matmul(probs, vg[:, :, g0:g1])
            lse[:, :, g0:g1, r0:r1] = l
    out = out.transpose(2, 3).reshape(bsz, h, total, dv)[:, :, :n]
    lse = lse.transpose(2, 3).reshape(bsz, h, total)[:, :, :n]
    return out, lse


def columns_part(q, k, v, scale: float, causal: bool, cols: torch.Tensor, exclude=None):
    """Every query attends the key columns ``cols`` ((1 or H, S), ascending; values ≥ N are
    ignored), minus those where ``exclude(i, j)`` is True (i: (c, 1), j: (1 or H, 1, S)) and,
    when causal, j > i. Work O(N·S·d) in matmuls. Returns (out, lse)."""
    bsz, h, n, d = q.shape
    dv = v.shape[-1]
    cols = cols.to(q.device).long()
    hb, width = cols.shape
    at = cols.clamp(0, n - 1)
    if hb > 1:
        hi = torch.arange(h, device=q.device)[:, None]
        ks, vs = k[:, hi, at], v[:, hi, at]  # (B, H, S, ·)
    else:
        ks, vs = k[:, :, at[0]], v[:, :, at[0]]
    out = q.new_empty(bsz, h, n, dv)
    lse = q.new_empty(bsz, h, n)
    step = max(1, _pass_elements(n) // max(1, bsz * h * max(width, 1)))
    for s in range(0, n, step):
        e = min(n, s + step)
        upto = width
        if causal:  # columns after the chunk's last row can never be attended in it
            upto = int((cols <= e - 1).sum(-1).max())
        if upto == 0:
            out[:, :, s:e] = 0
            lse[:, :, s:e] = float("-inf")
            continue
        i = torch.arange(s, e, device=q.device)[:, None]
        j = cols[:, None, :upto]  # (hb, 1, S')
        logits = torch.matmul(q[:, :, s:e], ks[:, :, :upto].transpose(-1, -2)) * scale  # (B, H, c, S')
        keep = (j >= 0) & (j < n)
        if causal:
            keep = keep & (j <= i)
        if exclude is not None:
            keep = keep & ~exclude(i, j)
        probs, l = masked_softmax(logits, keep)
        out[:, :, s:e] = torch.matmul(probs, vs[:, :, :upto])
        lse[:, :, s:e] = l
    return out, lse


def dense_rows(q, k, v, scale: float, causal: bool, rows: torch.Tensor) -> torch.Tensor:
    """Exact attention output of the query positions ``rows`` over all keys (j ≤ i when causal):
    global tokens. O(G·N·d)."""
    rows = rows.to(q.device).long()
    bsz, h, n, _ = k.shape
    out = q.new_empty(bsz, h, rows.numel(), v.shape[-1])
    step = max(1, _pass_elements(n) // max(1, bsz * h * n))  # G·N logits in chunks
    cols = torch.arange(n, device=q.device)
    for s in range(0, rows.numel(), step):
        r = rows[s:s + step]
        logits = torch.matmul(q[:, :, r], k.transpose(-1, -2)) * scale  # (B, H, g, N)
        if causal:
            logits = logits.masked_fill(cols[None, :] > r[:, None], float("-inf"))
        out[:, :, s:s + step] = torch.matmul(torch.softmax(logits, dim=-1), v)
    return out


def lazy_views(out: torch.Tensor, make_pattern_output, extra: dict | None = None, names=("mask", "keys_per_row")):
    """An Output whose ``out`` came from a gather-free kernel, with ``matrix`` and the artifacts in
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
