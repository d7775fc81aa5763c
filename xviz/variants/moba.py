"""MoBA, mixture of block attention (Lu et al. 2025): each query is routed to its top-k key blocks.

The keys are cut into blocks of b positions. A query's gate score for block j is its dot product
with the block's mean key, s_ij = q_i · mean(K_j) (the paper's parameter-free router: the mean
pooling is MoBA's own choice, nothing is learned). The query attends, with exact softmax over
their union, every key of its top-k blocks. Causal (MoBA is for causal LMs): blocks after the
query's own block are never chosen, and its own block is always chosen (it is masked j ≤ i, and
its mean would read the future); we count it as one of the k places (top_k = 1 is the own block
alone), the other k − 1 being the best-scoring earlier blocks.
Not causal: the plain top-k of all blocks (our choice; the paper defines only the causal form).
top_k ≥ ⌈N/b⌉ selects every block: exact attention, causal too.
Compute: the gate scores against the ⌈N/b⌉ block means in query chunks (O(N·(N/b)·d), no N×N
tensor), then the (query, block) choices are grouped by block and each key block meets the
pieces of up to 64 queries that chose it in one matmul (``routed.selected_blocks_part``), the
pieces merged per query by log-sum-exp: O(N·k·b·d). O(N√N·d) overall at b ≈ √N with fixed k.
Artifacts: the mask (the keys of the chosen blocks), keys per row, and ``selected_blocks``
(B, H, N, k): each query's blocks (−1 where fewer than k were allowed).
Lu et al. 2025, MoBA: Mixture of Block Attention for Long-Context LLMs (arXiv:2502.13189), §2.
"""
import torch

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..kernels.lazy import lazy_views
from ..kernels.costs import sparse_cost
from ..kernels.dense import work_dtype
from ..kernels.routed import PASS_ELEMENTS, block_means, choose_blocks, selected_blocks_part, selected_keys
from ..kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention


def gate_scores(q, k_mean, block: int, causal: bool):
    """scores_for(start, stop): (B, H, c, nb) gates; causal: later blocks −inf, the own block +inf."""
    nb = k_mean.shape[-2]
    j = torch.arange(nb, device=q.device)

    def scores_for(s, e):
        scores = torch.matmul(q[:, :, s:e], k_mean.transpose(-1, -2))
        if causal:
            own = (torch.arange(s, e, device=q.device) // block)[:, None]
            scores = scores.masked_fill(j > own, float("-inf")).masked_fill(j == own, float("inf"))
        return scores

    return scores_for


def moba(q, k, v, ctx, block: int, top_k: int):
    b, h, n, d = q.shape
    cdt = work_dtype(q.dtype)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    k_mean = block_means(kc, block)
    nb = k_mean.shape[-2]
    ids, valid = choose_blocks(n, top_k, gate_scores(qc, k_mean, block, ctx.causal), b * h * nb * 2)
    out, _ = selected_blocks_part(qc, kc, vc, ctx.scale, ctx.causal, block, ids, valid)
    width = ids.shape[-1] * block
    return lazy_views(out.to(v.dtype), lambda: sparse_attention(
        q, k, v, ctx, selected_keys(ids, valid, block), width=width, compute_out=False),
        extra={"selected_blocks": torch.where(valid, ids, torch.full_like(ids, -1))})


def cost(s, block, top_k):
    b = min(block, s.n)
    nb = -(-s.n // b)
    t = min(top_k, nb)
    flops = sparse_cost(s, t * b / (2 if s.causal and top_k >= nb else 1)).flops
    gate = s.b * s.h * (2 * s.n * nb * s.d + s.n * s.d)
    # held: q, k, v, out, the block means, the choices and their partial outputs; gate scores and
    # logits live in passes of PASS_ELEMENTS
    held = s.n * (2 * s.d + 2 * s.dv) + nb * s.d + s.n * t * (s.dv + 3)
    return Cost(float(flops + gate), float(4 * s.b * s.h * held + 4 * 3 * PASS_ELEMENTS))


register_variant(VariantSpec(
    name="moba",
    display_name="MoBA (mixture of block attention)",
    family="learnable pattern",
    paper="Lu et al. 2025, MoBA: Mixture of Block Attention for Long-Context LLMs (arXiv:2502.13189)",
    complexity="O(N·(N/b)·d) gating + O(N·k·b·d); O(N√N·d) at b ≈ √N",
    complexity_class="n sqrt n",
    fn=moba,
    cost=cost,
    params=(Param("block", "int", 64, "key block size b", low=1, high="N", log=True),
            Param("top_k", "int", 3, "blocks each query attends (causal: its own block is one of them)",
                  low=1, high="N")),
    causal=True,
    row_stochastic=True,
    artifacts=(MASK, KEYS_PER_ROW,
               Artifact("selected_blocks", "ids", ("B", "H", "N", "k"), "the key blocks each query was routed to (−1: none)")),
    exact_when=lambda n, d, h: {"top_k": n},
    content_based=False,
    description="Each query attends its top-k key blocks by q · (mean key of the block); causal keeps its own block.",
))
