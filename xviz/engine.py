"""``xviz.run``: validate inputs and parameters, seed, dispatch to the variant, wrap the result."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import InputError, ParameterError
from .registry import get_variant
from .result import Artifacts, AttentionResult


@dataclass(frozen=True)
class Context:
    """What every variant function receives besides q, k, v and its parameters."""

    causal: bool
    scale: float  # logit scale, 1/sqrt(d) unless the caller set it
    seed: int

    def generator(self, salt: int = 0) -> torch.Generator:
        """A CPU generator seeded from (seed, salt): random draws are made on the CPU and moved,
        so the same seed gives the same projections on every device."""
        return torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + salt)

    def randn(self, *shape: int, like: torch.Tensor, salt: int = 0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator(salt)).to(device=like.device, dtype=like.dtype)


def as_4d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Check q, k, v and return them as (B, H, N, d) with a flag telling whether they were 2-D."""
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
    if q.shape[-1] != k.shape[-1]:
        raise InputError(f"q and k must have the same head dimension d; got {q.shape[-1]} and {k.shape[-1]}.")
    if k.shape[-2] != v.shape[-2]:
        raise InputError(f"k and v must have the same length N; got {k.shape[-2]} and {v.shape[-2]}.")
    if q.shape[-2] != k.shape[-2]:
        raise InputError(f"q and k must have the same length N (self-attention); got {q.shape[-2]} and {k.shape[-2]}.")
    if not (q.shape[:2] == k.shape[:2] == v.shape[:2]):
        raise InputError(f"q, k, v must share batch and heads; got {tuple(q.shape[:2])}, {tuple(k.shape[:2])}, {tuple(v.shape[:2])}.")
    if q.shape[-2] < 1 or q.shape[-1] < 1:
        raise InputError("the sequence length N and the head dimension d must be at least 1.")
    if len({q.dtype, k.dtype, v.dtype}) > 1 or len({q.device, k.device, v.device}) > 1:
        raise InputError("q, k and v must share one dtype and one device.")
    for name, t in (("q", q), ("k", k), ("v", v)):
        # One reduction is cheap and finite for any finite input of sane size; only if it is not,
        # look element-wise (a sum can overflow on huge but finite values).
        if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
            raise InputError(f"{name} contains NaN or Inf values; attention needs finite inputs.")
    return q, k, v, squeeze


def run(name: str, q, k, v, *, causal: bool = False, seed: int = 0, scale: float | None = None, **params) -> AttentionResult:
    """Run catalog variant ``name`` on q, k, v ((B, H, N, d) or (N, d) tensors, any device/dtype).

    ``params`` are the variant's parameters (see ``xviz.get_variant(name).params``); missing
    ones take their defaults. Raises an ``XvizError`` subclass for any bad input."""
    spec = get_variant(name)
    q4, k4, v4, squeeze = as_4d(q, k, v)
    b, h, n, d = q4.shape
    if causal and not spec.causal:
        raise ParameterError(f"{spec.display_name} cannot be causal ({spec.complexity}); run it with causal=False.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"seed = {seed!r} must be a non-negative integer.")
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ParameterError(f"scale = {scale!r} must be a positive finite number.")
    resolved = spec.resolve(params, n=n, d=d, heads=h)
    ctx = Context(causal=bool(causal), scale=float(scale), seed=seed)
    result = spec.fn(q4, k4, v4, ctx, **resolved)
    out = result.out
    return AttentionResult(
        name=name,
        out=out[0, 0] if squeeze else out,
        artifacts=Artifacts(result.artifacts),
        cost=spec.cost(b, h, n, d, v4.shape[-1], causal=bool(causal), **resolved),
        params=resolved,
        causal=bool(causal),
        seed=seed,
        _matrix_fn=result.matrix,
        _shape=(b, h, n, n),
        _squeeze=squeeze,
    )
