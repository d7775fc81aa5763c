"""Plain references for ``xviz.kernels.recurrent``: token-by-token loops and dense forms.

Nothing here is chunked or clever; each function is the definition written out, so the chunked
kernels can be held to it (tests/test_recurrent.py). Shapes as in ``recurrent``: q, k (B, H, N, d_k),
v (B, H, N, d_v), per-step log_decay and beta (B, H, N); states M (B, H, d_k, d_v), o_t = M_tᵀ q_t.
Loops over tokens in Python: small N only.
"""
from __future__ import annotations

import torch


def decay_loop(q, k, v, log_decay):
    """M_t = a_t M_{t−1} + k_t v_tᵀ, o_t = M_tᵀ q_t. Returns (out, states (B, H, N, d_k, d_v))."""
    m = q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    outs, states = [], []
    for t in range(q.shape[2]):
        m = log_decay[:, :, t, None, None].exp() * m + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append((q[:, :, t, :, None] * m).sum(-2))
        states.append(m)
    return torch.stack(outs, 2), torch.stack(states, 2)


def delta_loop(q, k, v, beta, log_decay):
    """M_t = a_t (I − β_t k_t k_tᵀ) M_{t−1} + β_t k_t v_tᵀ, o_t = M_tᵀ q_t (the transpose of
    DeltaNet's S_t = a_t S_{t−1}(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ, o_t = S_t q_t).
    Returns (out, states (B, H, N, d_k, d_v))."""
    m = q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    outs, states = [], []
    for t in range(q.shape[2]):
        kt, bt = k[:, :, t], beta[:, :, t, None, None]
        erase = eye - bt * kt[..., :, None] * kt[..., None, :]
        m = log_decay[:, :, t, None, None].exp() * (erase @ m) + bt * kt[..., :, None] * v[:, :, t, None, :]
        outs.append((q[:, :, t, :, None] * m).sum(-2))
        states.append(m)
    return torch.stack(outs, 2), torch.stack(states, 2)


def decay_products(log_decay):
    """D_ij = ∏_{t=j+1..i} a_t for j ≤ i, else 0, by running products row by row: (B, H, N, N)."""
    a = log_decay.exp()
    n = a.shape[-1]
    rows = [torch.zeros_like(a)]
    rows[0][..., 0] = 1
    for i in range(1, n):
        row = rows[-1] * a[..., i, None]
        row[..., i] = 1
        rows.append(row)
    return torch.stack(rows, -2)


def decay_parallel(q, k, v, log_decay):
    """The parallel (attention) form (QKᵀ ⊙ D) V, and its matrix."""
    a = (q @ k.mT) * decay_products(log_decay)
    return a @ v, a


def delta_matrix_loop(q, k, beta, log_decay):
    """The delta rule's implicit weights from its unrolled form,
    A_ij = β_j q_iᵀ (∏_{t=i..j+1} a_t (I − β_t k_t k_tᵀ)) k_j  (j ≤ i; the product applied from
    t = j+1 outwards): rows R_j = β_j k_jᵀ ∏(…) carried token by token, A_i = R q_i. (B, H, N, N)."""
    b, h, n, d = q.shape
    r = q.new_zeros(b, h, n, d)  # R_j as rows; unwritten rows stay zero
    rows = []
    for i in range(n):
        ki, bi = k[:, :, i], beta[:, :, i, None]
        # R_j ← a_i R_j (I − β_i k_i k_iᵀ) for j < i, then R_i = β_i k_iᵀ
        r = log_decay[:, :, i, None, None].exp() * (r - bi[..., None] * (r @ ki[..., :, None]) * ki[..., None, :])
        r = r.clone()
        r[:, :, i] = bi * ki
        rows.append((r @ q[:, :, i, :, None])[..., 0])
    return torch.stack(rows, -2)
