"""Hashing building blocks: the angular LSH of Reformer."""
from __future__ import annotations

import torch


def lsh_buckets(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Angular LSH of Andoni et al. 2015 as used by Reformer: h(x) = argmax([xR; −xR]).

    x: (..., N, d); rotations R: (..., d, buckets/2), broadcastable against x's leading dims.
    Returns (..., N) bucket ids in [0, buckets). With zero columns (buckets = 1) every id is 0.
    The hash depends only on the direction of x, so normalising x first changes nothing.
    """
    if rotations.shape[-1] == 0:
        return torch.zeros(x.shape[:-1], dtype=torch.long, device=x.device)
    proj = torch.matmul(x, rotations.to(x.dtype))
    return torch.cat([proj, -proj], dim=-1).argmax(dim=-1)
