"""FlexAttention for the block patterns and the positional biases: the CUDA engine.

``torch.nn.attention.flex_attention`` takes a ``BlockMask`` (which key blocks each query block
visits) and a ``mask_mod(b, h, q_idx, kv_idx)`` (which keys count inside them), and fuses the
softmax with a ``score_mod`` (a bias on the logits). A ``block_pattern.BlockPart`` is exactly that: its
block table becomes the BlockMask (``BlockMask.from_kv_blocks`` at 128 × 128, the kernel's tile, so
a finer table is OR-pooled) and its predicate, table membership and shared columns the mask_mod.
Queries and keys are laid out as the tiles lay them out (``tiles.plan_tiles``: the part's layout,
cross-attention's grouping by c(i)), so a strided or residue pattern stays block-sparse.

Used on CUDA (compiled once per shape); on the CPU the tiles are faster (see docs/bench/cpu: the
compiled CPU kernel reached 7.6 % of the matmul peak on a 129-key window at N = 4,096 after a 24 s
compile), so there it runs only when asked (``XVIZ_BLOCK_ENGINE=flex``), and uncompiled — the eager
reference, which evaluates the mask_mod densely — in the tests, which hold it to the gather
reference. ``XVIZ_BLOCK_ENGINE=tiles`` forces the tiles everywhere.
"""
from __future__ import annotations

import os
from functools import lru_cache

import torch

from .block_pattern import centres
from .dense import merge, work_dtype
from .tiles import dedupe_blocks, dense_rows, part_tiles, plan_tiles, tile_rows

BLOCK = 128  # FlexAttention's sparse block (query and key) on CUDA
MEMBER_LIMIT = 1 << 26  # fine (tile, key block) membership booleans a part may hold; finer tables use tiles


def engine() -> str:
    return os.environ.get("XVIZ_BLOCK_ENGINE", "auto")


@lru_cache(maxsize=1)
def available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def wanted(q: torch.Tensor) -> bool:
    """FlexAttention runs the block patterns on CUDA, or anywhere when XVIZ_BLOCK_ENGINE=flex."""
    mode = engine()
    if mode == "tiles" or not available():
        return False
    return mode == "flex" or q.is_cuda


@lru_cache(maxsize=1)
def _compiled():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex(q, k, v, *, score_mod=None, block_mask=None, scale=None):
    """flex_attention with its log-sum-exp: compiled on CUDA, the eager reference elsewhere."""
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    fn = _compiled() if q.is_cuda else flex_attention
    out, aux = fn(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, return_aux=AuxRequest(lse=True))
    return out, aux.lse


def execute(q, k, v, scale: float, pattern) -> torch.Tensor:
    """``blocks.execute`` on FlexAttention; parts it cannot express compactly fall back to tiles."""
    wd = work_dtype(q.dtype)  # logits at ≥ float32 (the CUDA kernel accumulates in float32 for half inputs)
    fd = q.dtype if q.is_cuda else wd
    b, h, nq, _ = q.shape
    out = q.new_empty(b, h, nq, v.shape[-1], dtype=wd)
    groups: dict[tuple, list] = {}
    for p in pattern.parts:
        groups.setdefault(tuple(p.heads.tolist()) if p.heads is not None else (), []).append(p)
    for heads, parts in groups.items():
        sel = list(heads) if heads else slice(None)
        qh, kh, vh = q[:, sel], k[:, sel], v[:, sel]
        res = []
        for p in parts:
            r = part_flex((qh * scale).to(fd), kh.to(fd), vh.to(fd), p, pattern)
            res.append(r if r is not None else part_tiles((qh.to(wd) * scale), kh.to(wd), vh.to(wd), p, pattern))
        out[:, sel] = merge([(o.to(wd), l.to(wd)) for o, l in res])
    qs, k_, v_ = q.to(wd) * scale, k.to(wd), v.to(wd)
    full = pattern.query_full_rows(nq, q.device)
    if full is not None:
        out[:, :, full] = dense_rows(qs, k_, v_, 1.0, pattern.causal, full)
    return out.to(v.dtype)


def _pool(member: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """OR-pool ``member`` along ``axis`` from blocks of ``size`` slots to blocks of BLOCK slots."""
    m = member.movedim(axis, -1)
    count = m.shape[-1]
    slots = count * size
    coarse = -(-slots // BLOCK)
    start = torch.arange(coarse, device=m.device) * BLOCK // size
    stop = ((torch.arange(coarse, device=m.device) + 1) * BLOCK - 1).clamp(max=slots - 1) // size
    out = torch.zeros(*m.shape[:-1], coarse, dtype=torch.bool, device=m.device)
    for off in range(int((stop - start).max()) + 1):
        at = (start + off).clamp(max=count - 1)
        out |= m[..., at] & (start + off <= stop)
    return out.movedim(-1, axis)


def part_flex(qs, k, v, p, pattern):
    """One part on FlexAttention: (out, lse) like ``tiles.part_tiles``, or None when its fine
    membership table would be too large (one-position blocks: random keys)."""
    prep = prepare(qs, k, v, p, pattern)
    if prep is None:
        return None
    bm, qp, kl, vl, q_slots = prep
    b, h, nq, _ = qs.shape
    out, lse = _flex(qp, kl, vl, block_mask=bm, scale=1.0)
    if q_slots is None:
        return out[:, :, :nq], lse[:, :, :nq]
    real = q_slots < nq
    full_o = qs.new_zeros(b, h, nq, v.shape[-1])
    full_l = qs.new_full((b, h, nq), float("-inf"))
    full_o[:, :, q_slots[real]] = out[:, :, real].to(qs.dtype)
    full_l[:, :, q_slots[real]] = lse[:, :, real].to(qs.dtype)
    return full_o, full_l


def prepare(qs, k, v, p, pattern):
    """The BlockMask (with its mask_mod) and the laid-out q, k, v for one part:
    (block_mask, q rows, k slots, v slots, q_slots), or None (see ``part_flex``)."""
    from torch.nn.attention.flex_attention import BlockMask


    b, h, nq, d = qs.shape
    n, dev = k.shape[-2], qs.device
    plan = plan_tiles(p, n, nq, dev)
    t, bq, bk = plan.table.shape[1], plan.bq, p.k_block
    nkb = -(-p.slots(n) // bk)
    hb = plan.table.shape[0]
    if hb * t * nkb > MEMBER_LIMIT:
        return None
    table = dedupe_blocks(plan.table, nkb)
    member = torch.zeros(hb, t, nkb + 1, dtype=torch.bool, device=dev)
    member.scatter_(-1, table, True)
    member = member[..., :nkb]
    rows = t * bq
    qpos = plan.q_slots if plan.q_slots is not None else torch.arange(rows, device=dev)
    cpos = qpos if nq == n else torch.where(qpos < nq, centres(nq, n, dev)[qpos.clamp(max=nq - 1)], n)
    qp = tile_rows(qs, plan.q_slots, rows)
    nslots = -(-nkb * bk // BLOCK) * BLOCK  # the columns (if any) start at a BlockMask block
    kl, vl = tile_rows(k, p.order, nslots), tile_rows(v, p.order, nslots)
    if p.order is not None and nslots > kl.shape[-2]:
        kl, vl = (torch.nn.functional.pad(x, (0, 0, 0, nslots - x.shape[-2])) for x in (kl, vl))
    kpos = p.positions(torch.arange(nslots, device=dev), n)
    cols = p.columns.to(dev).long() if p.columns is not None and p.columns.numel() else None
    coarse = _pool(_pool(member, bq, 1), bk, 2)  # (hb, ⌈rows/128⌉, ⌈slots/128⌉)
    coarse = torch.nn.functional.pad(coarse, (0, nslots // BLOCK - coarse.shape[-1]))
    col_slot = None
    if cols is not None:  # the columns join as extra key slots after the layout's
        hc = cols.shape[0]
        at = cols.clamp(max=n - 1)
        ks = k[:, :, at[0]] if hc == 1 else k[:, torch.arange(h, device=dev)[:, None], at]
        vs = v[:, :, at[0]] if hc == 1 else v[:, torch.arange(h, device=dev)[:, None], at]
        kl, vl = torch.cat([kl, ks], -2), torch.cat([vl, vs], -2)
        coarse = torch.cat([coarse, coarse.new_ones(*coarse.shape[:2], -(-cols.shape[-1] // BLOCK))], -1)
        col_slot = p.inverse(n, dev)[at]  # (hc, S)
    mask_mod = _mask_mod(p, member, bq, bk, cpos, kpos, n, nslots, cols, col_slot, pattern.causal, hb > 1)
    qlen, klen = rows, kl.shape[-2]
    num = coarse.sum(-1).to(torch.int32)
    idx = torch.argsort((~coarse).to(torch.int8), dim=-1, stable=True).to(torch.int32)  # visited blocks first
    bm = BlockMask.from_kv_blocks(num[None], idx[None], BLOCK_SIZE=BLOCK, mask_mod=mask_mod, seq_lengths=(qlen, klen))
    return bm, qp, kl, vl, plan.q_slots


def _mask_mod(p, member, bq, bk, cpos, kpos, n, nslots, cols, col_slot, causal, per_head):
    """mask_mod(b, h, q, kv): the part's keys for plan row q and key slot kv (layout slots, then the
    shared columns), exactly the tiles' keep mask."""
    allowed = p.allowed

    def in_table(hh, q, kv):
        m = member[hh if per_head else 0]
        return m[q // bq, (kv // bk).clamp(max=m.shape[-1] - 1)]

    def mod(b, hh, q, kv):
        i = cpos[q]
        is_col = kv >= nslots
        j_tab = kpos[kv.clamp(max=nslots - 1)]
        ok = (~is_col) & (j_tab < n) & in_table(hh, q, kv)
        if allowed is not None:
            ok = ok & allowed(i, j_tab)
        if cols is not None:
            c = (kv - nslots).clamp(0, cols.shape[-1] - 1)
            hc = hh if cols.shape[0] > 1 else 0
            j_col = cols[hc, c]
            dup = in_table(hh, q, col_slot[hc, c])
            if allowed is not None:
                dup = dup & allowed(i, j_col)
            ok = ok | (is_col & (j_col < n) & ~dup & (kv - nslots < cols.shape[-1]))
            j = torch.where(is_col, j_col, j_tab)
        else:
            j = j_tab
        ok = ok & (i < n)
        if causal:
            ok = ok & (j <= i)
        return ok

    return mod


# ------------------------------------------------------------------------------ biases (score_mod)

def biased(q, k, v, scale: float, causal: bool, bias_mod) -> torch.Tensor:
    """softmax(QKᵀ·scale + B)V with B given as a score_mod term ``bias_mod(h, i, j)``, causal through
    a block-sparse causal BlockMask (the future blocks are skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask

    nq, nk = q.shape[-2], k.shape[-2]

    def score_mod(score, b, h, i, j):
        return score + bias_mod(h, i, j)

    bm = None
    if causal:
        bm = create_block_mask(lambda b, h, i, j: j <= i, None, None, nq, nk, device=q.device)
    return _flex(q, k, v, score_mod=score_mod, block_mask=bm, scale=scale)[0]


def toeplitz_attention(q, k, v, scale: float, causal: bool, bias: torch.Tensor, chunks: int = 8) -> torch.Tensor:
    """softmax(QKᵀ·scale + B)V for a relative-position bias B_ij = bias[h, i − j + N_k − 1]
    (``bias``: (1 or H, N_q + N_k − 1); ALiBi, Gaussian priors, relative positions), −inf for
    j > i when causal. One fused call, no N×N tensor:

    * CUDA: FlexAttention with the bias as a score_mod (causal: a block-sparse causal BlockMask);
    * elsewhere: SDPA with a float ``attn_mask`` that is a zero-copy view. With the keys in reverse
      order (j' = N_k − 1 − j) the bias is a Hankel matrix, B[i, j'] = u[i + j'], i.e. the strided
      view (row stride 1, column stride 1) of one vector per head. Causal rows run in ``chunks``
      row blocks, each against the keys up to its last row (≈ 1.1× the causal work, not 2×).
    """
    b, h, nq, _ = q.shape
    nk = k.shape[-2]
    if causal:
        bias = bias.clone()
        bias[..., : nk - 1] = float("-inf")  # i − j < 0
    if q.is_cuda and available() and engine() != "tiles":
        u = bias.to(torch.float64 if q.dtype == torch.float64 else torch.float32)  # scores are ≥ float32
        per_head = u.shape[0] > 1

        def bias_mod(hh, i, j):
            return u[hh if per_head else 0, i - j + nk - 1]

        return biased(q, k, v, scale, causal, bias_mod)
    wd = work_dtype(q.dtype)
    q_, kf, vf = q.to(wd), k.to(wd).flip(-2), v.to(wd).flip(-2)
    u = bias.to(wd).contiguous()
    hs = u.shape[0]
    out = q_.new_empty(b, h, nq, v.shape[-1])
    step = -(-nq // chunks) if causal else nq
    for s in range(0, nq, step):
        e = min(nq, s + step)
        keys = min(nk, e) if causal else nk  # causal: keys 0 … e − 1 are the last e reversed keys
        # B[i, j'] for rows s … e − 1 and reversed keys nk − keys … nk − 1: u[i + j'] from offset s + nk − keys
        mask = u.as_strided((1, hs, e - s, keys), (0, u.stride(0) if hs > 1 else 0, 1, 1),
                            storage_offset=u.storage_offset() + s + nk - keys)
        out[:, :, s:e] = torch.nn.functional.scaled_dot_product_attention(
            q_[:, :, s:e], kf[:, :, nk - keys:], vf[:, :, nk - keys:], attn_mask=mask, scale=scale)
    return out.to(v.dtype)


def fused_lse(q, k, v, scale: float, allowed=None, chunk_rows: int = 1024):
    """(out, lse) of softmax(QKᵀ·scale) over the keys ``allowed(i, j)`` keeps (index grids; None:
    all), from one fused kernel: FlexAttention on CUDA, PyTorch's CPU flash kernel (which returns
    the log-sum-exp) elsewhere, in row chunks for the mask. A row with no key: out 0, lse −inf.
    Logits at ≥ float32."""
    nq, nk = q.shape[-2], k.shape[-2]
    d, dv = q.shape[-1], v.shape[-1]
    width = max(d, dv)  # the fused kernels want one head size: zero columns change no logit
    cuda = q.is_cuda and available() and engine() != "tiles"
    wd = q.dtype if cuda else work_dtype(q.dtype)
    pad = lambda x: torch.nn.functional.pad(x.to(wd), (0, width - x.shape[-1]))  # noqa: E731
    qp, kp, vp = pad(q), pad(k), pad(v)
    if cuda:
        from torch.nn.attention.flex_attention import create_block_mask

        bm = None if allowed is None else create_block_mask(lambda b, h, i, j: allowed(i, j), None, None, nq, nk,
                                                            device=q.device)
        out, lse = _flex(qp, kp, vp, block_mask=bm, scale=scale)
        return out[..., :dv], lse
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    outs, lses = [], []
    cols = torch.arange(nk, device=q.device)
    for s in range(0, nq, chunk_rows if allowed is not None else nq):
        e = min(nq, s + chunk_rows) if allowed is not None else nq
        mask, empty = None, torch.zeros(e - s, dtype=torch.bool, device=q.device)
        if allowed is not None:
            keep = allowed(torch.arange(s, e, device=q.device)[:, None], cols[None, :])
            mask = torch.zeros(keep.shape, dtype=wd, device=q.device).masked_fill_(~keep, float("-inf"))[None, None]
            empty = ~keep.any(-1)  # the kernel leaves such rows at 0 with lse 0
        o, l = op(qp[:, :, s:e], kp, vp, attn_mask=mask, scale=scale)
        outs.append(torch.where(empty[..., None], 0.0, o[..., :dv]))
        lses.append(torch.where(empty, float("-inf"), l))
    return torch.cat(outs, -2), torch.cat(lses, -1)
