"""What the LSH & clustering page shows, as data: the ids per token of a hashing or clustering run,
the matrix sorted by them with the true top-k keys kept or missed, the collision curves (theory,
measurement, this input), the recall grid the theory predicts, and the points of a 2-D projection.

Artifacts are read by their declared dims (``VariantSpec.artifact(name).dims``): "buckets" are
(B, H, rounds, N); "clusters" are (B, H, N) for query clusters or (B, H, 2, N) for query and key
clusters. Every function takes one head's tensors and returns plain dataclasses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..core.errors import ParameterError
from ..core.registry import VariantSpec
from ..analysis.lsh import (CollisionCurve, InputCollisions, RecallGrid, cluster_sizes, collision_probability,
                  collisions_on_input, measure_collisions, missed_topk, reference_weights, support_of)


def hashes(spec: VariantSpec) -> bool:
    return "buckets" in spec.artifact_names


def groups_variants(specs: Sequence[VariantSpec]) -> list[VariantSpec]:
    """The variants this page explains: those that hash (buckets) or cluster (clusters)."""
    return [s for s in specs if {"buckets", "clusters"} & set(s.artifact_names)]


@dataclass
class Groups:
    rows: torch.Tensor  # (R, N) ids: one row per round (buckets) or per side (query clusters, key clusters)
    labels: list[str]
    word: str  # "bucket" or "cluster"
    query_ids: torch.Tensor  # (N,) the ids that order the rows of the sorted matrix
    key_ids: torch.Tensor  # (N,) the ids that order its columns
    what: str  # a phrase saying what orders the matrix


def groups(spec: VariantSpec, artifacts, head: int, round_: int = 0) -> Groups:
    """The ids per token of ``head`` (batch 0): per round for hashing, queries (and keys) for clustering."""
    if hashes(spec):
        b = artifacts["buckets"]
        rows = b[0, min(head, b.shape[1] - 1)].cpu()
        r = min(round_, rows.shape[0] - 1)
        return Groups(rows, [f"round {i}" for i in range(rows.shape[0])], "bucket", rows[r], rows[r],
                      f"bucket (round {r})")
    c = artifacts["clusters"]
    c = c[0, min(head, c.shape[1] - 1)].cpu()
    two = len(spec.artifact("clusters").dims) == 4 or c.dim() == 2  # (2, N): queries, keys
    rows = c if two else c[None]
    n = rows.shape[-1]
    return Groups(rows, ["queries", "keys"][:rows.shape[0]], "cluster", rows[0],
                  rows[1] if two else torch.zeros(n, dtype=torch.long),
                  "cluster (rows: query cluster, columns: key cluster)" if two else
                  "query cluster (columns in position order)")


@dataclass
class SortedView:
    reference: torch.Tensor  # (N, N) float64: the attention the variant approximates
    row_order: torch.Tensor
    col_order: torch.Tensor
    missed: Any  # lsh.Missed
    chunk: int | None  # Reformer's chunk length in sorted order (None: no chunks)


def sorted_view(spec: VariantSpec, result, q_h: torch.Tensor, k_h: torch.Tensor, g: Groups, *, head: int,
                topk: int, causal: bool) -> SortedView | None:
    """The reference attention of one head in the groups' order, and which true top-k keys the run kept
    (None when the run has neither a mask nor a matrix). q_h, k_h: (1, 1, N, d) float64."""
    full = support_of(result)
    if full is None:
        return None
    scale = 1.0 / math.sqrt(q_h.shape[-1])
    ref = reference_weights(spec, q_h, q_h if spec.shared_qk else k_h, scale, causal)[0, 0]
    sup = full[0, min(head, full.shape[1] - 1)] if full.dim() == 4 else full
    sup = sup.cpu() if sup.dtype == torch.bool else sup.cpu().double()
    chunk = int(result.params.get("chunk", 0)) or None if hashes(spec) else None
    return SortedView(ref, g.query_ids.long().argsort(stable=True), g.key_ids.long().argsort(stable=True),
                      missed_topk(ref, sup, topk), chunk)


def effective_buckets(buckets: int) -> int:
    """An odd count (allowed only when it equals N) hashes into N − 1 buckets, as the variant does."""
    return buckets if buckets == 1 or buckets % 2 == 0 else buckets - 1


@dataclass
class Collisions:
    theta: np.ndarray  # fine grid of angles
    theory: np.ndarray  # one round's collision probability on it
    measured: CollisionCurve | None  # random pairs at coarse angles (None for one bucket)
    on_input: InputCollisions  # this input's pairs, in the run's own buckets
    max_sigma: float  # the largest |measured − theory| in binomial standard errors
    buckets: int
    rounds: int


def collision_grid(points: int = 37) -> np.ndarray:
    return np.linspace(0, math.pi, points).round(6)


def collisions(result, q_h: torch.Tensor, head: int, *, d: int, pairs: int, seed: int,
               theory=collision_probability, measure=measure_collisions) -> Collisions:
    """One round's collision probability against the angle: theory, measured on random pairs, and on this
    input's queries. ``theory``/``measure`` may be cached versions (the app passes its own)."""
    nb = effective_buckets(int(result.params.get("buckets", 2)))
    rounds = int(result.params.get("rounds", 1))
    fine = collision_grid()
    coarse = np.linspace(0, math.pi, 13)[1:-1].round(6)
    p = theory(tuple(fine), nb)
    meas = measure(tuple(coarse), nb, d, pairs, seed) if nb > 1 else None
    bk = result.artifacts["buckets"]
    on_input = collisions_on_input(q_h[0, 0], bk[0, min(head, bk.shape[1] - 1)].cpu())
    sigma = 0.0
    if meas is not None:
        se = np.sqrt(np.clip(meas.theory * (1 - meas.theory), 1e-12, None) / meas.pairs)
        sigma = float((np.abs(meas.measured - meas.theory) / se).max())
    return Collisions(fine, p, meas, on_input, sigma, nb, rounds)


def recall_theory(view: SortedView, q_h: torch.Tensor, k_h: torch.Tensor, *, rows: Sequence[int],
                  cols: Sequence[int], topk: int, shared_qk: bool, theory=collision_probability) -> RecallGrid:
    """The recall grid the collision probability predicts without chunks: each true top-k key shares a
    bucket with its query in at least one of r rounds with probability 1 − (1 − p(θ))^r, θ the angle
    between query and (unit) key — an upper bound when buckets overflow a chunk."""
    qs = q_h[0, 0]
    ks = qs if shared_qk else k_h[0, 0]
    n = qs.shape[0]
    ang = torch.arccos((torch.nn.functional.normalize(qs, dim=-1)
                        @ torch.nn.functional.normalize(ks, dim=-1).T).clamp(-1, 1))
    top = missed_topk(view.reference, torch.ones(n, n, dtype=torch.bool), topk)
    th = ang.gather(-1, top.top)[top.counted].numpy()
    fine = collision_grid()
    grid = np.full((len(rows), len(cols)), np.nan)
    for j, nb in enumerate(cols):
        pk = np.interp(th, fine, theory(tuple(fine), int(nb)))
        for i, r in enumerate(rows):
            grid[i, j] = float(np.mean(1 - (1 - pk) ** int(r))) if th.size else np.nan
    return RecallGrid(rows=list(rows), cols=list(cols), row_param="rounds", col_param="buckets", recall=grid,
                      errors={}, k=int(topk))


def recall_axes(spec: VariantSpec, n: int, d: int) -> tuple[list[int], list[int]] | None:
    """Rounds and bucket counts for the recall grid (None when the variant has no such parameters)."""
    if not {"rounds", "buckets"} <= {p.name for p in spec.params}:
        return None
    rmax = int(spec.param("rounds").bounds(n, d)[1] or 8)
    bucket = spec.param("buckets")
    cols = [x for x in (2, 4, 8, 16, 32, 64) if x <= n and bucket.valid(x, n, d)]
    return [r for r in (1, 2, 4, 8) if r <= rmax], cols


@dataclass
class Projection:
    points: torch.Tensor  # (M, d) float64: what is projected
    ids: torch.Tensor  # (M,) group of each point (colour)
    kinds: list[str]  # "query" / "key" / "centroid"
    hover: list[str]
    keep: np.ndarray  # indices drawn (an even subsample above the limit; centroids always kept)
    sizes: dict[str, np.ndarray]  # members per group, by side
    word: str


def projection(spec: VariantSpec, artifacts, q_h: torch.Tensor, k_h: torch.Tensor, head: int, round_: int,
               tokens: Sequence[str], limit: int) -> Projection:
    """The points a 2-D projection draws, coloured by group: unit queries (and keys) for hashing and
    routing, raw queries for clustered attention, plus the centroids when the run returns them."""
    n = q_h.shape[-2]
    tok = lambda i: tokens[i] if i < len(tokens) else ""  # noqa: E731
    pts, ids, kinds, hover = [], [], [], []
    if "clusters" in artifacts:
        g = groups(spec, artifacts, head)
        two = g.rows.shape[0] == 2
        pts.append(torch.nn.functional.normalize(q_h[0, 0], dim=-1) if two else q_h[0, 0])  # routing: unit vectors
        ids.append(g.rows[0])
        kinds += ["query"] * n
        hover += [f"query {i} {tok(i)}" for i in range(n)]
        if two:
            pts.append(torch.nn.functional.normalize(k_h[0, 0], dim=-1))
            ids.append(g.rows[1])
            kinds += ["key"] * n
            hover += [f"key {i} {tok(i)}" for i in range(n)]
        cmax = int(g.rows.max()) + 1
        if "centroids" in artifacts:
            cen = artifacts["centroids"][0, min(head, artifacts["centroids"].shape[1] - 1)].detach().cpu().double()
            pts.append(cen)
            ids.append(torch.arange(cen.shape[0]))
            kinds += ["centroid"] * cen.shape[0]
            hover += [f"centroid {i}" for i in range(cen.shape[0])]
            cmax = cen.shape[0]
        sizes = {"queries": cluster_sizes(g.rows[0], cmax)}
        if two:
            sizes["keys"] = cluster_sizes(g.rows[1], cmax)
        word = "cluster"
    elif "buckets" in artifacts:
        g = groups(spec, artifacts, head, round_)
        pts.append(torch.nn.functional.normalize(q_h[0, 0], dim=-1))
        ids.append(g.query_ids)
        kinds += ["query"] * n
        hover += [f"token {i} {tok(i)}" for i in range(n)]
        sizes = {"tokens": cluster_sizes(g.query_ids, int(g.rows.max()) + 1)}
        word = g.what
    else:
        raise ParameterError(f"{spec.display_name} returns neither buckets nor clusters.")
    x = torch.cat([p.double() for p in pts])
    keep = np.arange(x.shape[0])
    if x.shape[0] > limit:
        base = np.linspace(0, x.shape[0] - 1, limit).astype(np.int64)
        keep = np.union1d(base, np.nonzero(np.asarray(kinds) == "centroid")[0])
    return Projection(x, torch.cat([i.long() for i in ids]), kinds, hover, keep, sizes, word)
