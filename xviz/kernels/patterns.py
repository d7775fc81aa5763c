"""Fixed and combined sparse attention patterns as pure functions, in one place (xformers style).

Every pattern has the signature ``fn(rows, n, *, causal=False, **params) -> (idx, valid)``:

* ``rows``: a LongTensor (c,) of query positions (a contiguous range when called by the engine);
* ``idx``: the key positions each row may attend to, a LongTensor broadcastable to (B, H, c, K):
  leading dims are 1 where the pattern is shared, H where it differs per head, B·H where it
  depends on the content (top-k);
* ``valid``: bool, broadcastable to ``idx``: which entries count. Positions outside [0, n) are
  always marked invalid here, so ``idx`` may hold out-of-range values.

``causal`` only trims keys that the caller masks anyway (j > i); it never adds or removes a
key at or before the query, so the pattern *is* the non-causal pattern intersected with j ≤ i.
Repeated keys in a row are allowed (a union of sub-patterns); xviz.sparse counts each once.

Patterns that need random draws take the draws as a tensor made once by a ``*_table`` /
``*_random_blocks`` helper, so a pattern is a pure function of its arguments and the same
rows always give the same keys, however the caller chunks them.

``dense_mask(pattern, n, ...)`` evaluates a pattern on every row, for display and tests.

``xviz.kernels.blocks`` computes the same patterns' outputs from contiguous blocks with batched
matmuls: the variants use those for ``out`` and keep the pattern functions (through
``sparse.sparse_attention(compute_out=False)``, lazily, via ``blocks.lazy_views``) for the matrix,
the mask and the key counts.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..core.result import check_budget

Pattern = Callable[..., "tuple[torch.Tensor, torch.Tensor]"]


def _inside(idx: torch.Tensor, n: int) -> torch.Tensor:
    return (idx >= 0) & (idx < n)


def _ar(start: int, stop: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(start, stop, device=like.device)


# ---------------------------------------------------------------- local patterns

def blocked_local(rows, n, *, block: int, look_back: int = 1, look_forward: int = 1, causal: bool = False):
    """Chunks of ``block`` positions; a row attends every key in its own chunk and in
    ``look_back`` chunks before and ``look_forward`` chunks after. K = (back + forward + 1)·block."""
    chunks = -(-n // block)
    back = min(look_back, chunks - 1)
    fwd = 0 if causal else min(look_forward, chunks - 1)
    starts = (rows // block)[:, None] + _ar(-back, fwd + 1, rows)  # (c, back + fwd + 1) chunk ids
    idx = (starts[:, :, None] * block + _ar(0, block, rows)).flatten(1)  # (c, K)
    return idx, _inside(idx, n)


def dilated_window(rows, n, *, window: int, dilation: int, per_head: bool = False, heads: int = 1,
                   causal: bool = False):
    """Keys i + δ·t for |t| ≤ window (causal: −window ≤ t ≤ 0). ``per_head``: head h uses
    δ_h = 1 + (h mod dilation), as Longformer varies the dilation across heads; idx is then (1, H, c, K)."""
    if per_head:
        dil = 1 + torch.arange(heads, device=rows.device) % dilation  # (H,)
        smallest = 1
    else:
        dil = torch.tensor([dilation], device=rows.device)
        smallest = dilation
    reach = min(window, max((n - 1) // smallest, 0))  # further steps fall outside [0, n) for every head
    t = _ar(-reach, 1 if causal else reach + 1, rows)  # (K,)
    idx = rows[None, None, :, None] + dil[None, :, None, None] * t  # (1, H or 1, c, K)
    return idx, _inside(idx, n)


def longformer(rows, n, *, window: int, num_global: int, causal: bool = False):
    """Sliding window (|i − j| ≤ window) plus the global columns 0 … num_global − 1. The global
    *rows* (they attend every key) are not a key list: see ``global_rows``."""
    reach = min(window, n - 1)
    local = rows[:, None] + _ar(-reach, 1 if causal else reach + 1, rows)
    g = min(num_global, n)
    glob = _ar(0, g, rows).expand(rows.numel(), g)
    idx = torch.cat([local, glob], dim=-1)
    return idx, _inside(idx, n)


def global_rows(n: int, count: int, device=None) -> torch.Tensor:
    """The first ``count`` positions (clamped to n): Longformer's / BigBird-ITC's global tokens."""
    return torch.arange(min(count, n), device=device)


# ---------------------------------------------------------------- Sparse Transformer (Child et al. 2019)

def strided_local(rows, n, *, stride: int, causal: bool = False):
    """|i − j| < stride: the "local" head of the strided pattern. K = 2·stride − 1."""
    reach = min(stride - 1, n - 1)
    idx = rows[:, None] + _ar(-reach, 1 if causal else reach + 1, rows)
    return idx, _inside(idx, n)


def strided_step(rows, n, *, stride: int, causal: bool = False):
    """(i − j) mod stride = 0: the "strided" head. K = 2·⌊(n − 1)/stride⌋ + 1."""
    reach = (n - 1) // stride
    idx = rows[:, None] + _ar(-reach, 1 if causal else reach + 1, rows) * stride
    return idx, _inside(idx, n)


def sparse_strided(rows, n, *, stride: int, heads_mode: str = "alternate", heads: int = 1, causal: bool = False):
    """``heads_mode`` "union": both sub-patterns in every head (idx (c, K₁ + K₂); the diagonal is in
    both and counts once). "alternate": even heads the local pattern, odd heads the strided one
    (idx (1, H, c, max(K₁, K₂)), the shorter list padded with invalid entries)."""
    li, lv = strided_local(rows, n, stride=stride, causal=causal)
    si, sv = strided_step(rows, n, stride=stride, causal=causal)
    if heads_mode == "union":
        return torch.cat([li, si], -1), torch.cat([lv, sv], -1)
    if heads_mode != "alternate":
        raise ValueError(f"heads_mode must be 'alternate' or 'union', not {heads_mode!r}")
    if heads == 1:
        return li, lv
    width = max(li.shape[-1], si.shape[-1])

    def pad(i, v):
        extra = width - i.shape[-1]
        return (torch.nn.functional.pad(i, (0, extra), value=-1),
                torch.nn.functional.pad(v, (0, extra), value=False))

    (li, lv), (si, sv) = pad(li, lv), pad(si, sv)
    odd = (torch.arange(heads, device=rows.device) % 2 == 1)[:, None, None]  # (H, 1, 1)
    idx = torch.where(odd, si[None], li[None])[None]  # (1, H, c, K)
    valid = torch.where(odd, sv[None], lv[None])[None]
    return idx, valid


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


def sparse_fixed(rows, n, *, stride: int, summary: int, distinct_heads: bool = False, heads: int = 1,
                 causal: bool = False):
    """Same block ⌊i/l⌋ = ⌊j/l⌋ plus the summary columns j mod l ≥ l − c of every block
    (per head when ``distinct_heads``). K = l + ⌈n/l⌉·c (causal: only blocks up to the last row's)."""
    own = ((rows // stride) * stride)[:, None] + _ar(0, stride, rows)  # (c, l)
    blocks = -(-n // stride)
    if causal and rows.numel():
        blocks = min(blocks, int(rows.max()) // stride + 1)
    res = fixed_summary_residues(stride, summary, heads, distinct_heads, rows.device)  # (h, c)
    cols = (_ar(0, blocks, rows)[None, :, None] * stride + res[:, None, :]).flatten(1)  # (h, blocks·c)
    h = cols.shape[0]
    c = rows.numel()
    idx = torch.cat([own[None].expand(h, c, -1), cols[:, None, :].expand(h, c, -1)], -1)[None]  # (1, h, c, K)
    return idx, _inside(idx, n)


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


def bigbird(rows, n, *, block: int, window_blocks: int, global_blocks: int,
            random: torch.Tensor | None = None, causal: bool = False):
    """Query block ⌊i/b⌋ attends its ``window_blocks`` centred neighbour blocks, the first
    ``global_blocks`` blocks, and its random blocks ``random`` ((H, nb, r) from
    ``bigbird_random_blocks``, −1 = none). idx (1, H, c, K), K = (window + global + r)·b.
    The global blocks' *rows* attend every key: see ``global_rows(n, global_blocks·b)``."""
    nb = -(-n // block)
    w = min(window_blocks // 2, nb - 1)
    qb = rows // block
    win = qb[:, None] + _ar(-w, 1 if causal else w + 1, rows)  # (c, W)
    g = min(global_blocks, nb)
    blocks = torch.cat([win, _ar(0, g, rows).expand(rows.numel(), g)], -1)[None, None]  # (1, 1, c, W + G)
    if random is not None and random.shape[-1]:
        rnd = random.to(rows.device)[:, qb]  # (H, c, r)
        blocks = torch.cat([blocks.expand(1, rnd.shape[0], -1, -1), rnd[None]], -1)
    idx = (blocks[..., None] * block + _ar(0, block, rows)).flatten(-2)
    ok = (blocks >= 0) & (blocks < nb)
    valid = ok.repeat_interleave(block, dim=-1) & _inside(idx, n)
    return idx, valid


# ---------------------------------------------------------------- random keys per row

def random_table(n: int, *, keys_per_row: int, heads: int, generator: torch.Generator,
                 causal: bool = False) -> torch.Tensor:
    """(H, n, r) keys drawn uniformly with replacement: from [0, n), or [0, i] for row i when causal."""
    u = torch.rand(heads, n, keys_per_row, generator=generator, dtype=torch.float64)
    span = (torch.arange(n, dtype=torch.float64) + 1)[None, :, None] if causal else float(n)
    top = torch.arange(n)[None, :, None] if causal else n - 1
    return torch.minimum(torch.floor(u * span).long(), torch.as_tensor(top))


def random_keys(rows, n, *, table: torch.Tensor, causal: bool = False):
    """Row i attends the keys ``table[h, i]`` (from ``random_table``) plus itself; repeats count once."""
    drawn = table.to(rows.device)[:, rows]  # (H, c, r)
    own = rows[None, :, None].expand(drawn.shape[0], -1, 1)
    idx = torch.cat([drawn, own], -1)[None]
    return idx, _inside(idx, n)


# ---------------------------------------------------------------- axial (criss-cross) on a grid

def axial_grid(n: int, grid_width: int, device=None) -> torch.Tensor:
    """(n, 2) (grid row, grid column) of each position in raster order."""
    p = torch.arange(n, device=device)
    return torch.stack([p // grid_width, p % grid_width], -1)


def axial(rows, n, *, grid_width: int, causal: bool = False):
    """Every key in the query's grid row and grid column (rows ⌈n/W⌉, raster order). K = W + ⌈n/W⌉."""
    w = grid_width
    grid_rows = -(-n // w)
    if causal and rows.numel():
        grid_rows = min(grid_rows, int(rows.max()) // w + 1)
    same_row = (rows // w)[:, None] * w + _ar(0, w, rows)
    same_col = (rows % w)[:, None] + _ar(0, grid_rows, rows) * w
    idx = torch.cat([same_row, same_col], -1)
    return idx, _inside(idx, n)


# ---------------------------------------------------------------- content-based: top-k

TOPK_LOGIT_ELEMENTS = 1 << 22  # logits held at once while choosing (16 MB of float32)


def topk(rows, n, *, q: torch.Tensor, k: torch.Tensor, keep: int, scale: float, causal: bool = False):
    """Each row's ``keep`` largest logits q_i·k_j·scale (future masked first when causal), chosen in
    sub-chunks so at most ``TOPK_LOGIT_ELEMENTS`` logits exist at once. idx (B, H, c, keep)."""
    b, h = q.shape[:2]
    keep = min(keep, n)
    step = max(1, TOPK_LOGIT_ELEMENTS // max(1, b * h * n))
    wd = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32  # float16 logits overflow
    kt = k.transpose(-1, -2).to(wd)
    parts = []
    for s in range(0, rows.numel(), step):
        r = rows[s:s + step]
        logits = torch.matmul(q[:, :, r].to(wd), kt) * scale  # (B, H, c', N)
        if causal:
            logits = logits.masked_fill(torch.arange(n, device=q.device)[None, :] > r[:, None], float("-inf"))
        parts.append(logits.topk(keep, dim=-1).indices)
    idx = torch.cat(parts, dim=-2) if parts else rows.new_zeros(b, h, 0, keep)
    valid = _inside(idx, n)
    if causal:
        valid = valid & (idx <= rows[:, None])
    return idx, valid


PATTERNS: dict[str, Pattern] = {
    "blocked_local": blocked_local,
    "dilated_window": dilated_window,
    "longformer": longformer,
    "strided_local": strided_local,
    "strided_step": strided_step,
    "sparse_strided": sparse_strided,
    "sparse_fixed": sparse_fixed,
    "bigbird": bigbird,
    "random_keys": random_keys,
    "axial": axial,
    "topk": topk,
}


def dense_mask(pattern: Pattern, n: int, *, causal: bool = False, full_rows: torch.Tensor | None = None,
               device=None, chunk: int = 1024, **params) -> torch.Tensor:
    """Evaluate ``pattern`` on every row: a bool (b, h, n, n) mask (b, h = 1 where shared), with
    j ≤ i enforced when ``causal`` and ``full_rows`` (global rows) attending every allowed key."""
    mask = None
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk), device=device)
        idx, valid = pattern(rows, n, causal=causal, **params)
        idx, valid = torch.broadcast_tensors(idx.long(), valid)
        while idx.dim() < 4:
            idx, valid = idx.unsqueeze(0), valid.unsqueeze(0)
        valid = valid & _inside(idx, n)
        if causal:
            valid = valid & (idx <= rows[:, None])
        if mask is None:
            check_budget((idx.shape[0], idx.shape[1], n, n), 1, "the dense pattern mask")
            mask = torch.zeros(idx.shape[0], idx.shape[1], n, n, dtype=torch.bool, device=device)
        _scatter_or(mask[:, :, start:start + rows.numel()], idx.clamp(0, n - 1), valid)
    if full_rows is not None and full_rows.numel():
        full_rows = full_rows.to(mask.device).long()
        cols = torch.arange(n, device=mask.device)
        mask[:, :, full_rows] = (cols[None, :] <= full_rows[:, None]) if causal else True
    return mask


def _scatter_or(dst: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor) -> None:
    """dst[..., idx] |= valid, in place (an invalid entry never clears a valid one)."""
    counts = torch.zeros(dst.shape, dtype=torch.int32, device=dst.device)
    counts.scatter_add_(-1, idx, valid.to(torch.int32))
    dst |= counts > 0
