"""Limits and checks shared by every input source."""
from __future__ import annotations

import math
import unicodedata

import torch

from ..core.errors import InputError

# The configured limits. A plain dict so the app (or a test) can change them at run time;
# every source reads them at call time.
LIMITS: dict[str, int] = dict(
    max_n=65_536,  # tokens per sequence (the subquadratic variants must run at this length)
    max_d=1_024,  # head dimension
    max_heads=64,  # heads per input
    max_upload_bytes=64 * 2**20,  # an uploaded file, and the decompressed arrays inside an .npz (= server.maxUploadSize)
    max_elements=2**26,  # elements of one of q, k, v (B·H·N·d): 256 MiB in float32
    max_model_tokens=4_096,  # tokens fed to a real model on this CPU, whatever its own maximum
)


def fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # unreachable


def shown(name, limit: int = 60) -> str:
    """A user-supplied name as messages show it: control, format and line-separator characters
    replaced by '?', cut to ``limit`` characters with an ellipsis (a message stays one short line)."""
    text = "".join("?" if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in str(name))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def check_size(n: int, d: int, heads: int, batch: int = 1, what: str = "the input") -> None:
    """Raise InputError when N, d, heads or the element count is outside LIMITS."""
    if n < 1:
        raise InputError(f"{what} has N = {n} tokens; at least 1 is needed.")
    if d < 1:
        raise InputError(f"{what} has head dimension d = {d}; at least 1 is needed.")
    if heads < 1:
        raise InputError(f"{what} has {heads} heads; at least 1 is needed.")
    if n > LIMITS["max_n"]:
        raise InputError(f"{what} has N = {n:,} tokens, more than the limit of {LIMITS['max_n']:,}; "
                         f"use a shorter sequence.")
    if d > LIMITS["max_d"]:
        raise InputError(f"{what} has head dimension d = {d:,}, more than the limit of {LIMITS['max_d']:,}.")
    if heads > LIMITS["max_heads"]:
        raise InputError(f"{what} has {heads} heads, more than the limit of {LIMITS['max_heads']}.")
    elements = batch * heads * n * d
    if elements > LIMITS["max_elements"]:
        raise InputError(f"{what} would hold B·H·N·d = {elements:,} elements per tensor, more than the limit "
                         f"of {LIMITS['max_elements']:,}; use fewer heads, a shorter sequence or a smaller d.")


def _brief(shape) -> str:
    return str(tuple(shape))[:80]


def check_finite(name: str, t: torch.Tensor, where: str = "") -> None:
    if not torch.isfinite(t).all():
        raise InputError(f"{name}{where} contains NaN or Inf values; every entry must be a finite number.")


def check_qkv_shapes(shapes: dict[str, tuple[int, ...]], source: str = "") -> tuple[int, int, int, int]:
    """Check q, k, v shapes ((N, d), (H, N, d) or (B, H, N, d)) before any data is read; ``source`` names the
    file in messages. k and v may be longer or shorter than q (cross-attention: N_k keys for N_q queries).
    Returns (B, H, N, d) of q."""
    where = f" in {source}" if source else ""
    for name in ("q", "k", "v"):
        shape = shapes[name]
        if len(shape) not in (2, 3, 4):
            raise InputError(f"{name}{where} has {plural(len(shape), 'dimension')} (shape {_brief(shape)}); "
                             f"expected (N, d), (H, N, d) or (B, H, N, d).")
        if min(shape) < 1:
            raise InputError(f"{name}{where} has shape {_brief(shape)}; every dimension (batch, heads, N and d) "
                             f"must be at least 1.")
    if not (len(shapes["q"]) == len(shapes["k"]) == len(shapes["v"])):
        raise InputError(f"q, k and v{where} must have the same number of dimensions; got shapes "
                         f"{tuple(shapes['q'])}, {tuple(shapes['k'])} and {tuple(shapes['v'])}.")
    q, k, v = (tuple(shapes[x]) for x in ("q", "k", "v"))
    if q[-1] != k[-1]:
        raise InputError(f"q and k{where} must have the same head dimension d; got {q[-1]} and {k[-1]}.")
    if k[-2] != v[-2]:
        raise InputError(f"k and v{where} must have the same length N; got {k[-2]} and {v[-2]}.")
    if not (q[:-2] == k[:-2] == v[:-2]):
        raise InputError(f"q, k and v{where} must share their leading (batch, head) dimensions; got shapes "
                         f"{q}, {k} and {v}.")
    full = (1,) * (4 - len(q)) + q
    b, h, n, d = full
    check_size(max(n, k[-2]), max(d, v[-1]), h, b, what=source or "the input")
    return b, h, n, d


def as_4d(t: torch.Tensor) -> torch.Tensor:
    while t.dim() < 4:
        t = t.unsqueeze(0)
    return t


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def logit_gain(logit_scale: float, d: int) -> float:
    """Factor g for q = g·u, k = g·u' with unit-scale u, u' so that q·k/√d = logit_scale·(u·u')."""
    return math.sqrt(logit_scale * math.sqrt(d))
