"""Routing attention (Roy et al. 2021, Routing Transformer): attend within a k-means cluster.

What the paper does, and what we do:

- **Clustering.** The paper learns C centroids per layer and head (online k-means, updated by a
  moving average during training) on layer-normalised queries and keys. We have no training, so we
  run spherical k-means for a fixed number of ``iterations`` on the unit-normalised queries and keys
  together (2N points), starting from random unit centroids drawn from the seed (one set per head,
  like a freshly initialised layer; a random start keeps the method content-based: it does not
  depend on which positions happen to be drawn). A centroid left without members keeps its place.
- **Routing.** Query i and key j share a cluster when their nearest centroid is the same; query i
  attends the keys of its own cluster. ``window`` caps that set: a cluster offers its ``window`` keys
  nearest its centroid (the paper's per-cluster top-k window, which keeps the cost bounded when
  clusters are unbalanced). Logits are the ordinary q·k·scale.
- **Empty clusters.** A query whose cluster holds no key (or, causally, no key at or before it)
  attends nothing and gets a zero output; so rows are not all distributions (row_stochastic=False).
- **Causal** masks j > i, and nothing of a later token may shape an earlier row: centroids fitted on
  the sequence would carry every later token into every row's cluster, and a cluster's ``window``
  nearest keys are ranked among later keys too. So, causally, the centroids are the seeded random
  unit vectors themselves (the paper's are parameters, fixed once trained; ``iterations`` is not
  used) and the window cap is not applied: a query attends every earlier key of its cluster
  (O(N²/C·d) for balanced clusters). Appending tokens then moves no earlier output.

Computation: queries sorted by cluster, in pieces of 64 of one cluster, each piece against its
cluster's key list in one matmul (``clustering.grouped_attention``): O(N·window·d), no N×N tensor.
The matrix and mask come on request from the same pattern as per-query key lists (``xviz.sparse``).

``clusters`` = 0 picks ⌈√N⌉, the paper's choice for O(N^1.5·d) cost. Clusters = 1 with window ≥ N
is exact attention.

Artifacts: ``clusters`` (B, H, 2, N): [:, :, 0] query cluster ids, [:, :, 1] key cluster ids, in
[0, C); ``centroids`` (B, H, C, d), unit norm; ``mask`` (lazy, dense); ``keys_per_row`` (B, H, N).
"""
import math

import torch

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..kernels.lazy import lazy_views
from ..kernels.clustering import group_table, grouped_attention, kmeans, work_dtype
from ..kernels.costs import sparse_cost
from ..kernels.dense import unit
from ..kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention

_SALT = 202


def resolve_clusters(clusters: int, n: int) -> int:
    return clusters if clusters > 0 else max(1, math.ceil(math.sqrt(n)))


def routing(q, k, v, ctx, clusters: int, iterations: int, window: int):
    """Spherical k-means on queries and keys together; each query attends its cluster's keys."""
    b, h, n, d = q.shape
    c = resolve_clusters(clusters, n)
    wd = work_dtype(q.dtype)
    x = torch.cat([unit(q.detach().to(wd)), unit(k.detach().to(wd))], dim=2)  # (B, H, 2N, d)
    init = unit(ctx.randn(h, c, d, like=x, salt=_SALT)).expand(b, h, c, d)
    if ctx.causal:  # fixed centroids, every earlier key of the cluster: see the module docstring
        iterations, window = 0, n
    centroids, ids = kmeans(x, init, iterations, spherical=True)
    qc, kc = ids[..., :n], ids[..., n:]
    khat = x[:, :, n:]
    score = (khat * centroids.gather(2, kc.unsqueeze(-1).expand(b, h, n, d))).sum(-1)  # cosine to own centroid
    table, tvalid, _ = group_table(kc, score, c, window)  # (B, H, C, W) keys of each cluster, nearest first
    w = table.shape[-1]

    # The output: queries in pieces of one cluster against that cluster's key list (batched matmuls).
    out, counts = grouped_attention(q, k, v, ctx.scale, ctx.causal, qc, table, tvalid)

    def keys_for(rows):  # the same pattern as per-query key lists, for the matrix and the mask
        g = qc[:, :, rows].unsqueeze(-1).expand(b, h, rows.numel(), w)
        return table.gather(2, g), tvalid.gather(2, g)

    return lazy_views(out, lambda: sparse_attention(q, k, v, ctx, keys_for, w, compute_out=False), names=("mask",),
                      extra={"keys_per_row": counts, "clusters": torch.stack([qc, kc], dim=2),
                             "centroids": centroids.to(q.dtype)})


def routing_cost(s, clusters, iterations, window):
    """k-means (iterations + 1 assignments of 2N points to C centroids) plus sparse attention with
    min(window, N/C) keys per query (balanced clusters)."""
    b, h, n, d = s.b, s.h, s.n, s.d
    c = resolve_clusters(clusters, n)
    if s.causal:  # fixed centroids, no window cap: a piece meets its whole cluster (masked to j ≤ i)
        iterations, window = 0, n
    per_row = min(window, math.ceil(n / c))
    base = sparse_cost(s, per_row)
    km = b * h * (iterations + 1) * (2 * 2 * n * c * d + 2 * n * d)
    extra_bytes = 4 * b * h * (2 * n * d + c * d + c * per_row * 2 + 2 * n * 2)
    return Cost(base.flops + float(km), base.bytes + float(extra_bytes))


register_variant(VariantSpec(
    name="routing",
    display_name="Routing (k-means)",
    family="learnable pattern",
    paper="Roy, Saffar, Vaswani & Grangier 2021, Efficient Content-Based Sparse Attention with Routing "
          "Transformers (TACL; arXiv:2003.05997)",
    complexity="O(N·C·d·iterations + N·min(window, N/C)·d); C ≈ √N gives O(N^1.5·d)",
    complexity_class="n sqrt n",
    fn=routing,
    cost=routing_cost,
    params=(
        Param("clusters", "int", 0, "k-means clusters C (0 = ⌈√N⌉)", low=0, high="N", log=True),
        Param("iterations", "int", 5, "spherical k-means iterations from random unit centroids (not causal; "
              "causal runs keep the random centroids)", low=0, high=50),
        Param("window", "int", 256, "most keys a query sees: its cluster's keys nearest the centroid (not "
              "causal; causal runs read every earlier key of the cluster)", low=1, high="N", log=True),
    ),
    causal=True,
    stochastic=True,
    row_stochastic=False,  # a query whose cluster has no key gets zero output
    has_matrix=True,
    artifacts=(Artifact("clusters", "ids", ("B", "H", "2", "N"), "the cluster of each query, then of each key"),
               Artifact("centroids", "points", ("B", "H", "C", "d"), "the spherical k-means centroids"),
               MASK, KEYS_PER_ROW),
    exact_when=lambda n, d, h: {"clusters": 1, "window": n},
    content_based=True,
    description="Spherical k-means on unit queries and keys; a query attends the keys of its cluster "
                "(at most `window`, nearest the centroid first). Empty clusters give zero output.",
))
