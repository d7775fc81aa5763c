"""The plain replay: every built-in policy's plain form (``PolicySpec.plain``, written beside the policy
in ``policies.py``) run over the batch, and the mass and error of each step's kept set, one query row at a
time, in float64. Slow (display sizes only); the tests hold the chunked, batched fast paths in
``replay.py`` and ``policies.py`` to these.
"""
from __future__ import annotations

import math

import torch

from ..core.errors import XvizError
from .registry import get_policy


def reference_kept(policy: str, q, k, v, *, budget: int, prefill: int, scale: float | None = None,
                   **params) -> list[torch.Tensor]:
    """For every step t = prefill … N − 1, the (B, H, t + 1) bool set the policy's plain form keeps."""
    spec = get_policy(policy)
    if spec.plain is None:
        raise XvizError(f"the {spec.display_name} policy has no plain form to check it against.")
    b, h, n, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    params = spec.resolve(params, n=n, d=d, budget=budget, prefill=prefill)
    sets = [spec.plain(q[bi], k[bi], budget=budget, prefill=prefill, scale=scale, **params) for bi in range(b)]
    masks = []
    for si, t in enumerate(range(prefill, n)):
        m = torch.zeros(b, h, t + 1, dtype=torch.bool)
        for bi in range(b):
            for hi in range(h):
                m[bi, hi, sorted(sets[bi][hi][si])] = True
        masks.append(m)
    return masks


def reference_measures(kept: list[torch.Tensor], q, k, v, *, prefill: int, scale: float | None = None):
    """(mass, error), each (B, H, S): full causal attention's mass on each step's kept set, and the
    relative L2 error of the output restricted to it, one query row at a time."""
    b, h, n, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    mass = torch.zeros(b, h, len(kept), dtype=torch.float64)
    error = torch.zeros_like(mass)
    for si, t in enumerate(range(prefill, n)):
        for bi in range(b):
            for hi in range(h):
                logits = (k[bi, hi, :t + 1].double() @ q[bi, hi, t].double()) * scale
                full = torch.softmax(logits, 0)
                m = kept[si][bi, hi]
                part = torch.softmax(logits[m], 0)
                o_full = full @ v[bi, hi, :t + 1].double()
                o_part = part @ v[bi, hi, :t + 1][m].double()
                mass[bi, hi, si] = full[m].sum()
                error[bi, hi, si] = (o_part - o_full).norm() / o_full.norm()
    return mass, error
