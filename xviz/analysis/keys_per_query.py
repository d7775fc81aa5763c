"""Parameters matched to a keys-per-query budget: the number of keys each query reads, which every variant is
compared at, solved through its own cost model (Compare, the Explorer's defaults, Spectra)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..core.errors import XvizError
from ..core.registry import Param, Shape, VariantSpec
from ..kernels.costs import sparse_cost


def _candidates(p: Param, n: int, d: int, count: int = 48) -> list[int]:
    low, high = p.bounds(n, d)
    lo = int(math.ceil(low)) if low is not None else 1
    hi = int(math.floor(high)) if high is not None else max(lo, 4 * n)
    lo, hi = max(lo, -10**9), max(hi, lo)
    if hi - lo <= count:
        return list(range(lo, hi + 1))
    start = max(lo, 1)
    vals = {lo, hi, int(p.fit_default(n, d))}
    for i in range(count):
        vals.add(int(round(start * (hi / start) ** (i / (count - 1)))))
    return sorted(v for v in vals if lo <= v <= hi)


def target_flops(b: int, h: int, n: int, d: int, dv: int, keys_per_row: float, causal: bool = False) -> float:
    """FLOPs of sparse attention with ``keys_per_row`` keys per query: the budget every variant is
    matched to (2·N·K·(d + d_v) per head; about the same as m features or a rank-m projection)."""
    return sparse_cost(Shape(b, h, n, d, dv, causal), keys_per_row).flops


@dataclass
class Budgeted:
    params: dict  # resolved parameters
    knob: str | None  # the parameter that was tuned (None: cost does not depend on any)
    flops: float
    matched: bool  # whether the cost is within a factor 1.5 of the target


def budget_params(spec: VariantSpec, n: int, d: int, heads: int, *, keys_per_row: float, causal: bool = False,
                  dv: int | None = None, fixed: Mapping[str, Any] | None = None) -> Budgeted:
    """Parameters at which ``spec``'s own cost model matches the budget of ``keys_per_row`` keys per query.

    A variant that declares a rank parameter (``spec.low_rank``: Linformer's k, Nyström's landmarks,
    Performer's features) gets rank = keys per query — the same number of keys, landmarks or features
    per query, the comparison the low-rank papers make — rather than a FLOP match, which would give
    random-feature methods a handful of features. Otherwise one integer parameter is tuned (the one
    that gets closest to the target FLOPs; the rest keep their defaults, ``fixed`` overrides them); a
    variant whose cost depends on no parameter (exact, top-k) keeps its defaults and is marked unmatched."""
    dv = d if dv is None else dv
    target = target_flops(1, heads, n, d, dv, keys_per_row, causal)
    base_in = dict(fixed or {})
    if spec.low_rank is not None:
        rank = max(1, min(int(round(keys_per_row)), n))
        over = spec.low_rank(rank, base_in)
        try:
            resolved = spec.resolve({**base_in, **over}, n=n, d=d, heads=heads)
            flops = float(spec.cost(Shape(1, heads, n, d, dv, causal), **resolved).flops)
            return Budgeted(params=resolved, knob=next(iter(over), None), flops=flops, matched=True)
        except XvizError:
            pass  # a rank this variant cannot take here: fall back to matching FLOPs

    def cost_of(over: dict) -> tuple[dict, float] | None:
        try:
            resolved = spec.resolve({**base_in, **over}, n=n, d=d, heads=heads)
            flops = float(spec.cost(Shape(1, heads, n, d, dv, causal), **resolved).flops)
        except Exception:  # an invalid combination for this variant: not a candidate
            return None
        if not math.isfinite(flops) or flops <= 0:
            return None
        return resolved, flops

    base = cost_of({})
    if base is None:
        resolved = spec.resolve(base_in, n=n, d=d, heads=heads)
        return Budgeted(resolved, None, float("nan"), False)
    base_score = abs(math.log(base[1] / target))
    per_param = []  # (score, order, param name, resolved, flops) of each parameter's best value
    for order, p in enumerate(spec.params):
        if p.kind != "int" or p.name in base_in:
            continue
        best = None
        cands = _candidates(p, n, d)
        for _ in range(3):  # a geometric grid, then finer grids between the best value's neighbours
            tried = []
            for val in cands:
                got = cost_of({p.name: val})
                if got is None:
                    continue
                tried.append(val)
                score = abs(math.log(got[1] / target))
                if best is None or score < best[0] - 1e-12:
                    best = (score, order, p, got[0], got[1], val)
            if best is None or not tried:
                break
            v = best[5]
            lower = max((t for t in tried if t < v), default=v)
            upper = min((t for t in tried if t > v), default=v)
            if upper - lower <= 2:
                break
            cands = sorted(set(range(lower, upper + 1)) if upper - lower <= 64 else
                           {int(round(lower + (upper - lower) * i / 63)) for i in range(64)})
        if best is not None and best[0] < base_score - 1e-9:
            per_param.append(best)
    if not per_param:
        return Budgeted(params=base[0], knob=None, flops=base[1], matched=base_score <= math.log(1.5))
    close = [c for c in per_param if c[0] <= math.log(1.5)]
    # Within the tolerance, prefer a parameter flagged log (features, buckets, rank), then catalog order.
    pick = min(close, key=lambda c: (not c[2].log, c[1])) if close else min(per_param, key=lambda c: c[0])
    score, _, p, params, flops, _ = pick
    return Budgeted(params=params, knob=p.name, flops=flops, matched=score <= math.log(1.5))


def real_group_params(spec: VariantSpec, inp) -> dict:
    """A grouped-query variant on an input from a grouped-query model: its ``groups`` set to the model's own
    key/value heads (``inp.kv_group``), so the view shows the real groups. Empty otherwise."""
    group = getattr(inp, "kv_group", None)
    if not group or "groups" not in {p.name for p in spec.params}:
        return {}
    count = len(set(group))
    contiguous = list(group) == sorted(group) and len(group) % count == 0  # the variant's groups are contiguous
    return {"groups": count} if contiguous else {}
