"""How far an approximation is from exact attention, and what a sparse pattern covers.

``compare(exact, approx)`` measures the distance between the exact weights A (and output AV) and
an approximation's effective weights Â (and output):

* ``rel_fro``    ‖A − Â‖_F / ‖A‖_F over the whole (B, H, N, N) stack;
* ``rel_out``    ‖O − Ô‖_F / ‖O‖_F on the outputs;
* ``rel_out_scaled`` min_s ‖O − s·Ô‖_F / ‖O‖_F per head (s = ⟨O, Ô⟩/‖Ô‖²): the output error once a
                 per-head scale is forgiven — what compares an unnormalised mixer (RetNet, Mamba-2,
                 linear attention without its normaliser) with softmax attention;
* ``corr``       Pearson correlation of the weights A and Â (all entries of a head): defined for any
                 matrix, signed or not;
* ``kl``, ``tv`` are defined between distributions only: a head whose Â has a negative weight or a row
                 summing above 1 gets NaN for both (never a negative KL or a total variation above 1);
* ``kl``         mean over rows of KL(A_i ‖ Â_i) = Σ_j a_ij log(a_ij / max(â_ij, EPS)), with 0·log 0 = 0.
                 Â is clamped from below at ``EPS`` (zeros — keys outside a sparse pattern — and the
                 negative weights of Nyström-like methods count as EPS) and *not* renormalised: for a
                 row-stochastic Â whose support covers A's this is the exact KL; otherwise every unit of
                 exact mass the approximation misses costs about log(1/EPS) ≈ 23 nats per unit;
* ``tv``         mean over rows of ½ Σ_j |a_ij − â_ij| (total variation; at most 1 for sub-stochastic rows);
* ``max_abs``    max |A − Â|;
* ``topk_recall`` mean over rows of the share of row i's true top-k keys (k capped at the number of
                 keys row i may attend) that the approximation also ranks in its top k: a true key
                 counts when its approximate weight is positive and at least the row's k-th largest
                 approximate weight (so ties count in the approximation's favour, never against it).

Every measure is also returned per head (mean over batch), for the per-head table. The
computation runs one (batch, head) slice at a time in float64 so it stays accurate and its
memory stays at a few N×N slices.

``mass_inside(mask, A)``: the share of exact attention mass inside a pattern, per query and head.
``reachability(mask, layers)``: which tokens can reach which after L layers of the pattern.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

EPS = 1e-10  # floor for the approximate weights inside the KL divergence
# A row of Â counts as a (sub-)distribution when no weight is below −NEG_TOL·max|Â| and its sum is at most
# 1 + SUM_TOL: float32 rounding of softmax rows stays far inside both; an unnormalised mixer is far outside.
NEG_TOL, SUM_TOL = 1e-6, 1e-4
METRIC_NAMES = ("rel_out", "rel_out_scaled", "rel_fro", "corr", "kl", "tv", "max_abs", "topk_recall")
METRIC_LABELS = {
    "rel_fro": "rel. Frobenius error of A",
    "rel_out": "rel. error of output",
    "rel_out_scaled": "output error, best scale per head",
    "corr": "correlation of weights",
    "kl": "row KL(exact‖approx), distributions",
    "tv": "row total variation, distributions",
    "max_abs": "max |A − Â|",
    "topk_recall": "top-k recall",
}


@dataclass
class Metrics:
    """Scalar metrics (NaN where a quantity is unavailable) and their per-head values (H,)."""

    rel_fro: float = float("nan")
    rel_out: float = float("nan")
    rel_out_scaled: float = float("nan")
    corr: float = float("nan")
    kl: float = float("nan")
    tv: float = float("nan")
    max_abs: float = float("nan")
    topk_recall: float = float("nan")
    k: int = 0
    per_head: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in METRIC_NAMES}


def _matrix_of(x: Any, what: str) -> torch.Tensor | None:
    """A weights tensor from an AttentionResult (None when it has no matrix) or a tensor."""
    if isinstance(x, torch.Tensor):
        return x
    if hasattr(x, "matrix") and hasattr(x, "has_matrix"):
        return x.matrix() if x.has_matrix else None
    raise TypeError(f"{what} must be an AttentionResult or a weights tensor, got {type(x).__name__}.")


def _out_of(x: Any) -> torch.Tensor | None:
    return x.out if hasattr(x, "out") and isinstance(getattr(x, "out"), torch.Tensor) else None


def _as4(t: torch.Tensor) -> torch.Tensor:
    while t.dim() < 4:
        t = t.unsqueeze(0)
    return t


def row_kl(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """KL(a_i ‖ max(b_i, eps)) for every row (last dimension); 0·log 0 counts as 0."""
    a = a.double()
    b = b.double().clamp(min=eps)
    pos = a > 0
    terms = torch.where(pos, a * (torch.log(torch.where(pos, a, torch.ones_like(a))) - torch.log(b)),
                        torch.zeros_like(a))
    return terms.sum(-1)


def topk_recall_rows(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Per row: the share of a's top-k keys (among its positive weights) that b also ranks in its top k."""
    n = a.shape[-1]
    k = max(1, min(int(k), n))
    true_vals, true_idx = a.topk(k, dim=-1)
    counted = true_vals > 0  # rows with fewer than k attendable keys (causal) count fewer keys
    thr = b.topk(k, dim=-1).values[..., -1:]
    got = b.gather(-1, true_idx)
    hit = (got >= thr) & (got > 0) & counted
    denom = counted.sum(-1).clamp(min=1)
    return hit.sum(-1).double() / denom


MATRIX_BLOCK_ELEMENTS = 1 << 22  # weights of all heads processed at once: rows in blocks of this many elements


def _matrix_sums(a4: torch.Tensor, b4: torch.Tensor, k: int):
    """Per (batch, head): ‖A − Â‖², ‖A‖², mean row KL, mean row TV, max |A − Â|, mean top-k recall, the
    correlation of A and Â, and whether Â's rows are (sub-)distributions, in row blocks over all heads at
    once (no Python loop over heads; temporaries of MATRIX_BLOCK_ELEMENTS), at the inputs' precision
    (float32 for float32 and half inputs, float64 for float64), sums in float64."""
    bb, hh, n, nk = a4.shape
    cdt = torch.promote_types(torch.promote_types(a4.dtype, b4.dtype), torch.float32)
    names = ("diff2", "norm2", "kl", "tv", "rec", "sx", "sy", "sxx", "syy", "sxy")
    acc = {name: torch.zeros(bb, hh, dtype=torch.float64) for name in names}
    mx, low, top_sum, big = (torch.zeros(bb, hh, dtype=torch.float64) for _ in range(4))
    step = max(1, MATRIX_BLOCK_ELEMENTS // max(1, bb * hh * nk))
    for s in range(0, n, step):
        x = a4[:, :, s:s + step].to(cdt)
        y = b4[:, :, s:s + step].to(cdt)
        d = x - y
        sums = {"diff2": d * d, "norm2": x * x, "sx": x, "sy": y, "sxx": x * x, "syy": y * y, "sxy": x * y}
        for name, t in sums.items():
            acc[name] += t.sum((-2, -1)).double().cpu()
        kl_rows = torch.xlogy(x, x).sum(-1) - (x * torch.log(y.clamp(min=EPS))).sum(-1)  # 0·log 0 = 0
        kl_rows = kl_rows.clamp(min=0)  # Gibbs: ≥ 0 for sub-stochastic rows; rounding made −7e-10 for A vs A
        acc["kl"] += kl_rows.sum(-1).double().cpu()
        acc["tv"] += (0.5 * d.abs().sum(-1)).sum(-1).double().cpu()
        mx = torch.maximum(mx, d.abs().amax((-2, -1)).double().cpu())
        low = torch.minimum(low, y.amin((-2, -1)).double().cpu())
        big = torch.maximum(big, y.abs().amax((-2, -1)).double().cpu())
        top_sum = torch.maximum(top_sum, y.sum(-1).amax(-1).double().cpu())
        acc["rec"] += topk_recall_rows(x, y, k).sum(-1).cpu()
    m = n * nk
    cov = acc["sxy"] - acc["sx"] * acc["sy"] / m
    var = (acc["sxx"] - acc["sx"] ** 2 / m).clamp(min=0) * (acc["syy"] - acc["sy"] ** 2 / m).clamp(min=0)
    corr = torch.where(var > 0, cov / var.sqrt().clamp(min=1e-300), torch.full_like(cov, float("nan")))
    distribution = (low >= -NEG_TOL * big) & (top_sum <= 1 + SUM_TOL)
    nan = torch.full_like(cov, float("nan"))
    kl, tv = (torch.where(distribution, acc[name] / n, nan) for name in ("kl", "tv"))
    return acc["diff2"], acc["norm2"], kl, tv, mx, acc["rec"] / n, corr


def _scaled_errors(oa: torch.Tensor, ob: torch.Tensor):
    """Per head: ‖O − s·Ô‖² at the best s = ⟨O, Ô⟩/‖Ô‖² (over batch and tokens), and ‖O‖²."""
    dims = (0, -2, -1)
    dot, bb, aa = (oa * ob).sum(dims), (ob * ob).sum(dims), (oa * oa).sum(dims)
    return (aa - torch.where(bb > 0, dot * dot / bb.clamp(min=1e-300), torch.zeros_like(dot))).clamp(min=0), aa


def compare(exact: Any, approx: Any, *, v: torch.Tensor | None = None, k: int = 8,
            with_matrix: bool = True, outputs: tuple[torch.Tensor, torch.Tensor] | None = None) -> Metrics:
    """Metrics of ``approx`` against ``exact``.

    exact, approx: AttentionResults (from ``xviz.run``) or weights tensors ((N, N) or (B, H, N, N)).
    When a weights tensor is given, its output is taken as A @ v (``v`` needed for ``rel_out``).
    An approximation without a matrix gets only ``rel_out``; the rest stay NaN. With
    ``with_matrix=False`` (two AttentionResults at an N too large for N×N matrices) only the
    output error is computed. ``outputs``: the two outputs, when exact and approx are given as
    matrices already built (the output error then compares the runs' own outputs).
    """
    if with_matrix:
        a = _matrix_of(exact, "exact")
        if a is None:
            raise ValueError("the exact reference must have a weights matrix.")
        b = _matrix_of(approx, "approx")
        a4 = _as4(a)
        n = a4.shape[-1]
        h = a4.shape[1]
    else:
        a = b = a4 = None
        oa = _out_of(exact)
        if oa is None:
            raise ValueError("with_matrix=False needs AttentionResults (their outputs are compared).")
        n, h = _as4(oa).shape[-2], _as4(oa).shape[1]
    metrics = Metrics(k=max(1, min(int(k), n)))

    out_a, out_b = outputs if outputs is not None else (_out_of(exact), _out_of(approx))
    if out_a is None and v is not None and a is not None:
        out_a = torch.matmul(a.to(v.dtype), v)
    if out_b is None and v is not None and b is not None:
        out_b = torch.matmul(b.to(v.dtype), v)
    per_head: dict[str, list[float]] = {}
    if out_a is not None and out_b is not None:
        oa, ob = _as4(out_a).double(), _as4(out_b).double()
        if oa.shape != ob.shape:
            raise ValueError(f"outputs differ in shape: {tuple(oa.shape)} and {tuple(ob.shape)}.")
        metrics.rel_out = float(torch.linalg.vector_norm(oa - ob) / torch.linalg.vector_norm(oa).clamp(min=1e-300))
        num = torch.linalg.vector_norm(oa - ob, dim=(-2, -1)) ** 2  # (B, H)
        den = torch.linalg.vector_norm(oa, dim=(-2, -1)) ** 2
        per_head["rel_out"] = (num.sum(0) / den.sum(0).clamp(min=1e-300)).sqrt().tolist()
        scaled, norm = _scaled_errors(oa, ob)
        metrics.rel_out_scaled = float((scaled.sum() / norm.sum().clamp(min=1e-300)).sqrt())
        per_head["rel_out_scaled"] = (scaled / norm.clamp(min=1e-300)).sqrt().tolist()

    if b is not None:
        b4 = _as4(b)
        if b4.shape[-2:] != a4.shape[-2:]:
            raise ValueError(f"weights differ in shape: {tuple(a4.shape)} and {tuple(b4.shape)}.")
        bb, hh = torch.broadcast_shapes(a4.shape[:2], b4.shape[:2])
        a4 = a4.expand(bb, hh, -1, -1)
        b4 = b4.expand(bb, hh, -1, -1)
        h = hh
        diff2, norm2, kl, tv, mx, rec, corr = _matrix_sums(a4, b4, metrics.k)
        metrics.rel_fro = float((diff2.sum() / norm2.sum().clamp(min=1e-300)).sqrt())
        metrics.corr = float(corr.mean())
        metrics.kl = float(kl.mean())  # NaN when any head's Â is not a distribution
        metrics.tv = float(tv.mean())
        metrics.max_abs = float(mx.max())
        metrics.topk_recall = float(rec.mean())
        per_head["rel_fro"] = (diff2.sum(0) / norm2.sum(0).clamp(min=1e-300)).sqrt().tolist()
        per_head["corr"] = corr.mean(0).tolist()
        per_head["kl"] = kl.mean(0).tolist()
        per_head["tv"] = tv.mean(0).tolist()
        per_head["max_abs"] = mx.amax(0).tolist()
        per_head["topk_recall"] = rec.mean(0).tolist()
    nan = [float("nan")] * h
    metrics.per_head = {name: per_head.get(name, nan) for name in METRIC_NAMES}
    return metrics


def mass_inside(mask: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Share of each query's exact attention mass that falls inside ``mask``.

    mask: bool (…, N, N) broadcastable to exact's (B, H, N, N) (a shared pattern has B = H = 1).
    Returns (B, H, N) in [0, 1] (float64); per head: ``.mean(-1)``.
    """
    a = _as4(exact)
    m = _as4(mask).to(torch.bool)
    bb, hh = torch.broadcast_shapes(a.shape[:2], m.shape[:2])
    out = torch.empty(bb, hh, a.shape[-2], dtype=torch.float64)
    a = a.expand(bb, hh, -1, -1)
    m = m.expand(bb, hh, -1, -1)
    for i in range(bb):
        for j in range(hh):
            x = a[i, j].double().cpu()
            out[i, j] = torch.where(m[i, j].cpu(), x, torch.zeros_like(x)).sum(-1) / x.sum(-1).clamp(min=1e-300)
    return out


@dataclass
class Reachability:
    """Layer-by-layer reach of a pattern.

    steps[l]: bool (N, N), token i has received information from token j after l + 1 layers
    (residual connections kept: R₁ = M ∨ I, R_{l+1} = R_l · R₁ in the boolean semiring).
    fraction[l]: share of the target pairs reached (all N² pairs; for a causal pattern, the
    N(N+1)/2 pairs j ≤ i). layers_to_full: the first layer count at which every target pair
    is reached, or None when it is not reached within the layers computed (``saturated`` says
    whether the reach stopped growing, i.e. it never will)."""

    steps: list[torch.Tensor]
    fraction: list[float]
    layers_to_full: int | None
    saturated: bool
    causal: bool


def reachability(mask: torch.Tensor, layers: int = 8, *, causal: bool | None = None) -> Reachability:
    """Reach of a single (N, N) pattern over up to ``layers`` layers (stops early when full or stuck).

    causal: whether the target is the lower triangle; by default, whether the mask has no entry above
    the diagonal. Costs one N×N×N product per layer (float32 on the mask's device).
    """
    m = mask
    while m.dim() > 2:
        m = m[0]
    m = m.to(torch.bool)
    n = m.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=m.device)
    if causal is None:
        causal = not bool(torch.triu(m, 1).any())
    target = torch.ones(n, n, dtype=torch.bool, device=m.device)
    if causal:
        target = target.tril()
    total = float(target.sum())
    r1 = (m | eye)
    r1f = r1.float()
    cur = r1
    steps, fraction = [], []
    layers_to_full = None
    saturated = False
    for layer in range(1, max(1, int(layers)) + 1):
        if layer > 1:
            nxt = torch.matmul(cur.float(), r1f) > 0
            if torch.equal(nxt, cur):
                saturated = True
                break
            cur = nxt
        steps.append(cur)
        fraction.append(float((cur & target).sum()) / total)
        if bool((cur | ~target).all()):
            layers_to_full = layer
            break
    return Reachability(steps=steps, fraction=fraction, layers_to_full=layers_to_full, saturated=saturated,
                        causal=causal)
