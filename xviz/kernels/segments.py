"""Segments: contiguous, near-equal pieces of a sequence and their means (Nyström landmarks,
Linformer's pooling, memory compression)."""
from __future__ import annotations

import torch


def segment_ids(n: int, m: int, device=None) -> torch.Tensor:
    """Segment of each of n tokens when cut into m contiguous, near-equal segments (m ≤ n)."""
    return torch.arange(n, device=device) * m // n


def segment_means(x: torch.Tensor, seg: torch.Tensor, m: int) -> torch.Tensor:
    """Means of x (..., N, d) over the segments ``seg`` (N,) -> (..., m, d); every segment non-empty."""
    total = x.new_zeros(*x.shape[:-2], m, x.shape[-1]).index_add_(-2, seg, x)
    counts = torch.bincount(seg, minlength=m).to(x.dtype)
    return total / counts[:, None]
