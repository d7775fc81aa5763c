"""The spectrum of attention: how low-rank the exact matrix is, and what rank-k methods reach.

For each head's exact weights A (N × N) with singular values σ₁ ≥ … ≥ σ_N:

* ``cumulative_energy``  E(k) = Σ_{i≤k} σᵢ² / Σ σᵢ² (non-decreasing, E(N) = 1); with
  ``squared=False`` the Linformer paper's normalised cumulative singular value Σ_{i≤k} σᵢ / Σ σᵢ;
* ``effective_rank``     exp(H(p)), p = σ / Σσ (Roy & Vetterli 2007): 1 for rank one, N for a flat
  spectrum; ``stable_rank`` = Σσᵢ² / σ₁²;
* ``rank_for_energy``    the smallest k with E(k) ≥ 90 / 95 / 99 %;
* ``eckart_young``       the smallest error any rank-k matrix can have (Eckart–Young–Mirsky):
  √Σ_{i>k} σᵢ² in the Frobenius norm, σ_{k+1} in the spectral norm, here relative to ‖A‖.

``lowrank_errors`` runs the low-rank variants at a comparable k — Linformer with rank k, Nyström
with k landmarks, Performer with k positive features (its implicit weights D⁻¹φ(Q)φ(K)ᵀ have rank
≤ k; trigonometric features use 2·features columns, so they get k/2), the SVD oracle at rank k —
and measures ‖A − Â‖ / ‖A‖ beside the bound. Every one of those effective matrices has rank ≤ k,
so none can beat the bound; the comparison is bidirectional (none of them has a causal form whose
matrix stays rank ≤ k).

Real model: ``model_layers`` captures every layer of a text (``xviz.inputs.from_text``);
``layer_head_energy`` is the Linformer paper's layer × head map of the energy in the top k singular
values; ``layer_head_errors`` is any variant's error on every layer and head.

Everything is computed in float64 on the CPU (an SVD of a few thousand rows takes seconds).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .. import inputs
from ..core.engine import as_4d, run
from ..core.errors import ParameterError, XvizError
from ..core.registry import get_variant, list_variants
from ..kernels.dense import dense_weights
from .metrics import compare

ENERGY_LEVELS = (0.90, 0.95, 0.99)


# ---------------------------------------------------------------------------------------- spectrum
def _heads(a: torch.Tensor) -> torch.Tensor:
    """(N, N) -> (1, N, N); (H, N, N) as is; (B, H, N, N) -> batch 0."""
    a = torch.as_tensor(a)
    if a.dim() == 2:
        return a[None]
    if a.dim() == 4:
        return a[0]
    if a.dim() == 3:
        return a
    raise ParameterError(f"expected an (N, N), (H, N, N) or (B, H, N, N) matrix, got shape {tuple(a.shape)}.")


def singular_values(a: torch.Tensor) -> np.ndarray:
    """Singular values of every head's matrix, largest first: (H, N) float64."""
    return torch.linalg.svdvals(_heads(a).detach().cpu().double()).numpy()


def cumulative_energy(s: Any, squared: bool = True) -> np.ndarray:
    """E(k) for k = 1 … N along the last axis (share of Σσ² in the first k; Σσ with squared=False)."""
    s = np.asarray(s, dtype=np.float64)
    w = s * s if squared else np.abs(s)
    tot = w.sum(-1, keepdims=True)
    e = np.cumsum(w, axis=-1) / np.where(tot > 0, tot, 1.0)
    e = np.maximum.accumulate(np.clip(e, 0.0, 1.0), axis=-1)  # monotone despite rounding
    e[..., -1] = np.where(tot[..., 0] > 0, 1.0, 0.0)
    return e


def effective_rank(s: Any) -> np.ndarray:
    """exp of the entropy of σ / Σσ (Roy & Vetterli 2007)."""
    s = np.abs(np.asarray(s, dtype=np.float64))
    p = s / np.maximum(s.sum(-1, keepdims=True), 1e-300)
    ent = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
    return np.exp(ent)


def stable_rank(s: Any) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    return (s * s).sum(-1) / np.maximum(s[..., 0] ** 2, 1e-300)


def rank_for_energy(s: Any, level: float, squared: bool = True) -> np.ndarray:
    """The smallest k with E(k) ≥ level (per row of s)."""
    e = cumulative_energy(s, squared)
    return (e < level - 1e-12).sum(-1) + 1


def eckart_young(s: Any, norm: str = "fro", relative: bool = True) -> np.ndarray:
    """Best possible error of a rank-k approximation for k = 0 … N (last axis has N + 1 entries)."""
    s = np.asarray(s, dtype=np.float64)
    zero = np.zeros(s.shape[:-1] + (1,))
    if norm == "fro":
        tail = np.cumsum((s * s)[..., ::-1], axis=-1)[..., ::-1]  # Σ_{i ≥ k+1} (1-based) at index k
        err = np.sqrt(np.concatenate([tail, zero], axis=-1))
        ref = np.sqrt((s * s).sum(-1, keepdims=True))
    elif norm == "spectral":
        err = np.concatenate([s, zero], axis=-1)
        ref = s[..., :1]
    else:
        raise ParameterError(f"norm = {norm!r} is not one of 'fro', 'spectral'.")
    return err / np.where(ref > 0, ref, 1.0) if relative else err


@dataclass
class Spectrum:
    """Per head: s (H, N) singular values; energy (H, N) E(k) for k = 1 … N; effective and stable rank (H,);
    ranks {level: (H,)} the rank needed for each energy level; ey_fro (H, N + 1) relative Eckart–Young."""

    s: np.ndarray
    energy: np.ndarray
    effective_rank: np.ndarray
    stable_rank: np.ndarray
    ranks: dict
    ey_fro: np.ndarray

    @property
    def n(self) -> int:
        return self.s.shape[-1]

    def table(self) -> list[dict]:
        return [{"head": h, "effective rank": float(self.effective_rank[h]), "stable rank": float(self.stable_rank[h]),
                 **{f"rank for {lv:.0%}": int(self.ranks[lv][h]) for lv in self.ranks}}
                for h in range(self.s.shape[0])]


def spectrum(a: torch.Tensor, levels: Sequence[float] = ENERGY_LEVELS) -> Spectrum:
    s = singular_values(a)
    return Spectrum(s=s, energy=cumulative_energy(s), effective_rank=effective_rank(s), stable_rank=stable_rank(s),
                    ranks={lv: rank_for_energy(s, lv) for lv in levels}, ey_fro=eckart_young(s, "fro"))


# ---------------------------------------------------------------------------------------- rank-k variants
LOWRANK_DEFAULT = ("linformer", "nystrom", "performer")


def rank_variants() -> list[str]:
    """The variants whose spec declares a rank parameter (``low_rank``), in catalog order."""
    return [s.name for s in list_variants() if s.low_rank is not None]


def rank_k_params(name: str, k: int, fixed: Mapping[str, Any] | None = None) -> dict:
    """Parameters of variant ``name`` at which its effective matrix has rank at most k (its spec's ``low_rank``)."""
    spec = get_variant(name)
    if spec.low_rank is None:
        raise ParameterError(f"{name!r} declares no rank parameter; rank-k variants: {', '.join(rank_variants())}.")
    return {**(fixed or {}), **spec.low_rank(int(k), fixed or {})}


def rank_grid(n: int, count: int = 10) -> list[int]:
    """About ``count`` ranks from 1 to N, geometric."""
    if n <= count:
        return list(range(1, n + 1))
    return sorted({max(1, min(n, int(round(n ** (i / (count - 1)))))) for i in range(count)})


@dataclass
class LowRankComparison:
    """ks: ranks; bound (H, len(ks)) relative Eckart–Young error at each k; errors[name]: (S, H, len(ks))
    relative error of each seed's effective matrix (NaN where the run failed); messages: what failed."""

    ks: list
    norm: str
    bound: np.ndarray
    errors: dict
    messages: list = field(default_factory=list)

    def mean(self, name: str) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.nanmean(self.errors[name], axis=0)

    def std(self, name: str) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.nanstd(self.errors[name], axis=0)


def _rel_error(a: torch.Tensor, ah: torch.Tensor, norm: str) -> np.ndarray:
    """‖A − Â‖ / ‖A‖ per head (H,)."""
    ord_ = "fro" if norm == "fro" else 2
    num = torch.linalg.matrix_norm(a - ah, ord=ord_)
    den = torch.linalg.matrix_norm(a, ord=ord_)
    return (num / den.clamp_min(1e-300)).numpy()


def lowrank_errors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ks: Sequence[int],
                   variants: Sequence[str] = LOWRANK_DEFAULT, *, norm: str = "fro", seeds: Sequence[int] = (0,),
                   scale: float | None = None, fixed: Mapping[str, Mapping[str, Any]] | None = None) -> LowRankComparison:
    """Each rank-k variant's relative error at every k of ``ks`` beside the Eckart–Young bound (bidirectional,
    float64, batch 0). q, k, v: (B, H, N, d) or (N, d)."""
    q4, k4, v4, _ = as_4d(q, k, v)
    q4, k4, v4 = (t[:1].detach().cpu().double() for t in (q4, k4, v4))
    n, d = q4.shape[-2], q4.shape[-1]
    sc = scale if scale is not None else 1.0 / math.sqrt(d)
    a = dense_weights(q4, k4, sc, causal=False)[0]  # (H, N, N)
    s = singular_values(a)
    ks = [int(x) for x in ks if 1 <= int(x) <= n]
    ey = eckart_young(s, norm)
    bound = ey[:, ks]
    errors, messages = {}, []
    for name in variants:
        errs = np.full((len(seeds), a.shape[0], len(ks)), np.nan)
        for j, kk in enumerate(ks):
            for si, seed in enumerate(seeds):
                try:
                    params = rank_k_params(name, kk, (fixed or {}).get(name))
                    r = run(name, q4, k4, v4, seed=int(seed), scale=sc, **params)
                    errs[si, :, j] = _rel_error(a, r.matrix()[0].double(), norm)
                except XvizError as exc:
                    messages.append(f"{name} at k = {kk}: {exc}")
                    break
        errors[name] = errs
    return LowRankComparison(ks=ks, norm=norm, bound=bound, errors=errors, messages=messages)


# ---------------------------------------------------------------------------------------- real model
def model_layers(text: str, model: str | None = None, max_tokens: int | None = None) -> list:
    """Every layer's SequenceInput for ``text`` (one forward pass of the model; the model is cached)."""
    return inputs.from_text_layers(text, model=model, max_tokens=max_tokens)


def attention_of(inp: Any, causal: bool | None = None) -> torch.Tensor:
    """A layer's attention (H, N, N) float64: the model's own probabilities when it kept them (and no other
    masking is asked for), else softmax(q kᵀ/√d) from the captured q, k."""
    c = inp.causal if causal is None else causal
    if inp.reference_attention is not None and c == inp.causal:
        return inp.reference_attention[0].detach().cpu().double()
    q, k = inp.q[0].detach().cpu().double(), inp.k[0].detach().cpu().double()
    return dense_weights(q, k, 1.0 / math.sqrt(q.shape[-1]), c)


def layer_head_energy(mats: Sequence[torch.Tensor], k: int, squared: bool = True) -> np.ndarray:
    """(L, H): share of each layer's and head's energy in its top ``k`` singular values (k capped at N)."""
    rows = []
    for a in mats:
        e = cumulative_energy(singular_values(a), squared)
        rows.append(e[:, min(max(1, int(k)), e.shape[-1]) - 1])
    return np.stack(rows)


def layer_head_errors(layers: Sequence[Any], name: str, params: Mapping[str, Any] | None = None, *,
                      metric: str = "rel_out", causal: bool = False, seed: int = 0, topk: int = 8) -> tuple[np.ndarray, list]:
    """(L, H) error of variant ``name`` against exact attention on each layer's heads (``xviz.metrics``
    ``metric``; NaN where it does not apply), and messages for the layers that failed."""
    out, messages = [], []
    for li, inp in enumerate(layers):
        h = inp.q.shape[1]
        try:
            ex = run("exact", inp.q, inp.k, inp.v, causal=causal, seed=seed)
            ap = run(name, inp.q, inp.k, inp.v, causal=causal, seed=seed, **dict(params or {}))
            m = compare(ex, ap, k=topk, with_matrix=ap.has_matrix)
            out.append(np.asarray(m.per_head.get(metric, [float("nan")] * h), dtype=np.float64))
        except XvizError as exc:
            messages.append(f"layer {li}: {exc}")
            out.append(np.full(h, np.nan))
    return np.stack(out), messages
