"""Attention through feature maps: out = D⁻¹ φ(Q) (φ(K)ᵀ V), never forming the N×N product.

Used by Performer, linear (elu+1) and cosFormer. The causal form carries the running sums
S = Σ φ(k_j) v_jᵀ and z = Σ φ(k_j) across query chunks and uses a masked c×c product inside a
chunk, so memory stays O(N·m + c²) instead of the O(N·m·d) of a full prefix sum.
"""
from __future__ import annotations

import torch

from ..core.result import Output, check_budget
from .costs import CAUSAL_CHUNK


def _safe(den: torch.Tensor) -> torch.Tensor:
    # A row whose weights are all zero (ReLU features) gets zero output instead of NaN.
    return torch.where(den == 0, torch.ones_like(den), den)


def linear_attention(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, causal: bool,
                     chunk: int = CAUSAL_CHUNK) -> torch.Tensor:
    """phi_q, phi_k: (B, H, N, m); v: (B, H, N, dv) -> (B, H, N, dv)."""
    if not causal:
        kv = torch.matmul(phi_k.transpose(-1, -2), v)  # (B, H, m, dv)
        z = phi_k.sum(dim=-2)  # (B, H, m)
        num = torch.matmul(phi_q, kv)
        den = torch.matmul(phi_q, z.unsqueeze(-1))
        return num / _safe(den)
    b, h, n, m = phi_q.shape
    state = phi_q.new_zeros(b, h, m, v.shape[-1])
    z = phi_q.new_zeros(b, h, m, 1)
    out = torch.empty(b, h, n, v.shape[-1], dtype=v.dtype, device=v.device)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        fq, fk, vc = phi_q[:, :, s:e], phi_k[:, :, s:e], v[:, :, s:e]
        local = torch.matmul(fq, fk.transpose(-1, -2)).tril()  # (B, H, c, c), j <= i inside the chunk
        num = torch.matmul(local, vc) + torch.matmul(fq, state)
        den = local.sum(dim=-1, keepdim=True) + torch.matmul(fq, z)
        out[:, :, s:e] = num / _safe(den)
        state = state + torch.matmul(fk.transpose(-1, -2), vc)
        z = z + fk.sum(dim=-2).unsqueeze(-1)
    return out


def linear_attention_matrix(phi_q: torch.Tensor, phi_k: torch.Tensor, causal: bool) -> torch.Tensor:
    """The implicit normalised weights: rows of φ(Q)φ(K)ᵀ (lower-triangular when causal) over their sums."""
    b, h, n, _ = phi_q.shape
    check_budget((b, h, n, n), phi_q.element_size(), "the implicit attention matrix")
    a = torch.matmul(phi_q, phi_k.transpose(-1, -2))
    if causal:
        a = a.tril()
    return a / _safe(a.sum(dim=-1, keepdim=True))


def kernel_output(phi_q, phi_k, v, causal, artifacts) -> Output:
    """Run ``linear_attention`` on features (computed at ≥ float32) and return out and the lazy
    implicit matrix at v's dtype."""
    out = linear_attention(phi_q, phi_k, v.to(phi_q.dtype), causal).to(v.dtype)
    return Output(out=out, matrix=lambda: linear_attention_matrix(phi_q, phi_k, causal).to(v.dtype),
                  artifacts=artifacts)
