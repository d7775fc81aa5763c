"""Why hashing and clustering find (or miss) the keys that matter.

* **Collision probability.** Reformer's angular LSH hashes x to h(x) = argmax([xR; −xR]) with R a
  d × b/2 matrix of iid N(0, 1) entries (b buckets). For two unit vectors at angle θ the b/2 pairs
  (x·r_j, y·r_j) are iid bivariate normal with unit variances and correlation ρ = cos θ, so the
  collision probability depends on θ and b only:

      p(θ) = b · P(U₁ and W₁ are the largest |U_j|, |W_j| and share a sign)
           = b · ∫∫_{u,w>0} φ_ρ(u, w) · G(u, w)^{b/2 − 1} du dw,   G(a, b) = P(|U| < a, |W| < b)

  (b = 2: p = 1 − θ/π exactly). ``collision_probability`` evaluates it numerically: the outer
  integral on a grid in whitened coordinates, G through the bivariate normal CDF written with
  Owen's T function (scipy). ``measure_collisions`` hashes random pairs at exact angles with
  ``lsh_buckets`` (the function the Reformer variant itself uses) — one fresh rotation per pair, so
  the trials are independent and the standard error is √(p(1 − p)/pairs). Over r rounds a pair is
  missed with probability (1 − p)^r.
* **Missed top-k keys.** ``missed_topk`` says, per query, which of its true top-k keys an
  approximation kept: inside its mask (sparse variants) or ranked in its own top-k (weights).
  For shared-QK variants (Reformer) the reference is exact attention with keys = unit queries and the
  diagonal masked (``reference_weights``), the attention Reformer approximates.
* **Recall against rounds and buckets** (``recall_grid``): the mean share of true top-k keys inside
  the variant's mask over a grid of two of its parameters.
* **2-D projections** (``project_2d``): scikit-learn PCA, or t-SNE on request; ``cluster_sizes``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..core.engine import run
from ..core.errors import ParameterError, XvizError
from ..core.registry import get_variant
from ..kernels.dense import dense_weights
from ..kernels.hashing import lsh_buckets

# Outer integration grid: points per axis in whitened coordinates on [−L, L].
_GRID = 241
_L = 6.5


# ---------------------------------------------------------------------------------------- theory
def _phi2(h: np.ndarray, k: np.ndarray, rho: float) -> np.ndarray:
    """Bivariate standard normal CDF P(U ≤ h, W ≤ k), correlation rho (|rho| < 1), h, k ≠ 0 (Owen 1956)."""
    from scipy.special import ndtr, owens_t

    s = math.sqrt(max(1e-300, 1.0 - rho * rho))
    a_h = (k - rho * h) / (h * s)
    a_k = (h - rho * k) / (k * s)
    beta = np.where(h * k > 0, 0.0, 0.5)
    return 0.5 * (ndtr(h) + ndtr(k)) - owens_t(h, a_h) - owens_t(k, a_k) - beta


def _collision_one(theta: float, half: int) -> float:
    if half == 0:
        return 1.0
    if half == 1:
        return 1.0 - theta / math.pi
    if theta <= 1e-9:
        return 1.0
    if theta >= math.pi - 1e-9:
        return 0.0
    rho, s = math.cos(theta), math.sin(theta)
    z = np.linspace(-_L, _L, _GRID)
    h = z[1] - z[0]
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    u, w = z1, rho * z1 + s * z2
    dens = np.exp(-0.5 * (z1 ** 2 + z2 ** 2)) / (2 * math.pi) * h * h
    keep = (u * w > 0) & (dens > 1e-300)
    a, b = np.abs(u[keep]), np.abs(w[keep])
    g = (_phi2(a, b, rho) - _phi2(-a, b, rho) - _phi2(a, -b, rho) + _phi2(-a, -b, rho))
    g = np.clip(g, 0.0, 1.0)
    return float(min(1.0, max(0.0, half * np.sum(dens[keep] * g ** (half - 1)))))


def collision_probability(theta: Any, buckets: int) -> np.ndarray:
    """Probability that two vectors at angle ``theta`` (radians, array) fall in the same bucket of one
    hashing round of ``buckets`` buckets (1 or even), for Gaussian rotations as Reformer draws them."""
    if buckets < 1 or (buckets > 1 and buckets % 2):
        raise ParameterError(f"buckets = {buckets} must be 1 or an even number (the hash uses buckets/2 "
                             "random directions and their negatives).")
    t = np.asarray(theta, dtype=np.float64)
    if np.any((t < -1e-6) | (t > math.pi + 1e-6)) or not np.all(np.isfinite(t)):
        raise ParameterError("theta must lie in [0, π].")
    t = np.clip(t, 0.0, math.pi)  # rounding at the ends
    flat = [_collision_one(float(x), buckets // 2) for x in t.reshape(-1)]
    return np.asarray(flat, dtype=np.float64).reshape(t.shape)


def miss_probability(theta: Any, buckets: int, rounds: int) -> np.ndarray:
    """Probability that two vectors at angle ``theta`` never share a bucket in ``rounds`` independent rounds."""
    return (1.0 - collision_probability(theta, buckets)) ** int(rounds)


# ---------------------------------------------------------------------------------------- measurement
def pairs_at_angle(theta: float, pairs: int, d: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``pairs`` random unit vectors x and y with angle(x, y) = theta exactly, in float64."""
    if d < 2:
        raise ParameterError(f"d = {d}: two vectors at a chosen angle need d ≥ 2.")
    x = torch.randn(pairs, d, generator=generator, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    r = torch.randn(pairs, d, generator=generator, dtype=torch.float64)
    r = r - (r * x).sum(-1, keepdim=True) * x  # orthogonal to x
    r = r / r.norm(dim=-1, keepdim=True)
    return x, math.cos(theta) * x + math.sin(theta) * r


@dataclass
class CollisionCurve:
    theta: np.ndarray  # (T,) radians
    measured: np.ndarray  # (T,) share of pairs that collided in one round
    stderr: np.ndarray  # (T,) binomial standard error of ``measured``
    theory: np.ndarray  # (T,) collision_probability(theta, buckets)
    buckets: int
    pairs: int
    d: int


def measure_collisions(thetas: Sequence[float], buckets: int, *, d: int = 64, pairs: int = 2000,
                       seed: int = 0) -> CollisionCurve:
    """Hash ``pairs`` random pairs at each angle with a fresh Gaussian rotation per pair (independent
    Bernoulli trials) through the Reformer variant's own ``lsh_buckets``; compare with the theory."""

    theory = collision_probability(np.asarray(thetas, dtype=np.float64), buckets)
    g = torch.Generator().manual_seed(int(seed))
    measured = []
    half = buckets // 2
    for t in thetas:
        x, y = pairs_at_angle(float(t), pairs, d, g)
        rot = torch.randn(pairs, 1, d, half, generator=g, dtype=torch.float64)  # one rotation per pair
        ids = lsh_buckets(torch.stack([x, y], dim=1)[:, None], rot)  # (pairs, 1, 2)
        measured.append(float((ids[..., 0] == ids[..., 1]).double().mean()))
    m = np.asarray(measured)
    return CollisionCurve(theta=np.asarray(thetas, dtype=np.float64), measured=m,
                          stderr=np.sqrt(np.clip(m * (1 - m), 1e-12, None) / pairs), theory=theory,
                          buckets=int(buckets), pairs=int(pairs), d=int(d))


@dataclass
class InputCollisions:
    """Collision rate of pairs of this input's (unit) vectors, binned by their angle."""

    centers: np.ndarray  # (bins,) bin centres, radians
    rate: np.ndarray  # (bins,) share of (pair, round) trials that collided; NaN for an empty bin
    count: np.ndarray  # (bins,) pairs in each bin


def collisions_on_input(x: torch.Tensor, buckets: torch.Tensor, bins: int = 18) -> InputCollisions:
    """x: (N, d) vectors that were hashed; buckets: (R, N) their ids per round (a variant's artifact).
    Every pair i < j contributes R trials at angle(x_i, x_j)."""
    xn = x.detach().double()
    xn = xn / xn.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n = xn.shape[0]
    iu = torch.triu_indices(n, n, 1)
    cos = (xn @ xn.T)[iu[0], iu[1]].clamp(-1, 1)
    ang = torch.arccos(cos).numpy()
    bk = buckets.reshape(-1, n)
    same = (bk[:, iu[0]] == bk[:, iu[1]]).double().mean(0).numpy()
    edges = np.linspace(0, math.pi, bins + 1)
    which = np.clip(np.digitize(ang, edges) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    total = np.bincount(which, weights=same, minlength=bins)
    rate = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return InputCollisions(centers=0.5 * (edges[:-1] + edges[1:]), rate=rate, count=count)


# ---------------------------------------------------------------------------------------- top-k
def shared_qk_weights(q: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    """The attention a shared-QK variant approximates: softmax(q · unit(q)ᵀ · scale) with a token not
    attending itself unless it has no other key (causal row 0). (…, N, N), float64."""
    qd = q.detach().double()
    qn = qd / qd.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    logits = torch.matmul(qd, qn.transpose(-1, -2)) * scale
    n = q.shape[-2]
    i = torch.arange(n)
    blocked = torch.zeros(n, n, dtype=torch.bool)
    if causal:
        blocked |= i[None, :] > i[:, None]
    eye = torch.eye(n, dtype=torch.bool)
    alone = (~blocked & ~eye).sum(-1) == 0
    blocked |= eye & ~alone[:, None]
    return torch.softmax(logits.masked_fill(blocked, float("-inf")), dim=-1)


def reference_weights(spec: Any, q: torch.Tensor, k: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    """Exact attention on (q, k), or the shared-QK attention for a variant that shares QK."""
    if spec.shared_qk:
        return shared_qk_weights(q, scale, causal)
    return dense_weights(q.detach().double(), k.detach().double(), scale, causal)


@dataclass
class Missed:
    """Which of every query's true top-k keys an approximation kept.

    top: (…, N, k) key positions of the true top-k, largest first; counted: (…, N, k) whether the key
    has positive reference weight (causal rows near the start have fewer than k keys); hit: (…, N, k)
    kept by the approximation; recall: (…, N) share of counted keys kept."""

    top: torch.Tensor
    counted: torch.Tensor
    hit: torch.Tensor
    recall: torch.Tensor

    @property
    def mean_recall(self) -> float:
        return float(self.recall.double().mean())


def missed_topk(reference: torch.Tensor, approx: torch.Tensor, k: int) -> Missed:
    """reference: (…, N, N) weights; approx: a bool mask (kept = inside it) or weights (kept = positive
    and at least the row's k-th largest approximate weight, ties in the approximation's favour — the
    rule of ``xviz.metrics.topk_recall_rows``)."""
    n = reference.shape[-1]
    k = max(1, min(int(k), n))
    ref = reference.detach().double()
    vals, top = ref.topk(k, dim=-1)
    counted = vals > 0
    a = approx.detach()
    while a.dim() < ref.dim():
        a = a.unsqueeze(0)
    a = a.expand(*ref.shape[:-2], *a.shape[-2:])
    if a.dtype == torch.bool:
        hit = a.gather(-1, top)
    else:
        a = a.double()
        thr = a.topk(k, dim=-1).values[..., -1:]
        got = a.gather(-1, top)
        hit = (got >= thr) & (got > 0)
    hit = hit & counted
    recall = hit.sum(-1).double() / counted.sum(-1).clamp(min=1)
    return Missed(top=top, counted=counted, hit=hit, recall=recall)


def support_of(result: Any) -> torch.Tensor | None:
    """What a run kept: its ``mask`` artifact when it has one, else its effective weights, else None."""
    if "mask" in result.artifacts:
        return result.artifacts["mask"]
    if result.has_matrix:
        return result.matrix()
    return None


@dataclass
class RecallGrid:
    rows: list  # values of the row parameter
    cols: list  # values of the column parameter
    row_param: str
    col_param: str
    recall: np.ndarray  # (len(rows), len(cols)) mean top-k recall; NaN where the combination is invalid
    errors: dict  # (row, col) -> message for invalid combinations
    k: int


def recall_grid(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, row_param: str = "rounds",
                rows: Sequence[int] = (1, 2, 4, 8), col_param: str = "buckets", cols: Sequence[int] = (2, 4, 8, 16),
                topk: int = 8, causal: bool = False, seeds: Sequence[int] = (0,), fixed: dict | None = None,
                scale: float | None = None) -> RecallGrid:
    """Mean recall of the true top-``topk`` keys inside variant ``name``'s mask (or top-k of its weights)
    for every (row_param, col_param) pair, averaged over ``seeds``."""
    spec = get_variant(name)
    for p in (row_param, col_param):
        spec.param(p)  # raises ParameterError naming the variant's parameters
    sc = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    ref = reference_weights(spec, q, k, sc, causal)
    out = np.full((len(rows), len(cols)), np.nan)
    errors = {}
    for i, rv in enumerate(rows):
        for j, cv in enumerate(cols):
            vals = []
            try:
                for s in seeds:
                    r = run(name, q, k, v, causal=causal, seed=int(s), scale=sc,
                            **{**(fixed or {}), row_param: rv, col_param: cv})
                    sup = support_of(r)
                    if sup is None:
                        raise ParameterError(f"{spec.display_name} has neither a mask nor a matrix.")
                    vals.append(missed_topk(ref, sup, topk).mean_recall)
            except XvizError as exc:
                errors[(rv, cv)] = str(exc)
                continue
            out[i, j] = float(np.mean(vals))
    return RecallGrid(rows=list(rows), cols=list(cols), row_param=row_param, col_param=col_param, recall=out,
                      errors=errors, k=int(topk))


# ---------------------------------------------------------------------------------------- grouping
def group_order(ids: torch.Tensor) -> torch.Tensor:
    """Positions sorted by (group id, position): (N,) ids -> (N,) order (a stable sort, as Reformer)."""
    return torch.as_tensor(ids).long().argsort(stable=True)


def cluster_sizes(ids: Any, clusters: int | None = None) -> np.ndarray:
    """Members per cluster id (ids: any shape of non-negative integers)."""
    a = np.asarray(ids.detach().cpu() if isinstance(ids, torch.Tensor) else ids).reshape(-1).astype(np.int64)
    return np.bincount(a, minlength=int(clusters or 0))


def project_2d(points: Any, method: str = "pca", *, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(M, d) points -> (M, 2): scikit-learn PCA, or t-SNE (perplexity capped below M)."""
    x = np.asarray(points.detach().cpu().double() if isinstance(points, torch.Tensor) else points, dtype=np.float64)
    if x.ndim != 2:
        raise ParameterError(f"project_2d needs an (M, d) array, got shape {x.shape}.")
    m, d = x.shape
    if m < 3:
        raise ParameterError(f"a 2-D projection needs at least 3 points, got {m}.")
    if d == 1:
        return np.concatenate([x - x.mean(), np.zeros_like(x)], axis=1)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perp = float(min(perplexity, max(1.0, (m - 1) / 3)))
        # One OpenMP thread: on a busy 2-core machine t-SNE's spinning threads slow it down ~100×.
        with threadpool_limits(limits=1, user_api="openmp"):
            return TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed,
                        max_iter=500).fit_transform(x)
    raise ParameterError(f"method = {method!r} is not one of 'pca', 'tsne'.")
