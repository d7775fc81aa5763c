"""Reformer LSH attention (Kitaev et al. 2020): hash, sort, chunk, attend inside the bucket.

What the paper does, and what we do:

- **Shared QK.** Keys are the queries, unit-normalised: logits are q_i · q̂_j · scale. The ``k``
  input is ignored (``shared_qk``: the output does not depend on k at all).
- **Hash.** Per round, a random rotation R (d × buckets/2, Gaussian, drawn from the seed; one per
  head and round, shared across the batch) and h(x) = argmax([xR; −xR]) (angular LSH, §2).
  ``buckets`` is 1 (everything collides) or even. The paper's R is resampled per step; here it is
  fixed by the seed.
- **Sort and chunk.** Tokens are stable-sorted by (bucket, position); the sorted order is cut into
  chunks of ``chunk`` = m slots (padded with empty slots when m does not divide N, so any N works);
  each query attends the keys in its own chunk and the previous one (wrapping around, as Reformer),
  restricted to its own bucket.
- **Rounds.** With several rounds a query attends the union of its rounds' key sets, one softmax
  over the union with each key counted once — the paper's multi-round attention (Eq. 6–7). The
  compute path gets it with the paper's duplicate-count correction (below); the display path
  concatenates the rounds' key lists and ``xviz.sparse`` removes duplicates, the same set.
- **No attention to self** unless a token has no other key (the paper's rule for shared QK, where
  q·q̂ would dominate).
- **Causal** masks j > i. The hashing, sort and chunking see the whole sequence (as in the paper's
  language model), so the *pattern* depends on future tokens while the output is gradient-causal:
  ∂out_i/∂x_j = 0 for j > i, because bucket ids are piecewise constant.

Computation: as the paper's implementation, blocked — per round the sorted queries form (N/m, m)
blocks that meet (N/m, 2m) key blocks in one batched matmul; rounds are merged through their
log-normalisers with the duplicate-count correction, which gives the union softmax exactly. No N×N
tensor and no per-query gather. The same pattern written as per-query key lists (``xviz.sparse``)
builds the matrix and mask on request; the tests check both agree.

Artifacts: ``buckets`` (B, H, rounds, N), ``sort_order`` (B, H, rounds, N: position at each sorted
slot), ``mask`` (lazy, dense), ``keys_per_row`` (B, H, N). Cost: O(rounds·N·(m·d + log N)).
``lsh_buckets(x, rotations)`` is the pure hash, for the app's LSH page.
"""
import math

import torch

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..kernels.lazy import lazy_views
from ..kernels.clustering import flat_rows, row_base, work_dtype
from ..kernels.costs import sparse_cost
from ..kernels.tiles import softmax_out
from ..kernels.dense import unit
from ..kernels.hashing import lsh_buckets
from ..kernels.sparse import CHUNK_ELEMENTS, KEYS_PER_ROW, MASK, sparse_attention

__all__ = ["lsh_buckets", "lsh_attention", "reformer", "effective_buckets", "reformer_rotations"]

_SALT = 101


def effective_buckets(buckets: int) -> int:
    """An odd bucket count is only accepted when it is N (the default clamped at a tiny odd N); it then
    uses N − 1 buckets (see ``_buckets_rule``)."""
    return buckets if buckets == 1 or buckets % 2 == 0 else buckets - 1


def reformer_rotations(ctx, heads: int, rounds: int, d: int, buckets: int, like: torch.Tensor) -> torch.Tensor:
    """The random rotations a run uses: (H, rounds, d, buckets/2) from ``ctx``'s seed."""
    return ctx.randn(heads, rounds, d, effective_buckets(buckets) // 2, like=like, salt=_SALT)


def lsh_attention(q, qn, v, scale: float, causal: bool, bkt, order, inv, chunk: int):
    """The blocked Reformer computation. Per round: gather the sorted queries as (chunks, m) and each
    chunk's keys (own + previous chunk) as (chunks, 2m); one batched matmul; same bucket only, no self.
    Rounds are merged as in the paper (Eq. 6–7): each round's logits are lowered by log c_ij, c_ij the
    number of rounds whose list holds key j for query i, and the rounds' outputs are combined by their
    log-normalisers — exactly the softmax over the union. A query with no other key attends itself.
    Returns out (B, H, N, dv) and the number of distinct keys each query attended (B, H, N) int32."""
    b, h, n, d = q.shape
    dv = v.shape[-1]
    rounds = bkt.shape[2]
    m = chunk
    nc = math.ceil(n / m)
    span = m if nc == 1 else 2 * m
    base = row_base(b, h, n, q.device)[..., None, None]
    cdt = torch.promote_types(q.dtype, torch.float32)  # logits and key counts at float32 for half inputs
    qf, kf, vf = flat_rows(q).to(cdt), flat_rows(qn).to(cdt), flat_rows(v).to(cdt)
    step = max(1, CHUNK_ELEMENTS // max(1, b * h * m * span * max(rounds, 2)))  # chunks per pass

    bkt32 = bkt.to(torch.int32)  # (B, H, R, N) bucket of each position per round
    # Round r2 lists key j for query i iff same bucket and j's chunk is i's or the one before (mod nc):
    # with code = bucket·nc + chunk that is code_j ∈ {own_i, prev_i}. (Fits int32: buckets·nc ≤ 2·N.)
    chunk = torch.div(inv, m, rounding_mode="floor")
    own = (bkt * nc + chunk).to(torch.int32)  # (B, H, R, N)
    prev = (bkt * nc + (chunk - 1) % nc).to(torch.int32)

    def at(x, pos):  # x: (B, H, N); pos: (B, H, c, L) -> (B, H, c, L)
        return x.gather(-1, pos.reshape(b, h, -1)).view(pos.shape)

    outs, lses, kcount = [], [], []
    for r in range(rounds):
        sp = torch.nn.functional.pad(order[:, :, r], (0, nc * m - n), value=-1).view(b, h, nc, m)
        kp_all = sp if nc == 1 else torch.cat([sp, sp.roll(1, dims=2)], dim=-1)  # own chunk, then previous
        o_r, l_r, c_r = [], [], []
        for s0 in range(0, nc, step):
            qp, kp = sp[:, :, s0:s0 + step], kp_all[:, :, s0:s0 + step]
            qs, ks = qp.clamp(min=0), kp.clamp(min=0)
            qb = qf.index_select(0, (qs + base).reshape(-1)).view(*qs.shape, d)
            kb = kf.index_select(0, (ks + base).reshape(-1)).view(*ks.shape, d)
            vb = vf.index_select(0, (ks + base).reshape(-1)).view(*ks.shape, dv)
            valid = at(bkt32[:, :, r], qs).unsqueeze(-1) == at(bkt32[:, :, r], ks).unsqueeze(-2)  # same bucket
            valid &= ((qp >= 0).unsqueeze(-1) & (kp >= 0).unsqueeze(-2)) & (kp.unsqueeze(-2) != qp.unsqueeze(-1))
            if causal:
                valid &= kp.unsqueeze(-2) <= qp.unsqueeze(-1)
            logits = torch.matmul(qb, kb.transpose(-1, -2)) * scale
            if rounds > 1:
                # c_ij: how many rounds list key j for query i (same bucket, own or previous chunk there)
                c_ij = torch.ones(valid.shape, dtype=torch.int32, device=q.device)
                for r2 in range(rounds):
                    if r2 != r:
                        code = at(own[:, :, r2], ks).unsqueeze(-2)
                        c_ij += (code == at(own[:, :, r2], qs).unsqueeze(-1)) | (code == at(prev[:, :, r2], qs).unsqueeze(-1))
                logits = logits - torch.log(c_ij.to(logits.dtype))
                c_r.append((valid.to(cdt) / c_ij.to(cdt)).sum(-1))
            else:
                c_r.append(valid.sum(-1).to(cdt))
            o, lse = softmax_out(logits, valid, vb)  # normalised after the product: one pass fewer
            o_r.append(o)
            l_r.append(lse)
        dest = torch.where(sp >= 0, sp + base, torch.full_like(sp, b * h * n)).reshape(-1)
        outs.append(vf.new_zeros(b * h * n + 1, dv).index_copy(0, dest, torch.cat(o_r, 2).reshape(-1, dv))[:-1])
        lses.append(qf.new_full((b * h * n + 1,), float("-inf")).index_copy(0, dest, torch.cat(l_r, 2).reshape(-1))[:-1])
        kcount.append(torch.zeros(b * h * n + 1, dtype=cdt, device=q.device).index_copy(
            0, dest, torch.cat(c_r, 2).reshape(-1))[:-1])
    lse = torch.stack(lses)  # (R, B·H·N)
    mx = lse.amax(0)
    alone = torch.isinf(mx)  # no key but itself in any round
    e = torch.exp(lse - torch.where(alone, torch.zeros_like(mx), mx).detach())
    wts = e / torch.where(alone, torch.ones_like(mx), e.sum(0))
    out = (wts.unsqueeze(-1) * torch.stack(outs)).sum(0)
    out = torch.where(alone.unsqueeze(-1), vf, out).view(b, h, n, dv).to(v.dtype)
    counts = torch.where(alone, torch.ones_like(mx, dtype=cdt), torch.stack(kcount).sum(0)).round()
    return out, counts.to(torch.int32).view(b, h, n)


def reformer(q, k, v, ctx, buckets: int, rounds: int, chunk: int):
    """LSH attention with shared QK (k ignored); see the module docstring."""
    b, h, n, d = q.shape
    qn = unit(q)  # the shared keys (differentiable)
    hx = qn.detach().to(work_dtype(q.dtype))
    rot = reformer_rotations(ctx, h, rounds, d, buckets, like=hx)  # (H, R, d, buckets/2)
    bkt = lsh_buckets(hx[:, :, None], rot[None])  # (B, H, R, N)
    if bkt.shape[2] != rounds:  # buckets = 1: no rotation columns, one id for all
        bkt = bkt.expand(b, h, rounds, n).contiguous()
    order = bkt.argsort(dim=-1, stable=True)  # sorted slot -> position; stable keeps positions in order
    pos = torch.arange(n, device=q.device).expand_as(order)
    inv = torch.empty_like(order).scatter_(-1, order, pos)  # position -> sorted slot

    out, counts = lsh_attention(q, qn, v, ctx.scale, ctx.causal, bkt, order, inv, chunk)

    # The same pattern as per-query key lists (for the matrix and the mask, built only on request).
    m = chunk
    nc = math.ceil(n / m)
    sorted_pad = torch.nn.functional.pad(order, (0, nc * m - n), value=-1)  # empty slots: -1
    offsets = torch.tensor([0] if nc == 1 else [0, -1], device=q.device)  # own chunk, previous chunk
    lane = torch.arange(m, device=q.device)

    def keys_for(rows):
        c = rows.numel()
        slot = inv[..., rows]  # (B, H, R, c)
        first = ((slot // m).unsqueeze(-1) + offsets) % nc * m  # (B, H, R, c, O)
        kslot = (first.unsqueeze(-1) + lane).reshape(b, h, rounds, -1)  # (B, H, R, c·O·m)
        kpos = sorted_pad.gather(-1, kslot).reshape(b, h, rounds, c, -1)
        kb = bkt.gather(-1, kpos.clamp(min=0).reshape(b, h, rounds, -1)).reshape(kpos.shape)
        valid = (kpos >= 0) & (kb == bkt[..., rows].unsqueeze(-1))  # same bucket only
        # union over rounds: concatenate the rounds' lists (xviz.sparse removes duplicates)
        kpos = kpos.permute(0, 1, 3, 2, 4).reshape(b, h, c, -1)
        valid = valid.permute(0, 1, 3, 2, 4).reshape(b, h, c, -1)
        return kpos, valid

    return lazy_views(out, lambda: sparse_attention(q, qn, v, ctx, keys_for, rounds * offsets.numel() * m,
                                                    compute_out=False, self_only_when_alone=True),
                      names=("mask",), extra={"keys_per_row": counts, "buckets": bkt, "sort_order": order})


def _buckets_rule(value, n, d):
    if value > 1 and value % 2 == 1 and value != n:
        return (f"must be 1 or an even number in [2, {n}]: the hash uses buckets/2 random directions "
                f"and their negatives.")
    return None


def reformer_cost(s, buckets, rounds, chunk):
    b, h, n, d = s.b, s.h, s.n, s.d
    m = min(chunk, n)
    nc = math.ceil(n / m)
    per_row = rounds * m * (1 if nc == 1 else 2)  # every round attends its chunks, even beyond N keys in all
    base = sparse_cost(s, per_row, cap=False)
    hashing = b * h * rounds * (2 * n * d * (effective_buckets(buckets) // 2) + n * math.log2(max(n, 2)))
    index_bytes = 8 * b * h * rounds * n * 3  # bucket ids, sort order, inverse order
    return Cost(base.flops + float(hashing), base.bytes + float(index_bytes))


register_variant(VariantSpec(
    name="reformer",
    display_name="Reformer (LSH)",
    family="learnable pattern",
    paper="Kitaev, Kaiser & Levskaya 2020, Reformer: The Efficient Transformer (arXiv:2001.04451), §2",
    complexity="O(rounds·N·(m·d + log N)): hash, sort, chunks of m",
    complexity_class="n log n",
    fn=reformer,
    cost=reformer_cost,
    params=(
        Param("buckets", "int", 8, "hash buckets per round: 1 or even (an odd value is allowed only when it "
              "equals N, and then N − 1 buckets are used)", low=1, high="N", log=True, rule=_buckets_rule),
        Param("rounds", "int", 2, "independent hashing rounds; a query sees the union of its rounds' keys",
              low=1, high=16),
        Param("chunk", "int", 64, "chunk length m in sorted order; a query sees its own and the previous chunk",
              low=1, high="N", log=True),
    ),
    causal=True,
    stochastic=True,
    row_stochastic=True,
    has_matrix=True,
    artifacts=(Artifact("buckets", "ids", ("B", "H", "rounds", "N"), "the LSH bucket of each token, per round"),
               Artifact("sort_order", "ids", ("B", "H", "rounds", "N"), "the position at each sorted slot, per round"),
               MASK, KEYS_PER_ROW),
    exact_when=None,  # shared QK with the diagonal masked never equals exact attention on (q, k)
    shared_qk=True,
    content_based=False,  # keys are the queries (k is ignored), and chunking follows positions
    description="Keys are the unit-normalised queries (shared QK) and the k input is ignored. "
                "Hash by random rotations, sort by bucket, attend within own and previous chunk, same bucket.",
))
