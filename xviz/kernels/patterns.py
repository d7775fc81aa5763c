"""The fixed and combined sparse patterns, each written once as a ``block_pattern.BlockPattern``.

A constructor takes the key length n (the pattern's positions; cross-attention places query i at
c(i), see ``block_pattern.centres``) and the pattern's parameters, and returns the block table(s), the
element predicate and the global rows. Everything else derives from that one object:
``pattern.keys_for(rows, heads)`` gives the per-query key lists (xviz.sparse: the gather reference,
the matrix, the mask, keys_per_row), ``blocks.execute`` the output from contiguous tiles (CPU) or
FlexAttention (CUDA), and ``dense_mask(pattern)`` the N_q × N_k mask for display and tests.

Causal patterns are the non-causal ones intersected with j ≤ i: the tables only drop blocks that
lie wholly in the future, the executors apply j ≤ i inside. Patterns that need random draws take
them as a tensor made once by ``bigbird_random_blocks`` / ``random_table``, so a pattern is a pure
function of its arguments. Top-k is content-based and stays a key-list function (``topk``).

Tile sizes are a speed choice, never a semantic one: the predicate decides which keys count, the
tables only have to cover them (the tests check the masks against brute-force formulas).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..core.result import check_budget
from . import draws
from .block_pattern import BlockPart, BlockPattern, centres

__all__ = ["window", "blocked_local", "dilated_window", "longformer", "sparse_strided", "sparse_fixed", "bigbird",
           "random_keys", "axial", "topk", "dense_mask", "global_rows", "bigbird_random_blocks", "random_table",
           "fixed_summary_residues", "axial_grid", "band_block"]


def _nb(n: int, b: int) -> int:
    return -(-n // b)


def band_block(reach: int, n: int) -> int:
    """Tile size for a band of ``reach`` keys a side: large enough for efficient matmuls, small
    enough that the tiles do not hold many keys outside the band (measured on the engine bench)."""
    b = 32 if reach < 48 else 64 if reach < 192 else 128
    return max(1, min(b, n))


def _band_table(t: int, back: int, fwd: int) -> torch.Tensor:
    """(1, t, back + fwd + 1): tile u meets blocks u − back … u + fwd (out of range: none)."""
    return (torch.arange(t)[:, None] + torch.arange(-back, fwd + 1))[None]


# ---------------------------------------------------------------- local patterns

def window(n: int, *, back: int, forward: int, causal: bool = False, heads: torch.Tensor | None = None) -> BlockPattern:
    """Keys j with i − back ≤ j ≤ i + forward (causal: forward = 0): a band, on band-shaped tiles."""
    forward = 0 if causal else forward
    back, forward = min(back, n - 1), min(forward, n - 1)
    return BlockPattern(n, [_window_part(n, back, forward, heads)], causal)


def _window_part(n: int, back: int, forward: int, heads=None, order=None, block: int | None = None) -> BlockPart:
    """A band of ``back`` / ``forward`` slots (positions, or slots of the layout ``order``)."""
    b = block or band_block(max(back, forward), n)
    t = _nb(n if order is None else order.numel(), b)
    table = _band_table(t, _nb(back, b), _nb(forward, b))

    def allowed(i, j):
        d = j - i
        return (d >= -back) & (d <= forward)

    return BlockPart(table, b, b, allowed, order=order, heads=heads)


def blocked_local(n: int, *, block: int, look_back: int = 1, look_forward: int = 1, causal: bool = False) -> BlockPattern:
    """Chunks of ``block`` positions; a row attends every key in its own chunk and in ``look_back``
    chunks before and ``look_forward`` chunks after. K = (back + forward + 1)·block."""
    block = max(1, min(block, n))
    chunks = _nb(n, block)
    back = min(look_back, chunks - 1)
    fwd = 0 if causal else min(look_forward, chunks - 1)
    return BlockPattern(n, [BlockPart(_band_table(chunks, back, fwd), block, block)], causal)


def _residue_order(n: int, stride: int, tile: int) -> tuple[torch.Tensor, int]:
    """The layout grouping positions by residue mod ``stride`` (r, r + stride, r + 2·stride, …),
    each class padded to a multiple of ``tile`` slots: (order (stride·R,), R slots per class)."""
    rows = _nb(n, stride)
    per = _nb(rows, tile) * tile
    r = torch.arange(stride)[:, None]
    t = torch.arange(per)[None, :]
    pos = r + stride * t
    return torch.where((t < rows) & (pos < n), pos, n).flatten(), per


def dilated_window(n: int, *, window: int, dilation: int, per_head: bool = False, heads: int = 1,
                   causal: bool = False) -> BlockPattern:
    """Keys i + δ·t for |t| ≤ window (causal: −window ≤ t ≤ 0). ``per_head``: head h uses
    δ_h = 1 + (h mod dilation), as Longformer varies the dilation across heads. Layout: the residue
    classes mod δ, where the dilated window is a plain band (no work on the skipped keys)."""
    dil = (1 + torch.arange(heads) % dilation) if per_head else torch.full((heads,), dilation)
    parts = []
    for d in dil.unique().tolist():
        sel = None if bool((dil == d).all()) else (dil == d).nonzero().flatten()
        reach = min(window, max((n - 1) // d, 0))
        fwd = 0 if causal else reach
        rows = _nb(n, d)
        b = band_block(reach, rows)
        order, per = _residue_order(n, d, b)
        part = _window_part(n, reach, fwd, sel, order=order, block=b)

        def allowed(i, j, back=reach * d, fwd=fwd * d, d=d):
            e = j - i  # the same class (residues taken before broadcasting): a tile at a class edge holds the next
            return (e >= -back) & (e <= fwd) & (i % d == j % d)

        part.allowed = allowed
        parts.append(part)
    return BlockPattern(n, parts, causal)


def global_rows(n: int, count: int, device=None) -> torch.Tensor:
    """The first ``count`` positions (clamped to n): Longformer's / BigBird-ITC's global tokens."""
    return torch.arange(min(count, n), device=device)


def longformer(n: int, *, window: int, num_global: int, causal: bool = False) -> BlockPattern:
    """Sliding window (|i − j| ≤ window) plus the global columns 0 … g − 1, whose rows attend every key."""
    reach = min(window, n - 1)
    part = _window_part(n, reach, 0 if causal else reach)
    g = min(num_global, n)
    part.columns = torch.arange(g)[None] if g else None
    return BlockPattern(n, [part], causal, full_rows=global_rows(n, g))


# ---------------------------------------------------------------- Sparse Transformer (Child et al. 2019)

def _classes_part(n: int, stride: int, exclude_self: bool, heads=None) -> BlockPart:
    """(i − j) mod stride = 0: in the layout of residue classes each class is one tile meeting itself."""
    order, per = _residue_order(n, stride, 1)
    allowed = (lambda i, j: i != j) if exclude_self else None
    return BlockPart(torch.arange(stride)[None, :, None], per, per, allowed, order=order, heads=heads)


def sparse_strided(n: int, *, stride: int, heads_mode: str = "alternate", heads: int = 1,
                   causal: bool = False) -> BlockPattern:
    """Local |i − j| < stride and strided (i − j) mod stride = 0. "union": both in every head (the
    diagonal counts once); "alternate": even heads local, odd heads strided."""
    reach = min(stride - 1, n - 1)
    if heads_mode == "union":
        parts = [_window_part(n, reach, 0 if causal else reach), _classes_part(n, stride, exclude_self=True)]
    elif heads_mode == "alternate":
        if heads == 1:
            return window(n, back=reach, forward=reach, causal=causal)
        parts = [_window_part(n, reach, 0 if causal else reach, torch.arange(0, heads, 2)),
                 _classes_part(n, stride, exclude_self=False, heads=torch.arange(1, heads, 2))]
    else:
        raise ValueError(f"heads_mode must be 'alternate' or 'union', not {heads_mode!r}")
    return BlockPattern(n, parts, causal)


def fixed_summary_residues(stride: int, summary: int, heads: int = 1, distinct_heads: bool = False,
                           device=None) -> torch.Tensor:
    """Positions within a block that act as summary columns: (1, c) shared, or (H, c) when
    ``distinct_heads`` (head h uses the sub-block shifted back by h·c, wrapping: Child et al. found
    distinct sub-blocks per head preferable). Head 0 always has the last c positions, l − c … l − 1."""
    s = torch.arange(stride - summary, stride, device=device)
    if not distinct_heads:
        return s[None]
    shift = (torch.arange(heads, device=device) * summary)[:, None]
    return (s[None] - shift) % stride


def sparse_fixed(n: int, *, stride: int, summary: int, distinct_heads: bool = False, heads: int = 1,
                 causal: bool = False) -> BlockPattern:
    """Same block ⌊i/l⌋ = ⌊j/l⌋ plus the summary columns j mod l ≥ l − c of every block (per head
    when ``distinct_heads``): own-block tiles plus shared columns."""
    stride = max(1, min(stride, n))
    nb = _nb(n, stride)
    res = fixed_summary_residues(stride, summary, heads, distinct_heads)  # (1 or H, c)
    cols = (torch.arange(nb)[None, :, None] * stride + res[:, None, :]).flatten(1).sort(-1).values
    cols = torch.where(cols < n, cols, n)
    part = BlockPart(torch.arange(nb)[None, :, None], stride, stride, columns=cols)
    return BlockPattern(n, [part], causal)


# ---------------------------------------------------------------- BigBird (Zaheer et al. 2020)

def bigbird_random_blocks(n: int, *, block: int, window_blocks: int, global_blocks: int, random_blocks: int,
                          heads: int, generator: torch.Generator, causal: bool = False) -> torch.Tensor:
    """Random key blocks per (head, query block): (H, ⌈n/b⌉, r) long, −1 where fewer than r blocks
    were available. Drawn uniformly *without* replacement among the blocks not already in the
    query block's window or the global blocks; causal: only from blocks ≤ the query block
    (BigBird-ITC's lower-triangular random blocks). O(H·nb·r²) work, never nb²."""
    nb = -(-n // block)
    r = random_blocks
    out = torch.full((heads, nb, r), -1, dtype=torch.long)
    if r == 0:
        return out
    qb = torch.arange(nb)
    w = window_blocks // 2
    g = min(global_blocks, nb)
    upper = qb + 1 if causal else torch.full_like(qb, nb)  # candidates are [g, upper) minus the window
    lo = (qb - w).clamp(min=g)
    hi = torch.minimum(qb + w, upper - 1)
    gap = (hi - lo + 1).clamp(min=0)  # window blocks inside [g, upper)
    m = (upper - g - gap).clamp(min=0)  # number of candidates per query block
    u = torch.rand(heads, nb, r, generator=generator, dtype=torch.float64)
    chosen = []  # ranks in [0, m), each draw uniform over the ranks not drawn yet
    for t in range(r):
        x = torch.floor(u[..., t] * (m - t).clamp(min=1)).long()
        for c in torch.stack(chosen, -1).sort(-1).values.unbind(-1) if chosen else ():
            x = x + (x >= c).long()  # skip ranks already taken, in increasing order
        chosen.append(x)
    rank = torch.stack(chosen, -1)  # (H, nb, r)
    blk = g + rank
    blk = blk + torch.where((gap[:, None] > 0) & (blk >= lo[:, None]), gap[:, None], 0)
    ok = torch.arange(r)[None, None, :] < m[None, :, None]
    return torch.where(ok, blk, out)


def bigbird(n: int, *, block: int, window_blocks: int, global_blocks: int, random: torch.Tensor | None = None,
            causal: bool = False) -> BlockPattern:
    """Query block ⌊i/b⌋ attends its ``window_blocks`` centred neighbour blocks, the first
    ``global_blocks`` blocks and its random blocks ``random`` ((H, nb, r), −1 = none); the global
    blocks' rows attend every key. One block table (H, nb, W + G + r); repeats count once."""
    block = max(1, min(block, n))
    nb = _nb(n, block)
    w = min(window_blocks // 2, nb - 1)
    win = _band_table(nb, w, 0 if causal else w)[0]  # (nb, W)
    g = min(global_blocks, nb)
    table = torch.cat([win, torch.arange(g).expand(nb, g)], -1)[None]  # (1, nb, W + G)
    if random is not None and random.shape[-1]:
        table = torch.cat([table.expand(random.shape[0], -1, -1), random.cpu()], -1)
    return BlockPattern(n, [BlockPart(table, block, block)], causal, full_rows=global_rows(n, g * block))


# ---------------------------------------------------------------- random keys per row

def random_table(n: int, *, keys_per_row: int, heads: int, generator: torch.Generator,
                 causal: bool = False) -> torch.Tensor:
    """(H, n, r) keys drawn uniformly with replacement: from [0, n), or [0, i] for row i when causal.
    Rows are drawn in position order (``draws``), so row i draws the same keys at any n: a causal
    prefix is reproducible while decoding."""
    u = draws.uniform(generator, n, heads, keys_per_row).transpose(0, 1)
    span = (torch.arange(n, dtype=torch.float64) + 1)[None, :, None] if causal else float(n)
    top = torch.arange(n)[None, :, None] if causal else n - 1
    return torch.minimum(torch.floor(u * span).long(), torch.as_tensor(top))


def random_keys(n: int, *, table: torch.Tensor, causal: bool = False) -> BlockPattern:
    """Row i attends the keys ``table[h, i]`` (from ``random_table``) plus itself; repeats count once.
    Blocks of one position: each row is its own tile."""
    own = torch.arange(n)[None, :, None].expand(table.shape[0], -1, 1)
    return BlockPattern(n, [BlockPart(torch.cat([table.cpu(), own], -1), 1, 1)], causal)


# ---------------------------------------------------------------- axial (criss-cross) on a grid

def axial_grid(n: int, grid_width: int, device=None) -> torch.Tensor:
    """(n, 2) (grid row, grid column) of each position in raster order."""
    p = torch.arange(n, device=device)
    return torch.stack([p // grid_width, p % grid_width], -1)


def axial(n: int, *, grid_width: int, causal: bool = False) -> BlockPattern:
    """Every key in the query's grid row (a block of W) and grid column (a residue class mod W,
    itself excluded: it is in the row). K = W + ⌈n/W⌉ − 1."""
    w = max(1, min(grid_width, n))
    rows = BlockPart(torch.arange(_nb(n, w))[None, :, None], w, w)
    return BlockPattern(n, [rows, _classes_part(n, w, exclude_self=True)], causal)


# ---------------------------------------------------------------- content-based: top-k

TOPK_LOGIT_ELEMENTS = 1 << 22  # logits held at once while choosing (16 MB of float32)


def topk_logits(q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, keep: int, scale: float, causal: bool):
    """Each row's ``keep`` largest logits q_i·k_j·scale (future masked first when causal) as
    (values, indices), (B, H, c, keep), chosen in sub-chunks of at most ``TOPK_LOGIT_ELEMENTS``."""
    b, h = q.shape[:2]
    n = k.shape[-2]
    keep = min(keep, n)
    step = max(1, TOPK_LOGIT_ELEMENTS // max(1, b * h * n))
    wd = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32  # float16 logits overflow
    kt = k.transpose(-1, -2).to(wd)
    vals, idx = [], []
    for s in range(0, rows.numel(), step):
        r = rows[s:s + step]
        logits = torch.matmul(q[:, :, r].to(wd), kt) * scale  # (B, H, c', N)
        if causal:
            logits = logits.masked_fill(torch.arange(n, device=q.device)[None, :] > r[:, None], float("-inf"))
        top = logits.topk(keep, dim=-1)
        vals.append(top.values)
        idx.append(top.indices)
    if not idx:
        return q.new_zeros(b, h, 0, keep), rows.new_zeros(b, h, 0, keep)
    return torch.cat(vals, -2), torch.cat(idx, -2)


def topk(rows, n, *, q: torch.Tensor, k: torch.Tensor, keep: int, scale: float, causal: bool = False):
    """Key lists of top-k attention: idx (B, H, c, keep), valid (future keys of short causal rows off)."""
    _, idx = topk_logits(q, k, rows, keep, scale, causal)
    valid = (idx >= 0) & (idx < n)
    if causal:
        valid = valid & (idx <= rows[:, None])
    return idx, valid


# ---------------------------------------------------------------- dense masks (display, tests)

def dense_mask(pattern: BlockPattern | Callable, n: int | None = None, *, heads: int = 1, nq: int | None = None,
               causal: bool = False, device=None, chunk: int = 1024, **params) -> torch.Tensor:
    """A bool (b, h, N_q, N_k) mask (b, h = 1 where shared): a ``BlockPattern``'s keys (its causal
    flag and global rows included), or a key-list function ``fn(rows, n, causal=, **params)``."""
    if isinstance(pattern, BlockPattern):
        n, causal = pattern.n, pattern.causal
        nq = n if nq is None else nq
        keys = lambda rows: pattern.keys_for(rows, heads, nq)  # noqa: E731
        full = pattern.query_full_rows(nq, device)
    else:
        nq = n if nq is None else nq
        keys = lambda rows: pattern(rows, n, causal=causal, **params)  # noqa: E731
        full = None
    mask = None
    for start in range(0, nq, chunk):
        rows = torch.arange(start, min(nq, start + chunk), device=device)
        idx, valid = keys(rows)
        idx, valid = torch.broadcast_tensors(idx.long(), valid)
        while idx.dim() < 4:
            idx, valid = idx.unsqueeze(0), valid.unsqueeze(0)
        valid = valid & (idx >= 0) & (idx < n)
        if causal:
            valid = valid & (idx <= rows[:, None])
        if mask is None:
            check_budget((idx.shape[0], idx.shape[1], nq, n), 1, "the dense pattern mask")
            mask = torch.zeros(idx.shape[0], idx.shape[1], nq, n, dtype=torch.bool, device=device)
        _scatter_or(mask[:, :, start:start + rows.numel()], idx.clamp(0, n - 1), valid)
    if full is not None:
        cols = torch.arange(n, device=mask.device)
        mask[:, :, full] = (cols[None, :] <= full[:, None]) if causal else True
    return mask


def _scatter_or(dst: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor) -> None:
    """dst[..., idx] |= valid, in place (an invalid entry never clears a valid one)."""
    counts = torch.zeros(dst.shape, dtype=torch.int32, device=dst.device)
    counts.scatter_add_(-1, idx, valid.to(torch.int32))
    dst |= counts > 0


_ = centres  # re-exported for the variants: the cross-attention rule lives in blocks
