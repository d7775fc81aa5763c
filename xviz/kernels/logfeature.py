"""Feature-map attention from *log* features, so no row underflows to zero and nothing overflows.

For positive features φ = exp(ℓ) (Performer's positive random features, elu + 1, ReLU with
ℓ = −∞ for zeros) the weights are A_ij ∝ Σ_m exp(ℓq_im + ℓk_jm). In float32, exp(ℓ) of logits in
the thousands underflows, and a row whose every product underflows comes out exactly zero (at
inputs ×30, most of Performer's rows did). Three shifts cancel exactly and keep every number in range:

- a per-feature constant a_m moved from the keys to the queries (φq_im·e^{a_m} · φk_jm·e^{−a_m}
  is the same product): with a_m = max_j ℓk_jm every key feature is ≤ 1 and each feature's largest is 1;
- a per-query constant t_i (cancels in row i's normalisation): with t_i = max_m (ℓq_im + a_m + log z_m),
  z_m = Σ_j exp(ℓk_jm − a_m) ≥ 1, row i's largest term is exactly 1, so its normaliser is ≥ 1.

Non-causal: out = D⁻¹ Q̃ (K̃ᵀ V) with Q̃ = exp(ℓq + a − t), K̃ = exp(ℓk − a): O(N·m·d), no N×N.
(Computed as (Q̃·z)(diag(1/z) K̃ᵀV): the normaliser is then a plain row sum.)
Causal: the same in query chunks of c, a_m being the running maximum over the keys seen so far (the
state Σ K̃ᵀV and z are rescaled when it grows, as in an online softmax); inside a chunk the weights
exp(L_ij) with L_ij = logsumexp_m(ℓq_im + ℓk_jm) are formed exactly, a (c, c, m) block, because the
chunk's own maximum may belong to a later key. O(N·c·m) extra work, memory O(c²·m) per head.
The matrix (display only) is formed from the same quantities; the causal one row-block by row-block
from L_ij (the plain reference the tests hold the chunked output to).
"""
from __future__ import annotations

import torch

from ..core.result import all_finite, check_budget

BLOCK_ELEMENTS = 1 << 22  # elements of one (B, H, c, c, m) or (B, H, r, N, m) block


def _finite_or_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def scaled_feature_attention(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor):
    """Non-causal feature attention from plain non-negative features fq (B, H, N, m), fk (B, H, N_k, m),
    or None where it cannot be trusted. A positive factor per query row cancels in that row's
    normalisation and one factor for all keys cancels everywhere, so each query row is divided by its
    largest feature and the keys by their largest (per batch and head): every feature is ≤ 1 and
    nothing overflows. A row whose normaliser is 0 or below the normal range (no shared support, or an
    underflow: they look alike here) returns None, and the caller takes the log-space path.
    Returns (out, matrix()) like ``log_feature_attention``."""
    tiny = torch.finfo(fq.dtype).tiny
    fq = fq / fq.amax(-1, keepdim=True).clamp_min(tiny)
    fk = fk / fk.amax((-1, -2), keepdim=True).clamp_min(tiny)
    den = torch.matmul(fq, fk.sum(-2, keepdim=True).mT)  # (B, H, N, 1)
    if not bool((den >= tiny * 2**24).all()):  # also false for NaN
        return None
    out = torch.matmul(fq, torch.matmul(fk.mT, v)) / den
    if not all_finite(out):
        return None
    return out, lambda: torch.matmul(fq, fk.mT) / den


def _chunk(bh: int, m: int, n: int) -> int:
    return max(1, min(n, 64, int((BLOCK_ELEMENTS / max(1, bh * m)) ** 0.5)))


def log_elu1(x: torch.Tensor) -> torch.Tensor:
    """log(elu(x) + 1): x for x ≤ 0, log1p(x) above; finite for every finite x, where elu(x) + 1
    itself underflows to 0 below x ≈ −87 in float32 (a row of zeros) and products overflow for huge x."""
    return torch.where(x > 0, torch.log1p(x.clamp_min(0)), x)


def log_feature_attention(lq: torch.Tensor, lk: torch.Tensor, v: torch.Tensor, causal: bool):
    """lq: (B, H, N, m), lk: (B, H, N_k, m) log features (−inf allowed: a zero feature), v (B, H, N_k, dv),
    all at the work dtype. Returns (out (B, H, N, dv), matrix() -> (B, H, N, N_k)). A row with no
    positive weight at all (only possible with −inf features) gets zero output and zero weights."""
    if not causal:
        a = _finite_or_zero(lk.amax(-2, keepdim=True))  # (B, H, 1, m)
        kt = (lk - a).exp_()  # ≤ 1
        z = kt.sum(-2, keepdim=True)  # (B, H, 1, m), ≥ 1 where the feature is used at all
        # w = Q̃·z = exp(ℓq + a + log z − t): the row's terms of the normaliser, z folded in so that
        # the N×m work is two passes (a feature with z = 0 has log z = −∞, so w = 0 there)
        w = lq + (a + torch.log(z))
        w = w.sub_(_finite_or_zero(w.amax(-1, keepdim=True)).detach()).exp_()  # the shift t cancels
        den = w.sum(-1, keepdim=True)
        safe = torch.where(den > 0, den, torch.ones_like(den))
        used = z > 0
        inv_z = torch.where(used, 1 / torch.where(used, z, torch.ones_like(z)), torch.zeros_like(z)).mT
        out = torch.matmul(w, torch.matmul(kt.transpose(-1, -2), v) * inv_z) / safe  # Q̃ = w / z

        def matrix() -> torch.Tensor:
            check_budget((*w.shape[:-1], kt.shape[-2]), w.element_size(), "the implicit attention matrix")
            return torch.matmul(w * inv_z.mT, kt.transpose(-1, -2)) / safe

        return out, matrix
    return _causal(lq, lk, v), lambda: causal_matrix(lq, lk)


def _causal(lq, lk, v, chunk: int | None = None) -> torch.Tensor:
    b, h, n, m = lq.shape
    dv = v.shape[-1]
    c = chunk or _chunk(b * h, m, n)
    a = torch.full((b, h, 1, m), float("-inf"), dtype=lq.dtype, device=lq.device)
    state = lq.new_zeros(b, h, m, dv)
    z = lq.new_zeros(b, h, 1, m)
    out = lq.new_empty(b, h, n, dv)
    tri = torch.ones(c, c, dtype=torch.bool, device=lq.device).tril()
    for s in range(0, n, c):
        e = min(n, s + c)
        fq, fk, vc = lq[:, :, s:e], lk[:, :, s:e], v[:, :, s:e]
        local = torch.logsumexp(fq.unsqueeze(-2) + fk.unsqueeze(-3), dim=-1)  # (B, H, c, c) = L_ij
        local = local.masked_fill(~tri[: e - s, : e - s], float("-inf"))
        # the state's terms in log space: ℓq_im + a_m + log z_m (−inf before any key)
        from_state = fq + a + torch.log(z)
        t = _finite_or_zero(torch.maximum(local.amax(-1, keepdim=True), from_state.amax(-1, keepdim=True)))
        w_local = torch.exp(local - t)
        w_state = torch.where(z > 0, torch.exp(fq + _finite_or_zero(a) - t), torch.zeros_like(fq))
        num = torch.matmul(w_local, vc) + torch.matmul(w_state, state)
        den = w_local.sum(-1, keepdim=True) + (w_state * z).sum(-1, keepdim=True)
        out[:, :, s:e] = num / torch.where(den > 0, den, torch.ones_like(den))
        new_a = torch.maximum(a, fk.amax(-2, keepdim=True))
        rescale = torch.where(torch.isfinite(a), torch.exp(a - _finite_or_zero(new_a)), torch.zeros_like(a))
        kt = torch.exp(fk - _finite_or_zero(new_a))
        state = state * rescale.transpose(-1, -2) + torch.matmul(kt.transpose(-1, -2), vc)
        z = z * rescale + kt.sum(-2, keepdim=True)
        a = new_a
    return out


def causal_matrix(lq: torch.Tensor, lk: torch.Tensor) -> torch.Tensor:
    """The reference: A_ij = exp(L_ij − logsumexp_{j' ≤ i} L_ij') for j ≤ i, from L_ij formed exactly."""
    b, h, n, m = lq.shape
    nk = lk.shape[-2]
    check_budget((b, h, n, nk), lq.element_size(), "the implicit attention matrix")
    out = lq.new_zeros(b, h, n, nk)
    r = max(1, BLOCK_ELEMENTS // max(1, b * h * nk * m))
    cols = torch.arange(nk, device=lq.device)
    for s in range(0, n, r):
        e = min(n, s + r)
        logits = torch.logsumexp(lq[:, :, s:e].unsqueeze(-2) + lk.unsqueeze(-3), dim=-1)  # (B, H, r, N_k)
        logits = logits.masked_fill(cols > torch.arange(s, e, device=lq.device)[:, None], float("-inf"))
        top = _finite_or_zero(logits.amax(-1, keepdim=True))
        w = torch.exp(logits - top)
        sums = w.sum(-1, keepdim=True)
        out[:, :, s:e] = w / torch.where(sums > 0, sums, torch.ones_like(sums))
    return out
