"""Sparse Sinkhorn attention (Tay, Bahri, Yang, Metzler & Juan 2020).

What the paper does, and what we do:

- **Blocks.** The sequence is cut into nb = ⌈N/b⌉ blocks of ``block`` = b tokens (the last one padded
  and masked when b does not divide N).
- **Sorting network.** The paper scores block pairs with a learned "meta sorting network" on pooled
  block embeddings. Having no training, we score block i against block j by the mean query of block
  i and the mean key of block j: S_ij = q̄_i · k̄_j · scale (means over real tokens only).
- **Sinkhorn.** P = Sinkhorn(S / ``temperature``), in log space for ``iterations`` rounds; each round
  normalises columns, then rows, so the rows of P sum to 1 exactly and the columns approach 1. The
  paper adds Gumbel noise while training; we do not (the result is deterministic).
- **Attention.** Query block i attends its own block's b keys plus the b slots of its soft-sorted
  block K̃_i = Σ_j P_ij K_j (slot-wise; Ṽ_i likewise), one softmax over the 2b logits — the paper's
  local + sorted mixture. A padded slot of the last block takes no weight: slot s of K̃_i mixes only
  the blocks whose slot s is real, with weights P_ij renormalised over them.
- **Effective weights.** A weight a_s on sorted slot s spreads as a_s·P_ij / (Σ_j' P_ij' over real
  slots) onto key (block j, slot s), plus the local weights on block i; ``matrix() @ v`` equals the
  output exactly and rows sum to 1.
- Not causal: block means and the permutation mix future tokens (the paper's causal form, with
  cumulative sums over blocks, is not implemented).

Cost: O(N·b·d) local + sorted attention, O(N·(N/b)·d) for the soft mixing P·K and P·V, and
O((N/b)²·(d + iterations)) for the block scores and Sinkhorn; with b ≈ √N all are O(N^1.5·d).
With block ≥ N (one block) it is exact attention.

Artifacts: ``permutation`` P (B, H, nb, nb), ``block_scores`` S (B, H, nb, nb).
"""
import math

import torch
import torch.nn.functional as F

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import Output, check_budget
from ..kernels.sparse import CHUNK_ELEMENTS


def sinkhorn_normalise(log_p: torch.Tensor, iterations: int) -> torch.Tensor:
    """Sinkhorn in log space on the last two dims: each iteration normalises columns, then rows."""
    for _ in range(iterations):
        log_p = log_p - torch.logsumexp(log_p, dim=-2, keepdim=True)
        log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
    return log_p.exp()


def _chunks(qp, kcat, keyok, scale):
    """Walk (block group, query rows) chunks so the (…, rows, 2b) logits stay under CHUNK_ELEMENTS."""
    b, h, nb, bs, _ = qp.shape
    rows = max(1, CHUNK_ELEMENTS // (b * h * 2 * bs))
    group, rc = (rows // bs, bs) if rows >= bs else (1, rows)
    all_ok = bool(keyok.all())  # only a padded last block or an empty sorted slot needs the mask
    wd = torch.promote_types(qp.dtype, torch.float32)
    for g0 in range(0, nb, group):
        g1 = min(nb, g0 + group)
        kt = kcat[:, :, g0:g1].transpose(-1, -2)
        ok = keyok[:, :, g0:g1].unsqueeze(-2)
        for r0 in range(0, bs, rc):
            r1 = min(bs, r0 + rc)
            # logits at float32 for half inputs; scale on the small side
            logits = torch.matmul(qp[:, :, g0:g1, r0:r1].to(wd) * scale, kt.to(wd))  # (B, H, G, rows, 2b)
            if not all_ok:
                logits.masked_fill_(~ok, float("-inf"))
            yield g0, g1, r0, r1, torch.softmax(logits, dim=-1).to(qp.dtype)


def sinkhorn(q, k, v, ctx, block: int, iterations: int, temperature: float):
    """Local block attention plus attention to the Sinkhorn-sorted block; see the module docstring."""
    b, h, n, d = q.shape
    dv = v.shape[-1]
    bs = block
    nb = math.ceil(n / bs)
    padded = nb * bs

    def blocks(t):
        return F.pad(t, (0, 0, 0, padded - n)).reshape(b, h, nb, bs, t.shape[-1])

    qp, kp, vp = blocks(q), blocks(k), blocks(v)
    real = (torch.arange(padded, device=q.device) < n).reshape(nb, bs)  # (nb, b) real token slots
    count = real.sum(-1).to(q.dtype).unsqueeze(-1)
    wd = torch.promote_types(q.dtype, torch.float32)  # block sums and scores at float32 for half inputs
    scores = torch.matmul(qp.to(wd).sum(3) / count.to(wd), (kp.to(wd).sum(3) / count.to(wd)).transpose(-1, -2))
    scores = scores * ctx.scale  # (B, H, nb, nb)
    perm = sinkhorn_normalise(scores / temperature, iterations).to(q.dtype)

    # sorted slot s of block i mixes the real slots s of all blocks j with weights P_ij / norm_is
    norm = torch.matmul(perm, real.to(q.dtype))  # (B, H, nb, b)
    slot_ok = norm > 0
    safe = torch.where(slot_ok, norm, torch.ones_like(norm)).unsqueeze(-1)
    ks = torch.matmul(perm, kp.reshape(b, h, nb, bs * d)).reshape(b, h, nb, bs, d) / safe
    vs = torch.matmul(perm, vp.reshape(b, h, nb, bs * dv)).reshape(b, h, nb, bs, dv) / safe
    kcat = torch.cat([kp, ks], dim=3)  # (B, H, nb, 2b, d): own block, then sorted block
    vcat = torch.cat([vp, vs], dim=3)
    keyok = torch.cat([real.expand(b, h, nb, bs), slot_ok], dim=-1)

    outp = q.new_empty(b, h, nb, bs, dv)
    for g0, g1, r0, r1, probs in _chunks(qp, kcat, keyok, ctx.scale):
        outp[:, :, g0:g1, r0:r1] = torch.matmul(probs, vcat[:, :, g0:g1])
    out = outp.reshape(b, h, padded, dv)[:, :, :n]

    def matrix():
        check_budget((b, h, padded, padded), q.element_size(), "the Sinkhorn attention matrix")
        spread = perm.unsqueeze(-1) * real.to(q.dtype) / safe.transpose(-1, -2)  # (B, H, i, j, s)
        dense = q.new_zeros(b, h, nb, bs, nb, bs)
        for g0, g1, r0, r1, probs in _chunks(qp, kcat, keyok, ctx.scale):
            local, srt = probs[..., :bs], probs[..., bs:]
            contrib = torch.einsum("bhgrs,bhgjs->bhgrjs", srt, spread[:, :, g0:g1])
            diag = contrib.diagonal(offset=g0, dim1=2, dim2=4)  # (B, H, rows, b, G): key block = own block
            diag += local.permute(0, 1, 3, 4, 2)
            dense[:, :, g0:g1, r0:r1] = contrib
        return dense.reshape(b, h, padded, padded)[:, :, :n, :n]

    return Output(out=out, matrix=matrix, artifacts={"permutation": perm, "block_scores": scores.to(q.dtype)})


def sinkhorn_cost(s, block, iterations, temperature):
    b, h, n, d, dv = s.b, s.h, s.n, s.d, s.dv
    bs = min(block, n)
    nb = math.ceil(n / bs)
    p = nb * bs
    flops = b * h * (
        2 * p * d  # block means
        + 2 * nb * nb * d  # block scores
        + 5 * iterations * nb * nb  # log-space Sinkhorn
        + 2 * nb * nb * bs * (d + dv)  # soft-sorted blocks P·K and P·V
        + 2 * p * 2 * bs * (d + dv)  # attention over own + sorted block
    )
    nbytes = 4 * b * h * (n * (2 * d + 2 * dv) + 2 * p * (d + dv) + 2 * nb * nb + p * 2 * bs)
    return Cost(float(flops), float(nbytes))


register_variant(VariantSpec(
    name="sinkhorn",
    display_name="Sinkhorn (sorted blocks)",
    family="learnable pattern",
    paper="Tay, Bahri, Yang, Metzler & Juan 2020, Sparse Sinkhorn Attention (ICML; arXiv:2002.11296)",
    complexity="O(N·b·d + N·(N/b)·d + (N/b)²·iterations); O(N^1.5·d) at b ≈ √N",
    complexity_class="n sqrt n",
    fn=sinkhorn,
    cost=sinkhorn_cost,
    params=(
        Param("block", "int", 64, "block size b; a query sees its own block and its soft-sorted partner block",
              low=1, high="N", log=True),
        Param("iterations", "int", 8, "Sinkhorn normalisation rounds (columns, then rows)", low=1, high=50),
        Param("temperature", "float", 0.75, "Sinkhorn temperature: lower is closer to a hard permutation",
              low=0.01, high=10.0, log=True),
    ),
    causal=False,
    stochastic=False,
    row_stochastic=True,
    has_matrix=True,
    artifacts=(Artifact("permutation", "matrix", ("B", "H", "blocks", "blocks"), "the soft block permutation (Sinkhorn-normalised)"),
               Artifact("block_scores", "matrix", ("B", "H", "blocks", "blocks"), "the block-pair scores before Sinkhorn")),
    exact_when=lambda n, d, h: {"block": n},
    content_based=False,  # blocks follow positions
    description="Block means score block pairs; Sinkhorn turns the scores into a soft permutation; each "
                "block attends itself and its soft-sorted partner block.",
))
