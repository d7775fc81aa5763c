"""The catalog at one budget: every variant on one input with its parameters matched to the same
keys-per-query budget (Compare), and every sparse pattern's density and exact mass inside (Patterns).

Both walk the catalog the same way — skip what cannot run here with a sentence, match the budget,
run (through a caller's ``run`` so the app can cache), measure — and yield one row per variant, so
a caller can draw progress. A failing variant (a plugin, say) becomes a row with ``error``, never an
exception that ends the walk.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch

from ..core.engine import run as engine_run
from ..core.errors import BudgetError, ParameterError, XvizError
from ..core.registry import Shape, VariantSpec, list_variants
from .keys_per_query import budget_params
from .metrics import compare, mass_inside

Runner = Callable[[str, dict], "tuple[Any, float]"]  # (name, params) -> (AttentionResult, seconds)


@dataclass
class Row:
    name: str
    display_name: str
    family: str
    complexity_class: str
    params: dict = field(default_factory=dict)
    tuned: str | None = None  # the parameter set to meet the budget (None: the cost depends on none)
    matched: bool = False
    flops: float = math.nan
    bytes: float = math.nan
    seconds: float = math.nan
    keys_per_row: float = math.nan
    metrics: dict = field(default_factory=dict)
    error: str = ""
    extra: dict = field(default_factory=dict)  # pattern rows: density, mass inside, the mask


def error_text(exc: BaseException) -> str:
    """The library's sentence, or a bug named as one (a broken plugin must not take a page down)."""
    if isinstance(exc, XvizError):
        return str(exc)
    return f"internal error in this variant: {type(exc).__name__}: {str(exc)[:300]}"


def default_runner(q, k, v, causal: bool, seed: int) -> Runner:
    def runner(name: str, params: dict):
        import time

        t0 = time.perf_counter()
        r = engine_run(name, q, k, v, causal=causal, seed=seed, **params)
        return r, time.perf_counter() - t0
    return runner


def _prepare(spec: VariantSpec, shape: Shape, budget: int, max_flops: float | None) -> Row:
    row = Row(spec.name, spec.display_name, spec.family, spec.complexity_class)
    if shape.causal and not spec.causal:
        raise ParameterError(f"{spec.display_name} has no causal form.")
    if shape.n != shape.nk and not spec.cross:
        raise ParameterError(f"{spec.display_name} does not do cross-attention.")
    bud = budget_params(spec, shape.nk, shape.d, shape.h, keys_per_row=budget, causal=shape.causal, dv=shape.dv)
    row.params, row.tuned, row.matched = bud.params, bud.knob, bud.matched
    cost = spec.cost(shape, **bud.params)
    row.flops, row.bytes = cost.flops, cost.bytes
    if max_flops is not None and cost.flops > max_flops:
        raise BudgetError(f"skipped: {cost.flops:.3g} FLOPs at this size (run it from the Explorer).")
    return row


def compare_rows(shape: Shape, run: Runner, exact, *, budget: int, specs: Iterable[VariantSpec] | None = None,
                 with_matrix: bool = True, topk: int = 8, max_flops: float | None = None,
                 metrics_of: Callable | None = None) -> Iterator[Row]:
    """One row per variant at ``budget`` keys per query: parameters, cost, time and (when ``exact`` is
    given) the error metrics against it. ``metrics_of(exact, result, name, params, with_matrix)`` lets
    a caller cache the metrics; by default they are computed here."""
    for spec in list(specs if specs is not None else list_variants()):
        row = Row(spec.name, spec.display_name, spec.family, spec.complexity_class)
        try:
            row = _prepare(spec, shape, budget, max_flops)
            r, row.seconds = run(spec.name, row.params)
            if "keys_per_row" in r.artifacts:
                row.keys_per_row = float(r.artifacts["keys_per_row"].double().mean())
            if exact is not None:
                wm = with_matrix and spec.has_matrix
                try:
                    m = (metrics_of(exact, r, spec.name, row.params, wm) if metrics_of is not None
                         else compare(exact, r, k=topk, with_matrix=wm))
                except BudgetError:
                    m = compare(exact, r, k=topk, with_matrix=False)
                row.metrics = m.as_dict()
        except Exception as exc:  # noqa: BLE001  one failing variant must not end the walk
            row.error = error_text(exc)
        yield row


def pattern_specs() -> list[VariantSpec]:
    """The variants that return a mask: the sparse patterns."""
    return [s for s in list_variants() if "mask" in s.artifact_names]


def pattern_rows(shape: Shape, run: Runner, exact_matrix: torch.Tensor | None, *, budget: int,
                 specs: Iterable[VariantSpec] | None = None) -> Iterator[Row]:
    """One row per sparse pattern at ``budget``: keys per row, density (share of the allowed pairs kept),
    whether heads differ, and the share of exact attention mass inside (mean, worst head, worst query).
    ``row.extra`` holds the mask (b, h, N, N) and the mass inside per query (B, H, N)."""
    n = shape.n
    allowed = n * (n + 1) / 2 if shape.causal else n * n
    for spec in list(specs if specs is not None else pattern_specs()):
        row = Row(spec.name, spec.display_name, spec.family, spec.complexity_class)
        try:
            row = _prepare(spec, shape, budget, None)
            r, row.seconds = run(spec.name, row.params)
            mask = r.artifacts["mask"].to(torch.bool)
            while mask.dim() < 4:
                mask = mask.unsqueeze(0)
            nnz = mask.sum(-1).double()
            differ = mask.shape[1] > 1 and any(not torch.equal(mask[:, j], mask[:, 0]) for j in range(1, mask.shape[1]))
            row.keys_per_row = float(nnz.mean())
            row.extra = {"mask": mask, "density": float(nnz.sum(-1).mean()) / allowed, "heads differ": bool(differ)}
            if exact_matrix is not None:
                mi = mass_inside(mask, exact_matrix)
                per_head = mi.mean(-1).mean(0)
                row.extra.update({"inside": mi, "exact mass inside": float(mi.mean()),
                                  "worst head": float(per_head.min()), "worst query": float(mi.min())})
        except Exception as exc:  # noqa: BLE001
            row.error = error_text(exc)
        yield row
