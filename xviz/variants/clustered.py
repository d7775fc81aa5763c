"""Clustered attention (Vyas, Katharopoulos & Fleuret 2020, Fast Transformers with Clustered Attention).

What the paper does, and what we do:

- **Clustering.** The queries of each head are grouped into C clusters. The paper runs k-means in
  Hamming space on B-bit LSH codes of the queries (cheap on a GPU); we run Lloyd's k-means on the
  queries themselves (what those codes approximate), for a fixed number of ``iterations``, from C
  distinct queries drawn from the seed. Each centroid is then the mean of its final members — as in
  the paper, a differentiable average of queries.
- **Clustered attention.** Each cluster's centroid attention A_c = softmax(q_c Kᵀ·scale) (C × N) is
  shared by all its members: out_i = A_{c(i)} V. Cost O(N·C·d), no N × N tensor.
- **Improved clustered** (``topk`` = k > 0, the paper's "i-clustered", §3.3): each member recomputes
  exact softmax on its centroid's top-k keys T_c, scaled by the centroid's mass m̂_c = Σ_{j∈T_c} A_c[j]
  on them, and keeps the centroid weights elsewhere:
  A_i[j] = m̂_c · softmax_{j'∈T_c}(q_i·k_{j'}·scale)[j] for j ∈ T_c, A_c[j] otherwise. Rows still sum
  to 1. Extra cost O(N·k·d): members sorted by cluster, in pieces of 64 against their centroid's
  top-k keys in one matmul (``clustering.grouped_attention``); the matrix rebuilds the same weights
  on request as a dense softmax masked to each query's top-k keys (display only).
- Not causal: a centroid averages queries from all positions, and the paper defines no causal form.
- Cross-attention (N_q ≠ N_k): the queries are clustered (C clamped to N_q; the range, like every
  parameter's, is checked against N_k), the centroids attend the N_k keys; the matrix is (N_q × N_k).

Identities: C = N is exact when the queries are distinct (each query is its own centroid); improved
with topk = N is exact for any clustering.

Artifacts: ``clusters`` (B, H, N) query cluster ids in [0, C); ``centroids`` (B, H, C, d);
``topk_keys`` (B, H, C, k) each centroid's top-k key positions (k = 0, an empty tensor, when plain).
``matrix()`` gives row i its effective weights.
"""
import torch

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..kernels.clustering import (cluster_sums, grouped_attention, kmeans, masked_softmax, random_rows, take_rows,
                                  work_dtype)
from ..core.result import Output

_SALT = 303


def clustered(q, k, v, ctx, clusters: int, iterations: int, topk: int):
    """Queries grouped by k-means; each group shares its centroid's attention (improved: exact on top-k)."""
    b, h, n, d = q.shape
    dv = v.shape[-1]
    c = min(clusters, n)  # cross-attention: the range is checked against N_k, the clusters are queries
    x = q.detach().to(work_dtype(q.dtype))
    init_rows = random_rows(b, h, n, c, ctx.generator(_SALT), q.device)  # C distinct queries
    init = x.gather(2, init_rows.unsqueeze(-1).expand(b, h, c, d))
    fitted, ids = kmeans(x, init, iterations, spherical=False)
    sums, counts = cluster_sums(q, ids, c)  # differentiable means of the final members
    centroids = torch.where((counts > 0).unsqueeze(-1), sums / counts.clamp_min(1).unsqueeze(-1),
                            fitted.to(q.dtype))
    wd = work_dtype(q.dtype)  # centroid logits at float32 for half inputs (float16 overflows at 65504)
    a = torch.softmax(torch.matmul(centroids.to(wd), k.to(wd).transpose(-1, -2)) * ctx.scale, dim=-1).to(q.dtype)
    out_c = torch.matmul(a, v)  # (B, H, C, dv)
    member = ids.unsqueeze(-1)

    artifacts = {"clusters": ids, "centroids": centroids.detach()}
    if topk == 0:
        out = out_c.gather(2, member.expand(b, h, n, dv))
        artifacts["topk_keys"] = torch.empty(b, h, c, 0, dtype=torch.long, device=q.device)

        def matrix():
            return take_rows(a, ids)

        return Output(out=out, matrix=matrix, artifacts=artifacts)

    mass, top = a.topk(topk, dim=-1)  # (B, H, C, k) the centroid's top-k keys and their weights
    m_hat = mass.sum(-1)  # (B, H, C)
    vt = v.gather(2, top.reshape(b, h, -1, 1).expand(b, h, c * topk, dv)).reshape(b, h, c, topk, dv)
    rest = out_c - torch.matmul(mass.unsqueeze(-2), vt).squeeze(-2)  # Σ_{j∉T_c} A_c[j] v_j

    # each member's exact softmax over its centroid's top-k keys: pieces of one cluster, batched matmuls
    sp_out, _ = grouped_attention(q, k, v, ctx.scale, False, ids, top, torch.ones_like(top, dtype=torch.bool))
    m_row = m_hat.gather(2, ids).unsqueeze(-1)  # (B, H, N, 1)
    out = m_row * sp_out + rest.gather(2, member.expand(b, h, n, dv))
    artifacts["topk_keys"] = top

    def matrix():  # display only: the N_q × N_k weights, the members' top-k softmax as a dense masked one
        dense = take_rows(a, ids)
        own_top = top.gather(2, member.expand(b, h, n, topk))  # (B, H, N_q, k) each query's centroid's top-k
        dense.scatter_(-1, own_top, 0.0)
        on_top = torch.zeros_like(dense, dtype=torch.bool).scatter_(-1, own_top, True)
        logits = torch.matmul(q.to(wd), k.to(wd).transpose(-1, -2)) * ctx.scale  # float32 for half inputs
        exact_on_top, _ = masked_softmax(logits, on_top)
        return dense + m_row * exact_on_top.to(q.dtype)

    return Output(out=out, matrix=matrix, artifacts=artifacts)


def clustered_cost(s, clusters, iterations, topk):
    b, h, n, nk, d, dv = s.b, s.h, s.n, s.nk, s.d, s.dv
    c = min(clusters, n)
    kk = min(topk, nk)
    kmeans_flops = (iterations + 1) * 2 * n * c * d + iterations * 2 * n * d
    attn = 2 * c * nk * (d + dv) + 2 * nk * c  # centroid logits, weights·V, the softmax
    improved = (2 * n * kk * (d + dv) + 2 * c * kk * dv + n * dv) if kk else 0
    flops = b * h * (kmeans_flops + attn + improved + n * dv)
    nbytes = 4 * b * h * ((n + nk) * (d + dv) + c * nk + c * (d + dv) + n * c // 8 + n * kk * 2)
    return Cost(float(flops), float(nbytes))


register_variant(VariantSpec(
    name="clustered",
    display_name="Clustered (Vyas)",
    family="learnable pattern",
    paper="Vyas, Katharopoulos & Fleuret 2020, Fast Transformers with Clustered Attention "
          "(NeurIPS; arXiv:2007.04825)",
    complexity="O(N·C·d·iterations) k-means + O(N·C·d) centroid attention (+ O(N·k·d) improved)",
    complexity_class="linear",
    fn=clustered,
    cost=clustered_cost,
    params=(
        Param("clusters", "int", 32, "query clusters C; each shares its centroid's attention", low=1, high="N",
              log=True),
        Param("iterations", "int", 10, "Lloyd k-means iterations on the queries", low=0, high=50),
        Param("topk", "int", 32, "improved clustered: members recompute exact softmax on the centroid's top-k "
              "keys (0 = plain clustered)", low=0, high="N", log=True),
    ),
    causal=False,
    cross=True,
    stochastic=True,
    row_stochastic=True,
    has_matrix=True,
    artifacts=(Artifact("clusters", "ids", ("B", "H", "N"), "the k-means cluster of each query"),
               Artifact("centroids", "points", ("B", "H", "C", "d"), "the cluster centroids (member means)"),
               Artifact("topk_keys", "ids", ("B", "H", "C", "k"), "each centroid's top-k keys (improved clustered)")),
    exact_when=lambda n, d, h: {"topk": n},
    content_based=True,
    description="k-means on the queries; each cluster's centroid attention is shared by its members; "
                "topk > 0 recomputes exact softmax on the centroid's top-k keys (i-clustered).",
))
