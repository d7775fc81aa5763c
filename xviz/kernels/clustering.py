"""Clustering building blocks for the learnable-pattern variants: k-means, grouping tables, grouped attention.

Everything works on (B, H, N, d) tensors (or any leading batch dims), is vectorised over tokens,
and keeps memory at O(N·C) or below: the N × C similarity matrix of an assignment step is formed in
row chunks. Clustering runs on detached inputs (it is a discrete choice, with no gradient), in
float32 for half-precision inputs and in the input precision otherwise.
"""
from __future__ import annotations

import torch

from .dense import masked_softmax, unit, work_dtype  # noqa: F401  (work_dtype: for the clustering variants)
from .sparse import CHUNK_ELEMENTS

# Elements of one (rows × clusters) similarity block in an assignment step.
ASSIGN_CHUNK_ELEMENTS = 1 << 23


def assign(x: torch.Tensor, centroids: torch.Tensor, spherical: bool) -> torch.Tensor:
    """Nearest centroid per row. x: (B, H, N, d); centroids: (B, H, C, d) -> (B, H, N) long.

    spherical: largest cosine (x and centroids are assumed unit-norm); else smallest Euclidean
    distance, computed as argmax(x·c − ‖c‖²/2). Rows are processed in chunks of the N × C scores."""
    b, h, n, _ = x.shape
    c = centroids.shape[-2]
    bias = None if spherical else -0.5 * (centroids * centroids).sum(-1).unsqueeze(-2)  # (B, H, 1, C)
    ct = centroids.transpose(-1, -2)
    step = max(1, ASSIGN_CHUNK_ELEMENTS // max(1, b * h * c))
    out = torch.empty(b, h, n, dtype=torch.long, device=x.device)
    for s in range(0, n, step):
        scores = torch.matmul(x[:, :, s:s + step], ct)
        if bias is not None:
            scores = scores + bias
        out[:, :, s:s + step] = scores.argmax(dim=-1)
    return out


def cluster_sums(x: torch.Tensor, ids: torch.Tensor, clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums of the rows of x and member counts: (B, H, C, d), (B, H, C)."""
    b, h, n, d = x.shape
    sums = x.new_zeros(b, h, clusters, d).scatter_add_(2, ids.unsqueeze(-1).expand(b, h, n, d), x)
    counts = torch.zeros(b, h, clusters, dtype=x.dtype, device=x.device).scatter_add_(
        2, ids, torch.ones_like(ids, dtype=x.dtype))
    return sums, counts


def kmeans(x: torch.Tensor, centroids: torch.Tensor, iterations: int, spherical: bool):
    """Lloyd's k-means from the given initial centroids, for a fixed number of iterations.

    Each iteration assigns every row to its nearest centroid and moves each centroid to the mean of
    its members (spherical: the normalised mean). A centroid with no members keeps its position.
    Returns (centroids, ids): the final centroids and the assignment of every row to them."""
    for _ in range(iterations):
        ids = assign(x, centroids, spherical)
        sums, counts = cluster_sums(x, ids, centroids.shape[-2])
        empty = counts == 0
        new = unit(sums) if spherical else sums / counts.clamp_min(1).unsqueeze(-1)
        centroids = torch.where(empty.unsqueeze(-1), centroids, new)
    return centroids, assign(x, centroids, spherical)


def random_rows(b: int, h: int, n: int, count: int, generator: torch.Generator, device) -> torch.Tensor:
    """``count`` distinct random row indices per (batch, head): (B, H, count), from a CPU generator."""
    return torch.rand(b, h, n, generator=generator).argsort(dim=-1)[..., :count].to(device)


def group_table(ids: torch.Tensor, score: torch.Tensor, groups: int, width: int):
    """For each group, its members ordered by descending score, at most ``width`` of them.

    ids: (B, H, N) group of each row; score: (B, H, N). Returns table (B, H, G, W) of row indices,
    valid (B, H, G, W) bool, and counts (B, H, G) of members (before the ``width`` cap), with
    W = min(width, largest group). Two stable sorts: by score, then by group; no loop over groups."""
    b, h, n = ids.shape
    order = score.argsort(dim=-1, descending=True, stable=True)
    order = order.gather(-1, ids.gather(-1, order).argsort(dim=-1, stable=True))  # by group, then score
    counts = torch.zeros(b, h, groups, dtype=torch.long, device=ids.device).scatter_add_(
        -1, ids, torch.ones_like(ids))
    starts = counts.cumsum(-1) - counts
    w = max(1, min(width, int(counts.max())))
    lane = torch.arange(w, device=ids.device)
    slot = (starts.unsqueeze(-1) + lane).clamp(max=n - 1)  # (B, H, G, W)
    table = order.gather(-1, slot.reshape(b, h, -1)).reshape(b, h, groups, w)
    valid = lane < counts.clamp(max=width).unsqueeze(-1)
    return table, valid, counts


def take_rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """t[b, h, index[b, h, i]] for every (b, h): (B, H, N, …) rows picked by a (B, H, M) index, without
    expanding the index to t's trailing size (so an N × N matrix is permuted without an N² index)."""
    b, h = index.shape[:2]
    bi = torch.arange(t.shape[0], device=t.device)[:, None, None].expand(b, h, 1)
    hi = torch.arange(t.shape[1], device=t.device)[None, :, None].expand(b, h, 1)
    return t[bi, hi, index]


def flat_rows(t: torch.Tensor) -> torch.Tensor:
    """(B, H, N, d) -> (B·H·N, d) contiguous, for ``index_select`` gathers (contiguous row copies,
    much faster on a CPU than advanced indexing with three index tensors)."""
    return t.reshape(-1, t.shape[-1])


def row_base(b: int, h: int, n: int, device) -> torch.Tensor:
    """(B, H) offsets of each (batch, head) in a ``flat_rows`` tensor."""
    return (torch.arange(b * h, device=device) * n).view(b, h)


def grouped_attention(q, k, v, scale: float, causal: bool, q_group: torch.Tensor, key_table: torch.Tensor,
                      key_valid: torch.Tensor, piece: int = 64):
    """Each query attends the keys listed for its group, as blocks of queries against key blocks.

    q_group: (B, H, N) group of each query; key_table: (B, H, G, W) key positions of each group
    (distinct within a group), key_valid: (B, H, G, W). Queries are sorted by group and cut into
    pieces of ``piece`` queries of one group; a piece meets its group's W keys in one matmul, so
    keys are gathered once per piece instead of once per query (O(N·W·d) work, O(N/piece·W·d) gathered
    key rows). Causal masking (j > i) is applied here. A query whose group has no (allowed) key gets
    zero output. Returns out (B, H, N, dv) and the number of keys each query attended (B, H, N) int32.
    """
    b, h, n, d = q.shape
    dv = v.shape[-1]
    groups, w = key_table.shape[-2:]
    dev = q.device
    base = row_base(b, h, n, dev)
    kbase = row_base(b, h, k.shape[-2], dev)  # keys may be another length (cross-attention)
    qf, kf, vf = flat_rows(q), flat_rows(k), flat_rows(v)
    qorder = q_group.argsort(dim=-1, stable=True)
    qcount = torch.zeros(b, h, groups, dtype=torch.long, device=dev).scatter_add_(-1, q_group, torch.ones_like(q_group))
    qstart = qcount.cumsum(-1) - qcount
    npieces = (qcount + piece - 1) // piece
    cum = npieces.cumsum(-1)
    total = cum[..., -1:]  # (B, H, 1)
    p_max = int(total.max())
    p = torch.arange(p_max, device=dev).expand(b, h, p_max)
    pg = torch.searchsorted(cum, p.contiguous(), right=True).clamp(max=groups - 1)  # group of each piece
    pj = p - (cum.gather(-1, pg) - npieces.gather(-1, pg))  # index of the piece inside its group
    within = pj.unsqueeze(-1) * piece + torch.arange(piece, device=dev)  # (B, H, P, S)
    rvalid = (p < total).unsqueeze(-1) & (within < qcount.gather(-1, pg).unsqueeze(-1))
    slot = (qstart.gather(-1, pg).unsqueeze(-1) + within).clamp(max=n - 1)
    qpos = qorder.gather(-1, slot.reshape(b, h, -1)).reshape(b, h, p_max, piece)
    at = pg.unsqueeze(-1).expand(b, h, p_max, w)
    kpos, kval = key_table.gather(2, at), key_valid.gather(2, at)

    outs, counts = [], []
    step = max(1, CHUNK_ELEMENTS // max(1, b * h * w * max(piece, d + dv)))  # pieces per pass
    for s0 in range(0, p_max, step):
        s1 = min(p_max, s0 + step)
        qp, kp = qpos[:, :, s0:s1], kpos[:, :, s0:s1]
        qb = qf.index_select(0, (qp + base[..., None, None]).reshape(-1)).view(b, h, s1 - s0, piece, d)
        kflat = (kp + kbase[..., None, None]).reshape(-1)
        kb = kf.index_select(0, kflat).view(b, h, s1 - s0, w, d)
        vb = vf.index_select(0, kflat).view(b, h, s1 - s0, w, dv)
        valid = kval[:, :, s0:s1].unsqueeze(-2) & rvalid[:, :, s0:s1].unsqueeze(-1)  # (B, H, pc, S, W)
        if causal:
            valid = valid & (kp.unsqueeze(-2) <= qp.unsqueeze(-1))
        wd = work_dtype(q.dtype)  # logits and softmax at float32 for half inputs
        probs, _ = masked_softmax(torch.matmul(qb.to(wd), kb.to(wd).transpose(-1, -2)) * scale, valid)
        outs.append(torch.matmul(probs.to(q.dtype), vb))
        counts.append(valid.sum(-1, dtype=torch.int32))
    dest = torch.where(rvalid, qpos + base[..., None, None], torch.full_like(qpos, b * h * n)).reshape(-1)
    out = q.new_zeros(b * h * n + 1, dv).index_copy(0, dest, torch.cat(outs, dim=2).reshape(-1, dv))
    cnt = torch.zeros(b * h * n + 1, dtype=torch.int32, device=dev).index_copy(
        0, dest, torch.cat(counts, dim=2).reshape(-1))
    return out[:-1].view(b, h, n, dv), cnt[:-1].view(b, h, n)
