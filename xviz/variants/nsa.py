"""NSA, native sparse attention (Yuan et al. 2025): compressed, selected and sliding branches, gated.

Every query t combines three attentions, each an exact softmax over its own key set:
- **compressed**: the keys and values pooled over blocks [b·δ, b·δ + l) (``compress_block`` l,
  ``compress_stride`` δ ≤ l, so blocks overlap); the paper's φ is a learned MLP with an intra-block
  position encoding, untrained we take the block mean. Causal: a block is read once complete, and a
  block cut by the sequence's end is never read (it is not complete; Eq. 7).
- **selected**: the keys are also cut into selection blocks of l′ (``select_block``); a block's
  importance for query t is the compressed attention it received, p_cmp, summed over the
  compressed blocks that overlap it, each weighted by the number of positions they share (the
  paper maps compression scores onto selection blocks by their spatial overlap; counting shared
  positions is that mapping for any l, δ, l′). The query attends
  every key of its ``top_n`` most important blocks; as in the paper, the initial block and the two
  local blocks (its own and the previous one) are always among them (they take three of the n
  places, own block first). Causal: blocks after the query's own are never chosen; j ≤ t inside.
  The paper shares one selection across the heads of a GQA group; with independent heads, each
  head selects its own.
- **sliding**: the keys within ``window`` of the query (|t − j| ≤ w; causal: the last w + 1).
out_t = Σ_c g_c·o_c(t) / Σ_c g_c. The paper's gates g_c are sigmoids of a learned MLP of the
query; untrained they are fixed equal (``gate_*`` = 1: one third each), and normalised to sum to
one so the three branches form a convex mixture; a gate 0 turns its branch off, and a branch with
no key for a query (the compressed one before its first block completes) is left out of that
query's mixture. The effective weights are the gated sum of the three softmaxes (the compressed
one spread evenly over each block's tokens), row-stochastic whenever the selected or the sliding
gate is on.
Defaults: the paper's l = 32, δ = 16, l′ = 64, n = 16, w = 512 target 64K-token contexts; ours
(l = 32, δ = 16, l′ = 32, n = 4, w = 64) keep the pattern sparse at the app's N of a few hundred
to a few thousand. Selected gate only with top_n ≥ ⌈N/l′⌉ is exact attention (causal too).
Compute: per query chunk, the compressed logits against the ⌈(N − l)/δ⌉ + 1 block means give the
compressed branch and (by the overlap map) the block importances, in one pass; each chosen key
block meets the queries that chose it in one matmul (``routed.selected_blocks_part``, dispatched
by block) and the window is a gather-free band
(``kernels.patterns.window`` on the tiles). O(N·(N/δ + n·l′ + w)·d): O(N√N·d) at δ ≈ √N; no N×N tensor. The
dense reference (``matrix``) builds the three weights separately.
Artifacts: the mask (the raw keys read: selected ∪ window; the compressed branch reads every
earlier block in pooled form), ``branch_masks`` (the three branches' masks), ``selected_blocks``
and ``gates`` (the normalised gates each query used).
Yuan et al. 2025, Native Sparse Attention: Hardware-Aligned and Natively Trainable Sparse
Attention (ACL; arXiv:2502.11089), §3 (token compression, selection, sliding window).
"""
import torch

from ..core.errors import ParameterError
from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import check_budget
from ..kernels import patterns
from ..kernels.blocks import execute
from ..kernels.lazy import lazy_views
from ..kernels.costs import sparse_cost
from ..kernels.dense import masked_softmax, work_dtype
from ..kernels.routed import (PASS_ELEMENTS, block_overlaps, compressed_blocks, compressed_count, compressed_ends,
                              pick, pooling_matrix, selected_blocks_part, selected_keys, selected_mask)
from ..kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention


def geometry(n, compress_block, compress_stride, select_block, causal):
    """(l, δ, l′, the length the compressed blocks cover). Not causal: lengths clamped to N and every
    block, the last ones clipped at N. Causal: the lengths as given (clamped to N they would change with
    N) and complete blocks only, as the paper's Eq. 7 (block i once i·δ + l ≤ t + 1): a block cut by
    the end of the sequence is not a block yet, so appending tokens moves no earlier output."""
    if not causal:
        l = min(compress_block, n)
        return l, min(compress_stride, l), min(select_block, n), n
    l, stride = compress_block, min(compress_stride, compress_block)
    complete = (n - l) // stride + 1 if n >= l else 0
    return l, stride, select_block, (complete - 1) * stride + l if complete else 0


def forced(scores, rows, select: int, causal: bool):
    """Block scores (modified in place) with the always-chosen blocks on top (own, previous,
    initial) and, causal, later blocks removed."""
    own = rows // select
    if causal:
        scores.masked_fill_(torch.arange(scores.shape[-1], device=scores.device) > own[:, None], float("-inf"))
    at = lambda blk: blk[:, None].expand(*scores.shape[:-1], 1)  # noqa: E731
    scores.scatter_(-1, at(torch.zeros_like(own)), 1e30)
    scores.scatter_(-1, at((own - 1).clamp(min=0)), 2e30)
    return scores.scatter_(-1, at(own), float("inf"))


def compressed_and_selection(q, kc_, vc_, ctx, n, l, stride, ls, top_n, covered):
    """One pass over query chunks: the compressed branch's output and each query's chosen blocks."""
    b, h = q.shape[:2]
    nc, nsel = kc_.shape[-2], -(-n // ls)
    ends = compressed_ends(covered, l, stride, q.device)[:nc]  # [:0] when no block is complete
    # no complete block yet: nothing is read (upto stays 0), so there is no overlap map to build
    targets, counts = block_overlaps(covered, l, stride, ls, q.device) if nc else (None, None)
    out = q.new_zeros(b, h, n, vc_.shape[-1])
    ids, valid = [], []
    step = max(1, PASS_ELEMENTS // max(1, b * h * (3 * nc + 2 * nsel)))
    for s in range(0, n, step):
        e = min(n, s + step)
        rows = torch.arange(s, e, device=q.device)
        importance = q.new_zeros(b, h, e - s, nsel)
        upto = int((ends <= e - 1).sum()) if ctx.causal else nc  # blocks complete by the chunk's last row
        if upto:
            logits = torch.matmul(q[:, :, s:e], kc_[:, :, :upto].transpose(-1, -2)) * ctx.scale
            if ctx.causal:  # masked_softmax: rows with no complete block get zeros, without NaN gradients
                p, _ = masked_softmax(logits, ends[None, :upto] <= rows[:, None])
            else:
                p = torch.softmax(logits, dim=-1)
            out[:, :, s:e] = torch.matmul(p, vc_[:, :, :upto])
            for u in range(targets.shape[0]):
                importance.index_add_(-1, targets[u, :upto], p * counts[u, :upto].to(p.dtype))
        i, ok = pick(forced(importance, rows, ls, ctx.causal), top_n)
        ids.append(i)
        valid.append(ok)
    return out, torch.cat(ids, 2), torch.cat(valid, 2)


def branch_gates(n, l, causal, gates, device, dtype):
    """(3, N): each query's normalised gates; the compressed branch is dropped where it is empty."""
    rows = torch.arange(n, device=device)
    on = torch.stack([rows >= l - 1 if causal else torch.ones_like(rows, dtype=torch.bool),
                      torch.ones_like(rows, dtype=torch.bool), torch.ones_like(rows, dtype=torch.bool)])
    g = torch.tensor(gates, device=device, dtype=torch.float64)[:, None] * on  # float64: a gate of 1e−300 counts
    total = g.sum(0, keepdim=True)
    return (g / torch.where(total > 0, total, torch.ones_like(total))).to(dtype)


def nsa(q, k, v, ctx, compress_block: int, compress_stride: int, select_block: int, top_n: int, window: int,
        gate_compressed: float, gate_selected: float, gate_window: float):
    b, h, n, d = q.shape
    cdt = work_dtype(q.dtype)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    l, stride, ls, covered = geometry(n, compress_block, compress_stride, select_block, ctx.causal)
    kc_, vc_ = (compressed_blocks(x[:, :, :covered], l, stride) if covered else x[:, :, :0] for x in (kc, vc))
    o_cmp, ids, valid = compressed_and_selection(qc, kc_, vc_, ctx, n, l, stride, ls, top_n, covered)
    o_slc, _ = selected_blocks_part(qc, kc, vc, ctx.scale, ctx.causal, ls, ids, valid)
    o_win = execute(qc, kc, vc, ctx.scale, patterns.window(n, back=window, forward=window, causal=ctx.causal))
    g = branch_gates(n, l, ctx.causal, (gate_compressed, gate_selected, gate_window), q.device, cdt)
    out = (g[0, :, None] * o_cmp + g[1, :, None] * o_slc + g[2, :, None] * o_win).to(v.dtype)
    reach = min(window, n - 1)
    offsets = torch.arange(-reach, 1 if ctx.causal else reach + 1, device=q.device)
    selected = selected_keys(ids, valid, ls)

    def keys_for(rows):  # the raw keys a query reads: its selected blocks ∪ its window
        idx, ok = selected(rows)
        win = (rows[:, None] + offsets).expand(*idx.shape[:2], -1, -1)
        return torch.cat([idx, win], -1), torch.cat([ok, torch.ones_like(win, dtype=torch.bool)], -1)

    def dense_parts():
        check_budget((3, b, h, n, n), 8, "the NSA branch matrices")
        j = torch.arange(n, device=q.device)
        logits = torch.matmul(qc, kc.transpose(-1, -2)) * ctx.scale
        a_cmp = logits.new_zeros(logits.shape)
        if covered:
            keep_cmp = (compressed_ends(covered, l, stride, q.device)[None, :] <= j[:, None]) if ctx.causal else None
            p_cmp, _ = masked_softmax(torch.matmul(qc, kc_.transpose(-1, -2)) * ctx.scale, keep_cmp)
            a_cmp[..., :covered] = p_cmp @ pooling_matrix(covered, l, stride, q.device, cdt)
        win = (j[:, None] - j[None, :]).abs() <= reach
        win = win & (j[None, :] <= j[:, None]) if ctx.causal else win
        slc = selected_mask(ids, valid, ls, n, ctx.causal)
        return a_cmp, masked_softmax(logits, slc)[0], masked_softmax(logits, win)[0], (slc, win)

    def matrix():
        a_cmp, a_slc, a_win, _ = dense_parts()
        return (g[0, :, None] * a_cmp + g[1, :, None] * a_slc + g[2, :, None] * a_win).to(v.dtype)

    def branch_masks():
        a_cmp, _, _, (slc, win) = dense_parts()
        return torch.stack([a_cmp > 0, slc, win.expand_as(slc)])

    result = lazy_views(out, lambda: sparse_attention(
        q, k, v, ctx, keys_for, width=ids.shape[-1] * ls + offsets.numel(), compute_out=False), extra={
        "selected_blocks": torch.where(valid, ids, torch.full_like(ids, -1)),  # (B, H, N, n)
        "branch_masks": branch_masks,  # (3, B, H, N, N): compressed (pooled coverage), selected, sliding
        "gates": g.to(q.dtype),  # (3, N)
    })
    result.matrix = matrix
    return result


def cost(s, compress_block, compress_stride, select_block, top_n, window, gate_compressed, gate_selected,
         gate_window):
    l, stride, ls, covered = geometry(s.n, compress_block, compress_stride, select_block, s.causal)
    nc = compressed_count(covered, l, stride) if covered else 0
    half = 2 if s.causal else 1
    t = min(top_n, -(-s.n // ls))
    keys = nc / half + t * ls + (window + 1 if s.causal else 2 * window + 1)
    flops = sparse_cost(s, min(keys, 3 * s.n)).flops + s.b * s.h * 2 * s.n * nc  # + the importance map
    # what is held: q, k, v, out, three branch outputs, the compressed K/V, the choices and their
    # partial outputs; the logits live in passes of PASS_ELEMENTS (a few of them at once)
    held = s.n * (2 * s.d + 5 * s.dv) + nc * (s.d + s.dv) + s.n * t * (s.dv + 3)
    return Cost(float(flops), float(4 * s.b * s.h * held + 4 * 3 * PASS_ELEMENTS))


def _check(params, n, d, heads):
    if params["gate_compressed"] + params["gate_selected"] + params["gate_window"] <= 0:
        raise ParameterError("gate_compressed, gate_selected and gate_window are all 0; turn at least one "
                             "branch on (each gate is in [0, 1]).")


register_variant(VariantSpec(
    name="nsa",
    display_name="NSA (native sparse attention)",
    family="learnable pattern",
    paper="Yuan et al. 2025, Native Sparse Attention: Hardware-Aligned and Natively Trainable Sparse Attention "
          "(ACL 2025; arXiv:2502.11089)",
    complexity="O(N·(N/δ + n·l′ + w)·d); O(N√N·d) at δ ≈ √N",
    complexity_class="n sqrt n",
    fn=nsa,
    cost=cost,
    params=(
        Param("compress_block", "int", 32, "compression block length l", low=1, high="N", log=True),
        Param("compress_stride", "int", 16, "compression stride δ (clamped to l: blocks overlap, never gap)",
              low=1, high="N", log=True),
        Param("select_block", "int", 32, "selection block length l′", low=1, high="N", log=True),
        Param("top_n", "int", 4, "selected blocks per query (the initial and two local blocks among them)",
              low=1, high="N"),
        Param("window", "int", 64, "sliding branch: keys within w of the query", low=0, high="N"),
        Param("gate_compressed", "float", 1.0, "gate of the compressed branch (gates are normalised to sum to 1)",
              low=0.0, high=1.0),
        Param("gate_selected", "float", 1.0, "gate of the selected-blocks branch", low=0.0, high=1.0),
        Param("gate_window", "float", 1.0, "gate of the sliding-window branch", low=0.0, high=1.0),
    ),
    causal=True,
    row_stochastic=lambda p: p["gate_selected"] > 0 or p["gate_window"] > 0,
    artifacts=(MASK, KEYS_PER_ROW,
               Artifact("selected_blocks", "ids", ("B", "H", "N", "n"), "the selection blocks each query chose (−1: none)"),
               Artifact("branch_masks", "mask", ("3", "B", "H", "N", "N"),
                        "the compressed (pooled coverage), selected and sliding branches' keys"),
               Artifact("gates", "curve", ("3", "N"), "the normalised gates (compressed, selected, sliding) per query")),
    exact_when=lambda n, d, h: {"top_n": n, "gate_compressed": 0.0, "gate_window": 0.0},
    check=_check,
    content_based=False,
    description="Gated mix of compressed-block, top-n selected-block and sliding-window attention.",
))
