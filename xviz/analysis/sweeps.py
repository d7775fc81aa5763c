"""Sweeps: a variant's error against one of its parameters, against N, or against the logit scale.

``sweep`` is a generator: it yields one ``Point`` (mean, std and every seed's value) as soon as each
(series, x) is computed, so a caller can draw the partial curve while it runs, and it checks
``stop`` (a callable returning True, or anything with ``is_set()`` such as a threading.Event) before
every single run: once a stop is requested it yields nothing more and returns. Points come x by x,
every series at one x before the next x, so all curves grow together.

Axes:
* ``"param"``  x is the value of each series' own parameter (``Series.param``: features, rank,
  landmarks, window, buckets, rounds, block …); the input is fixed.
* ``"n"``      x is the sequence length; ``make_input(n, seed)`` gives the input at each N.
* ``"scale"``  x multiplies the default logit scale 1/√d (exact attention gets the same scale).

Seeds: each of ``seeds`` is both the variant's seed and the seed handed to ``make_input`` (so a
synthetic input is redrawn; a fixed input only varies the variant's own randomness — a deterministic
variant on a fixed input then has std 0). The exact reference is computed once per (input, scale).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..core.engine import run
from ..core.errors import ParameterError, XvizError
from .metrics import compare

AXES = ("param", "n", "scale")
MATRIX_METRICS = ("rel_fro", "corr", "kl", "tv", "max_abs", "topk_recall")


@dataclass(frozen=True)
class Series:
    """One curve: variant ``name`` with ``params`` fixed; ``param``: the parameter swept on axis "param"."""

    name: str
    params: tuple = ()  # ((name, value), …), hashable
    param: str | None = None
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or (f"{self.name}: {self.param}" if self.param else self.name)


@dataclass
class Point:
    series: str  # Series.title
    variant: str
    x: float
    mean: float
    std: float
    values: list  # one per seed that ran (NaN entries dropped)
    seconds: float  # mean wall time of the variant's runs
    index: int  # 1-based count of points yielded so far
    total: int  # points the whole sweep would yield
    error: str = ""


def _stopped(stop: Any) -> bool:
    if stop is None:
        return False
    if hasattr(stop, "is_set"):
        return bool(stop.is_set())
    return bool(stop())


def param_values(spec: Any, param: str, n: int, d: int, count: int = 7) -> list:
    """About ``count`` values of a numeric parameter between its bounds at this shape (geometric when
    the parameter is flagged log or spans more than a factor 20; integers deduplicated)."""
    p = spec.param(param)
    if p.kind not in ("int", "float"):
        raise ParameterError(f"{spec.display_name}'s {param} is a {p.kind} parameter; a sweep needs a number.")
    low, high = p.bounds(n, d)
    lo = float(low) if low is not None else 1.0
    hi = float(high) if high is not None else max(lo * 64, 64.0)
    if p.kind == "int":
        lo = max(lo, 1.0) if hi >= 1 else lo
    if hi <= lo:
        return [int(lo) if p.kind == "int" else lo]
    if (p.log or hi / max(lo, 1e-12) > 20) and lo > 0:
        raw = [lo * (hi / lo) ** (i / (count - 1)) for i in range(count)]
    else:
        raw = [lo + (hi - lo) * i / (count - 1) for i in range(count)]
    if p.kind == "int":
        vals = sorted({int(round(x)) for x in raw})
        # a value the parameter's rule refuses (Reformer's odd buckets) moves to its next valid neighbour
        fixed = {next((y for y in (x, x + 1, x - 1) if p.valid(y, n, d)), None) for x in vals}
        return sorted(x for x in fixed if x is not None)
    return raw


def n_values(nmax: int, count: int) -> list[int]:
    """About ``count`` sequence lengths, geometric, from min(64, nmax/8) (at least 8) up to ``nmax``."""
    nmin = min(nmax, max(8, min(64, nmax // 8)))
    return sorted({int(round(nmin * (nmax / nmin) ** (i / max(1, count - 1)))) for i in range(count)})


def default_param(spec: Any) -> str | None:
    """The parameter a sweep picks first: a numeric one flagged log (features, rank, buckets), else the first numeric."""
    nums = [p for p in spec.params if p.kind in ("int", "float")]
    logs = [p for p in nums if p.log]
    pick = logs or nums
    return pick[0].name if pick else None


def _metric_value(exact, approx, metric: str, topk: int) -> float:
    need_matrix = metric in MATRIX_METRICS
    if need_matrix and not approx.has_matrix:
        return float("nan")
    m = compare(exact, approx, k=topk, with_matrix=need_matrix)
    return float(getattr(m, metric))


def sweep(series: Sequence[Series], axis: str, values: Sequence[float] | Mapping[str, Sequence[float]],
          make_input: Callable[[int, int], tuple], *, n: int | None = None, seeds: Sequence[int] = (0, 1, 2),
          metric: str = "rel_out", causal: bool = False, topk: int = 8, stop: Any = None,
          skip: Iterable[tuple[str, float]] = ()) -> Iterator[Point]:
    """Yield a Point per (series, x): the error ``metric`` (see ``xviz.metrics``) of each series against
    exact attention, mean and std over ``seeds``.

    values: the x values (axis "n": lengths; "scale": multipliers of 1/√d; "param": parameter values, or a
    mapping from a series' title to its own values). make_input(n, seed) -> (q, k, v); n: the length used on
    the "param" and "scale" axes. skip: (series title, x) pairs already computed (to resume)."""
    if axis not in AXES:
        raise ParameterError(f"axis = {axis!r} is not one of {', '.join(AXES)}.")
    if axis != "n" and n is None:
        raise ParameterError(f"the {axis} axis needs n, the sequence length of the fixed input.")
    if not series:
        return
    for s in series:
        if axis == "param" and not s.param:
            raise ParameterError(f"series {s.title!r} names no parameter to sweep.")
    per_series = {s.title: list(values[s.title] if isinstance(values, Mapping) else values) for s in series}
    done = set((str(a), float(b)) for a, b in skip)
    length = max((len(v) for v in per_series.values()), default=0)
    total = sum(len(v) for v in per_series.values())
    inputs: dict[tuple, tuple] = {}
    exacts: dict[tuple, Any] = {}
    count = 0

    def get_input(nn: int, seed: int):
        key = (nn, seed)
        if key not in inputs:
            if len(inputs) > 16:
                inputs.clear()
                exacts.clear()
            inputs[key] = make_input(nn, seed)
        return inputs[key]

    for i in range(length):
        for s in series:
            xs = per_series[s.title]
            if i >= len(xs):
                continue
            x = xs[i]
            if (s.title, float(x)) in done:
                count += 1
                continue
            vals, secs, err = [], [], ""
            for seed in seeds:
                if _stopped(stop):
                    return
                nn = int(x) if axis == "n" else int(n)
                q, k, v = get_input(nn, int(seed))
                mult = float(x) if axis == "scale" else 1.0
                scale = mult / math.sqrt(q.shape[-1])
                params = dict(s.params)
                if axis == "param":
                    params[s.param] = x
                try:
                    ekey = (nn, int(seed), mult)
                    if ekey not in exacts:
                        exacts[ekey] = run("exact", q, k, v, causal=causal, scale=scale)
                    t0 = time.perf_counter()
                    r = run(s.name, q, k, v, causal=causal, seed=int(seed), scale=scale, **params)
                    secs.append(time.perf_counter() - t0)
                    val = _metric_value(exacts[ekey], r, metric, topk)
                except XvizError as exc:
                    err = str(exc)
                    break
                if math.isfinite(val):
                    vals.append(val)
            count += 1
            arr = np.asarray(vals, dtype=np.float64)
            yield Point(series=s.title, variant=s.name, x=float(x),
                        mean=float(arr.mean()) if arr.size else float("nan"),
                        std=float(arr.std()) if arr.size else float("nan"), values=vals,
                        seconds=float(np.mean(secs)) if secs else float("nan"), index=count, total=total,
                        error=err)


def fixed_input(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Callable[[int, int], tuple]:
    """make_input for a fixed input: any seed gives the same tensors; a shorter N takes the first N tokens."""

    def make(nn: int, seed: int):
        if nn > q.shape[-2]:
            raise ParameterError(f"N = {nn} is longer than the input ({q.shape[-2]} tokens).")
        return q[..., :nn, :], k[..., :nn, :], v[..., :nn, :]

    return make


def gaussian_input(d: int, heads: int = 1, batch: int = 1, dtype: torch.dtype = torch.float32,
                   device: str = "cpu") -> Callable[[int, int], tuple]:
    """make_input drawing iid N(0, 1) q, k, v of shape (batch, heads, n, d) from the seed."""

    def make(nn: int, seed: int):
        g = torch.Generator().manual_seed(int(seed))
        return tuple(torch.randn(batch, heads, nn, d, generator=g).to(device=device, dtype=dtype) for _ in range(3))

    return make


def collect(points: Iterable[Point]) -> dict[str, list[Point]]:
    """Points grouped by series, each list sorted by x."""
    out: dict[str, list[Point]] = {}
    for p in points:
        out.setdefault(p.series, []).append(p)
    for v in out.values():
        v.sort(key=lambda p: p.x)
    return out
