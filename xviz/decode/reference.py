"""Plain forms of the replay and of every built-in policy: one batch item, one head, one step at a
time, with Python sets and one softmax row per query, in float64. Slow (display sizes only); the
tests hold the chunked, batched fast paths in ``replay.py`` and ``policies.py`` to these.
"""
from __future__ import annotations

import math

import torch

from .registry import get_policy


def _row(q, k, t: int, keys, scale: float) -> dict[int, float]:
    """Query t's softmax weights over ``keys`` (q, k: (N, d) of one head)."""
    keys = sorted(keys)
    w = torch.softmax((k[keys].double() @ q[t].double()) * scale, 0).tolist()
    return dict(zip(keys, w))


def _top(scores: dict[int, float], count: int) -> set[int]:
    return set(sorted(scores, key=lambda j: (-scores[j], j))[:max(count, 0)])


def _static(name: str, t: int, budget: int, params) -> set[int]:
    if name == "full":
        return set(range(t + 1))
    if name == "window":
        return set(range(max(0, t - budget + 1), t + 1))
    s = params["sinks"]
    return set(range(min(s, t + 1))) | set(range(max(0, t - (budget - s) + 1), t + 1))


def _snapkv_prompt(q, k, budget, p, params, scale) -> set[int]:
    cap = budget - 1
    if p <= cap:
        return set(range(p))
    o = min(params["observe"], cap)
    prefix = p - o
    keep = set(range(prefix, p))
    if o == 0 or cap <= o:
        return keep
    votes = [0.0] * prefix
    for i in range(prefix, p):
        for j, w in _row(q, k, i, range(i + 1), scale).items():
            if j < prefix:
                votes[j] += w
    kk, half = params["kernel"], params["kernel"] // 2
    pooled = {}
    for j in range(prefix):
        span = range(j - half, j - half + kk)
        inside = [votes[u] for u in span if 0 <= u < prefix]
        pooled[j] = sum(inside) / kk if params["pooling"] == "avg" else max(inside)
    return keep | _top(pooled, cap - o)


def _quest(q, k, t, budget, params, scale):
    page = params["page"]
    current, read = t // page, budget // page
    chosen = set(range(current + 1))
    if current + 1 > read:
        bounds = {}
        for g in range(current):
            block = k[g * page:(g + 1) * page].double()
            hi, lo = block.max(0).values, block.min(0).values
            bounds[g] = float(torch.maximum(q[t].double() * hi, q[t].double() * lo).sum())
        chosen = _top(bounds, read - 1) | {current}
    return {j for j in range(t + 1) if j // page in chosen}


def _h2o(q, k, n, budget, p, params, scale):
    r = max(1, min(budget, int(params["recent"] * budget + 0.5)))  # positions always kept
    acc = [0.0] * n
    for i in range(p):
        for j, w in _row(q, k, i, range(i + 1), scale).items():
            acc[j] += w
    cache = set(range(p))
    if p + 1 > budget:
        old = p + 1 - r
        cache = set(range(old, p)) | _top({j: acc[j] for j in range(old)}, budget - r)
    out = []
    for t in range(p, n):
        cache.add(t)
        out.append(set(cache))
        for j, w in _row(q, k, t, cache, scale).items():
            acc[j] += w
        if len(cache) >= budget and t + 1 < n:
            cache.remove(min((j for j in cache if j <= t + 1 - r), key=lambda j: (acc[j], j)))
    return out


def _tova(qs, ks, n, budget, p, scale):
    """TOVA over a group of heads that share one kept set (one head for heads="each")."""
    def mean_row(t, keys):
        rows = [_row(q, k, t, keys, scale) for q, k in zip(qs, ks)]
        return {j: sum(r[j] for r in rows) / len(rows) for j in rows[0]}

    cache = set(range(p))
    if p + 1 > budget:
        cache = _top(mean_row(p - 1, range(p)), budget - 1)
    out = []
    for t in range(p, n):
        cache.add(t)
        out.append(set(cache))
        if len(cache) >= budget and t + 1 < n:
            w = mean_row(t, cache)
            cache.remove(min(cache, key=lambda j: (w[j], j)))
    return out


def reference_kept(policy: str, q, k, v, *, budget: int, prefill: int, scale: float | None = None,
                   **params) -> list[torch.Tensor]:
    """For every step t = prefill … N − 1, the (B, H, t + 1) bool set the policy keeps."""
    spec = get_policy(policy)
    b, h, n, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    params = spec.resolve(params, n=n, d=d, budget=budget, prefill=prefill)
    sets = [[None] * h for _ in range(b)]  # sets[b][h] = list over steps
    for bi in range(b):
        if policy == "tova" and params["heads"] == "mean":
            shared = _tova(q[bi], k[bi], n, budget, prefill, scale)
            sets[bi] = [shared] * h
            continue
        for hi in range(h):
            qh, kh = q[bi, hi], k[bi, hi]
            if policy == "h2o":
                sets[bi][hi] = _h2o(qh, kh, n, budget, prefill, params, scale)
            elif policy == "tova":
                sets[bi][hi] = _tova([qh], [kh], n, budget, prefill, scale)
            elif policy == "snapkv":
                prompt = _snapkv_prompt(qh, kh, budget, prefill, params, scale)
                sets[bi][hi] = [prompt | set(range(prefill, t + 1)) for t in range(prefill, n)]
            elif policy == "quest":
                sets[bi][hi] = [_quest(qh, kh, t, budget, params, scale) for t in range(prefill, n)]
            else:
                sets[bi][hi] = [_static(policy, t, budget, params) for t in range(prefill, n)]
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
