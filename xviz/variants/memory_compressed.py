"""Memory-compressed attention (Liu et al. 2018): attend to keys and values pooled with stride s.

Keys and values are averaged over consecutive blocks of ``stride`` s positions (the last block
may be shorter): K̄, V̄ have ⌈N/s⌉ rows and out = softmax(Q K̄ᵀ·scale) V̄. The paper compresses
with a learned strided convolution (kernel and stride 3); we use mean pooling, the parameter-free
version of it. The effective N × N weights spread each block's weight evenly over its keys, so
they are row-stochastic, and s = 1 is exact attention.
Causal: a pooled block mixes all of its positions, so query i sees the pooled blocks that end
before its own block, plus the raw keys of its own block up to itself (so nothing from the
future leaks; s = 1 is then exact causal attention). Not causal: pooled blocks only.
Cross-attention (N_q ≠ N_k, not causal): the N_k keys and values are pooled, the queries are
any length; the matrix is (N_q × N_k).
Compute: O(N·(N/s)·d) (causal: plus O(N·s·d)) in fused kernels (``_fused_out``: SDPA on the pooled
keys; causal, merged with the own block's raw keys), O(N) memory; the matrix from query chunks.
Liu et al. 2018, Generating Wikipedia by Summarizing Long Sequences (ICLR; arXiv:1801.10198), §4.2.3.
"""
import torch

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import Output
from ..kernels.dense import merge
from ..kernels.tiles import part_tiles
from ..kernels.flex import fused_lse
from ..kernels.patterns import blocked_local
from ..kernels.segments import segment_means

CHUNK_ELEMENTS = 1 << 24


def _chunks(q, k, ctx, stride: int):
    """Yield (start, stop, pooled probs (B, H, c, nb), local probs (B, H, c, s) or None, local idx (c, s))."""
    b, h, n, d = q.shape
    nk = k.shape[-2]
    nb = -(-nk // stride)
    block = torch.arange(nk, device=q.device) // stride
    k_bar = segment_means(k, block, nb)
    per_row = b * h * (nb + (stride * (d + 2) if ctx.causal else 0))
    step = max(1, min(n, CHUNK_ELEMENTS // per_row))
    offsets = torch.arange(stride, device=q.device)
    for start in range(0, n, step):
        stop = min(n, start + step)
        qc = q[:, :, start:stop]
        pooled = qc @ k_bar.transpose(-1, -2) * ctx.scale  # (B, H, c, nb)
        if not ctx.causal:
            yield start, stop, torch.softmax(pooled, dim=-1), None, None
            continue
        rows = torch.arange(start, stop, device=q.device)
        own = block[rows]
        pooled = pooled.masked_fill(torch.arange(nb, device=q.device) >= own[:, None], float("-inf"))
        idx = own[:, None] * stride + offsets  # (c, s) the own block's positions
        valid = idx <= rows[:, None]
        idx = idx.clamp(max=nk - 1)
        local = (k[:, :, idx] @ qc.unsqueeze(-1)).squeeze(-1) * ctx.scale  # (B, H, c, s)
        local = local.masked_fill(~valid, float("-inf"))
        p = torch.softmax(torch.cat([pooled, local], dim=-1), dim=-1)
        yield start, stop, p[..., :nb], p[..., nb:], idx


def memory_compressed(q, k, v, ctx, stride: int):
    b, h, n, _ = q.shape
    nk = k.shape[-2]  # pooled along the keys (cross-attention: N_k ≠ N_q)
    cdt = torch.promote_types(q.dtype, torch.float32)
    q, k, v_ = q.to(cdt), k.to(cdt), v.to(cdt)
    nb = -(-nk // stride)
    block = torch.arange(nk, device=q.device) // stride
    v_bar = segment_means(v_, block, nb)
    out = _fused_out(q, k, v_, segment_means(k, block, nb), v_bar, ctx, stride)

    def matrix():
        size = torch.bincount(block, minlength=nb).to(cdt)
        dense = q.new_zeros(b, h, n, nk)
        for start, stop, p_pool, p_local, idx in _chunks(q, k, ctx, stride):
            dense[:, :, start:stop] = (p_pool / size)[..., block]
            if p_local is not None:
                dense[:, :, start:stop].scatter_add_(-1, idx.expand(b, h, -1, -1), p_local)
        return dense.to(v.dtype)

    return Output(out=out.to(v.dtype), matrix=matrix, artifacts={"pooled_positions": block})  # (N_k,) block of each key


def _fused_out(q, k, v, k_bar, v_bar, ctx, stride: int):
    """The output from fused kernels: SDPA on the pooled keys; causal, the pooled blocks before the
    query's own (a block-causal mask) merged by log-sum-exp with its own block's raw keys j ≤ i
    (a one-block pattern on the tiles). ``_chunks`` (the reference) gives the matrix."""
    if not ctx.causal:
        return fused_lse(q, k_bar, v_bar, ctx.scale)[0]
    pooled = fused_lse(q, k_bar, v_bar, ctx.scale, allowed=lambda i, j: j < i // stride)
    own = blocked_local(k.shape[-2], block=stride, look_back=0, look_forward=0, causal=True)
    return merge([pooled, part_tiles(q * ctx.scale, k, v, own.parts[0], own)])


def memory_compressed_cost(shape, stride):
    b, h, n, nk, d, dv, causal = shape.b, shape.h, shape.n, shape.nk, shape.d, shape.dv, shape.causal
    s = min(stride, nk)
    nb = -(-nk // s)
    pooled = 2 * n * nb * (d + dv) * (0.5 if causal else 1.0)
    local = 2 * n * s * (d + dv) if causal else 0
    flops = b * h * (pooled + local + nk * (d + dv))
    nbytes = 4 * b * h * ((n + nk) * (d + dv) + nb * (d + dv))
    return Cost(float(flops), float(nbytes))


register_variant(VariantSpec(
    name="memory_compressed",
    display_name="Memory-compressed",
    family="memory/downsampling",
    paper="Liu et al. 2018, Generating Wikipedia by Summarizing Long Sequences (ICLR 2018; arXiv:1801.10198)",
    complexity="O(N²·d/s)",
    complexity_class="quadratic",
    fn=memory_compressed,
    cost=memory_compressed_cost,
    params=(Param("stride", "int", 4, "keys and values mean-pooled in blocks of s (s = 1 is exact)",
                  low=1, high="N", log=True),),
    causal=True,
    cross=True,
    row_stochastic=True,
    artifacts=(Artifact("pooled_positions", "ids", ("N",), "the pooled block each key falls in"),),
    exact_when=lambda n, d, h: {"stride": 1},
    content_based=False,
    description="softmax(Q K̄ᵀ/√d) V̄, K and V mean-pooled in blocks of s; causal adds the own block's raw keys.",
))
