"""``xviz.run``: validate inputs and parameters, check the budget, seed, dispatch, validate what the
variant returned, wrap the result.

Every problem a caller can cause ends in an ``XvizError`` subclass with a sentence; a variant that
returns something wrong (a broken plugin) ends in ``VariantError`` naming its module.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from .errors import BudgetError, InputError, ParameterError, VariantError
from .registry import Cost, Shape, VariantSpec, get_variant
from .result import Artifacts, AttentionResult, Output, all_finite

MAX_SEED = 2**63 - 1
# Bytes a run's own algorithm may materialise (its Cost.bytes), checked before any work starts.
_WORK_BUDGET = int(os.environ.get("XVIZ_WORK_BUDGET_BYTES", 8 * 1024**3))


def set_work_budget(nbytes: int) -> None:
    """Largest working set (the variant's ``Cost.bytes``) ``xviz.run`` starts (bytes)."""
    global _WORK_BUDGET
    _WORK_BUDGET = int(nbytes)


def work_budget() -> int:
    return _WORK_BUDGET


def generator(seed: int, salt: int = 0) -> torch.Generator:
    """A CPU generator seeded from (seed, salt), for every seeded draw in xviz: random draws are made
    on the CPU and moved, so the same seed gives the same projections on every device. Any seed in
    [0, 2⁶³ − 1] works (the mix is taken modulo 2⁶⁴, the generator's range)."""
    return torch.Generator(device="cpu").manual_seed((int(seed) * 1_000_003 + int(salt)) % 2**64)


def check_seed(seed, error: type = ParameterError) -> int:
    """``seed`` if it is an integer in [0, 2⁶³ − 1]; else ``error`` with a sentence."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise error(f"seed = {seed!r:.40} must be an integer in [0, 2^63 - 1].")
    return seed


@dataclass(frozen=True)
class Context:
    """What every variant function receives besides q, k, v and its parameters."""

    causal: bool
    scale: float  # logit scale, 1/sqrt(d) unless the caller set it
    seed: int

    def generator(self, salt: int = 0) -> torch.Generator:
        return generator(self.seed, salt)

    def randn(self, *shape: int, like: torch.Tensor, salt: int = 0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator(salt)).to(device=like.device, dtype=like.dtype)


def as_4d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, cross: bool = False):
    """Check q, k, v and return them as (B, H, N, d) with a flag telling whether they were 2-D.
    ``cross``: q may have another length than k and v (cross-attention)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
        if t.dim() not in (2, 4):
            raise InputError(f"{name} has shape {tuple(t.shape)}; expected (B, H, N, d) or (N, d).")
        if not t.is_floating_point():
            raise InputError(f"{name} has dtype {t.dtype}; expected a floating-point tensor.")
    if not (q.dim() == k.dim() == v.dim()):
        raise InputError("q, k and v must all be 4-D (B, H, N, d) or all 2-D (N, d).")
    squeeze = q.dim() == 2
    if squeeze:
        q, k, v = q[None, None], k[None, None], v[None, None]
    for name, t in (("q", q), ("k", k), ("v", v)):
        if min(t.shape) < 1:
            raise InputError(f"{name} has shape {tuple(t.shape)}: batch, heads, length and head dimension "
                             f"must all be at least 1.")
    if q.shape[-1] != k.shape[-1]:
        raise InputError(f"q and k must have the same head dimension d; got {q.shape[-1]} and {k.shape[-1]}.")
    if k.shape[-2] != v.shape[-2]:
        raise InputError(f"k and v must have the same length N; got {k.shape[-2]} and {v.shape[-2]}.")
    if q.shape[-2] != k.shape[-2] and not cross:
        raise InputError(f"q and k must have the same length N (self-attention); got {q.shape[-2]} and "
                         f"{k.shape[-2]}. This variant does not do cross-attention.")
    if not (q.shape[:2] == k.shape[:2] == v.shape[:2]):
        raise InputError(f"q, k, v must share batch and heads; got {tuple(q.shape[:2])}, {tuple(k.shape[:2])}, {tuple(v.shape[:2])}.")
    if len({q.dtype, k.dtype, v.dtype}) > 1 or len({q.device, k.device, v.device}) > 1:
        raise InputError("q, k and v must share one dtype and one device.")
    for name, t in (("q", q), ("k", k), ("v", v)):
        # One reduction is cheap and finite for any finite input of sane size; only if it is not,
        # look element-wise (a sum can overflow on huge but finite values).
        if not all_finite(t):
            raise InputError(f"{name} contains NaN or Inf values; attention needs finite inputs.")
    return q, k, v, squeeze


def check_logit_range(q: torch.Tensor, k: torch.Tensor, scale: float) -> None:
    """Refuse inputs whose logits q·k·scale could leave float32's range (every variant computes its
    logits in float32 or wider): |q·k| ≤ d·max|q|·max|k|, checked in float64."""
    qmax, kmax = float(q.detach().abs().amax()), float(k.detach().abs().amax())
    bound = q.shape[-1] * qmax * kmax * scale
    limit = torch.finfo(torch.float32).max / 8  # headroom for sums of exponentials and of logits
    if not bound < limit:
        raise InputError(f"the logits q·k·scale could reach {bound:.3g}, beyond float32's range "
                         f"({torch.finfo(torch.float32).max:.3g}); rescale q and k (their largest entries are "
                         f"{qmax:.3g} and {kmax:.3g}).")


def validate_output(spec: VariantSpec, result, shape: tuple[int, ...], dtype: torch.dtype,
                    device: torch.device) -> Output:
    """What a variant returned, checked at the engine boundary (a broken plugin is named, not obeyed)."""
    who = f"variant {spec.name!r} ({spec.module})"
    if not isinstance(result, Output):
        raise VariantError(f"{who} returned {type(result).__name__}, not an xviz.Output.")
    out = result.out
    if not isinstance(out, torch.Tensor):
        raise VariantError(f"{who} returned out = {type(out).__name__}, not a tensor.")
    if tuple(out.shape) != tuple(shape):
        raise VariantError(f"{who} returned out of shape {tuple(out.shape)}; expected {tuple(shape)} (B, H, N, d_v).")
    if out.dtype != dtype or out.device != device:
        raise VariantError(f"{who} returned out as {out.dtype} on {out.device}; expected {dtype} on {device}.")
    if not all_finite(out):
        bad = int((~torch.isfinite(out)).sum())
        raise VariantError(f"{who} returned {bad} NaN or Inf values in out for finite inputs"
                           f"{'' if spec.builtin else ' (a bug in the plugin)'}.")
    return result


def estimate(name: str, shape: Shape, **params) -> Cost:
    """The theoretical cost of running ``name`` at ``shape`` (a ``Shape``: b, h, n, d, dv, causal, nk)
    with ``params`` (defaults filled in and range-checked at that shape, as ``run`` would), without
    touching any tensor: FLOPs (a multiply-add counts 2) and the bytes the algorithm materialises.
    ``run`` refuses a cost.bytes over the work budget before starting; an app can also warn or refuse
    on cost.flops against its own per-session budget. Raises ParameterError for bad parameters."""
    return get_variant(name).cost_at(shape, params)


def run(name: str, q, k, v, *, causal: bool = False, seed: int = 0, scale: float | None = None, **params) -> AttentionResult:
    """Run catalog variant ``name`` on q, k, v ((B, H, N, d) or (N, d) tensors, any device/dtype).

    q may be shorter or longer than k and v (cross-attention) for variants that declare ``cross``.
    A ``causal_only`` variant (a recurrence) runs causally whatever ``causal`` says; the result's
    ``causal`` tells what was computed. ``params`` are the variant's parameters (see ``xviz.get_variant(name).params``); missing
    ones take their defaults. Raises an ``XvizError`` subclass for any bad input."""
    spec = get_variant(name)
    q4, k4, v4, squeeze = as_4d(q, k, v, cross=True)
    b, h, n, d = q4.shape
    causal = bool(causal) or spec.causal_only  # a recurrence reads only the past, whatever was asked
    nk, dv = k4.shape[-2], v4.shape[-1]
    if n != nk:
        if not spec.cross:
            raise InputError(f"{spec.display_name} does not do cross-attention: q has {n} positions and k "
                             f"has {nk}; it needs one sequence (N_q = N_k).")
        if causal:
            raise ParameterError(f"causal attention needs queries and keys of one sequence; q has {n} "
                                 f"positions and k has {nk}. Run cross-attention with causal=False.")
    if causal and not spec.causal:
        raise ParameterError(f"{spec.display_name} cannot be causal ({spec.complexity}); run it with causal=False.")
    check_seed(seed)
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif isinstance(scale, bool) or not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ParameterError(f"scale = {scale!r:.40} must be a positive finite number.")
    check_logit_range(q4, k4, float(scale))
    resolved = spec.resolve(params, n=nk, d=d, heads=h)
    shape = Shape(b, h, n, d, dv, causal=bool(causal), nk=nk)
    cost = spec.cost(shape, **resolved)
    if cost.bytes > _WORK_BUDGET:
        raise BudgetError(f"{spec.display_name} at this shape would materialise about {cost.bytes / 2**30:.1f} GiB "
                          f"(over the {_WORK_BUDGET / 2**30:.1f} GiB work budget); use a shorter sequence, fewer "
                          f"heads or smaller parameters, or raise it with XVIZ_WORK_BUDGET_BYTES.")
    ctx = Context(causal=bool(causal), scale=float(scale), seed=seed)
    result = validate_output(spec, spec.fn(q4, k4, v4, ctx, **resolved), (b, h, n, dv), v4.dtype, v4.device)
    out = result.out
    return AttentionResult(
        name=name,
        out=out[0, 0] if squeeze else out,
        artifacts=Artifacts(result.artifacts),
        cost=cost,
        params=resolved,
        causal=bool(causal),
        seed=seed,
        matrix_fn=result.matrix,
        matrix_shape=(b, h, n, nk),
        squeeze=squeeze,
        source=f"variant {spec.name!r} ({spec.module})",
    )
