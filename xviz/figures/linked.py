"""What the linked attention view draws, as plain data: for every head the exact, approximate and
difference maps mean-pooled to at most ``LINKED_CELLS`` a side and packed as little-endian float16
(base64), the tokens, and which block of queries and keys a pooled cell stands for.

The browser draws, links and highlights from this alone (pages/ui/linked_view.js): a hover or a head
switch needs nothing more from the server. Pure function of arrays, no Streamlit.
"""
from __future__ import annotations

import base64
import math
from typing import Any, Sequence

import numpy as np
import torch

from .attention import scale_top
from .base import crop_window, pool_factor

LINKED_CELLS = 256  # pooled cells a side: 3 maps × 256² × 2 bytes ≈ 390 kB a head before base64
LINKED_TOKENS = 1024  # token strips are drawn up to this many tokens (one element each)


def pack_f16(a: np.ndarray) -> str:
    """A float array as base64 of its little-endian float16 bytes, row-major."""
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f2").tobytes()).decode("ascii")


def unpack_f16(s: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of ``pack_f16`` (as float32)."""
    return np.frombuffer(base64.b64decode(s), dtype="<f2").astype(np.float32).reshape(shape)


def _heads(a: Any) -> torch.Tensor:
    """(H, N_q, N_k) from (N_q, N_k), (H, N_q, N_k) or (B, H, N_q, N_k) (batch 0), float32 or float64."""
    x = torch.as_tensor(a).detach().cpu()
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()
    while x.dim() > 3:
        x = x[0]
    return x[None] if x.dim() == 2 else x


def pool_heads(x: torch.Tensor, max_cells: int) -> tuple[np.ndarray, int, int]:
    """Every head's map mean-pooled to at most ``max_cells`` a side in one pass (the last block of a side
    may be shorter: its mean is over its real cells), as float32, with the pooling factors: the same
    cells as ``pool2d`` per head, without a loop over heads or a float64 copy (8 heads at 4,096² took
    0.3 s that way)."""
    h, r, c = x.shape
    fr, fc = pool_factor(r, max_cells), pool_factor(c, max_cells)
    cr, cc = math.ceil(r / fr), math.ceil(c / fc)
    if cr * fr != r or cc * fc != c:
        x = torch.nn.functional.pad(x, (0, cc * fc - c, 0, cr * fr - r))
    sums = x.reshape(h, cr, fr, cc, fc).sum((2, 4), dtype=torch.float64 if x.dtype == torch.float64 else None)
    rows = torch.full((cr,), float(fr), dtype=sums.dtype)
    cols = torch.full((cc,), float(fc), dtype=sums.dtype)
    rows[-1], cols[-1] = r - (cr - 1) * fr, c - (cc - 1) * fc
    return (sums / (rows[:, None] * cols[None, :])).float().numpy(), fr, fc


def _strip(tokens: Sequence[str] | None, start: int, stop: int) -> list[str] | None:
    if tokens is None or stop - start > LINKED_TOKENS:
        return None
    return [str(t) for t in list(tokens)[start:stop]]


def linked_view_data(exact: Any, approx: Any, tokens: Sequence[str] | None = None, *,
                     key_tokens: Sequence[str] | None = None, names: Sequence[str] = ("exact", "approx"),
                     window: tuple[int, int, int, int] | None = None, cap: float | None = None,
                     max_cells: int = LINKED_CELLS) -> dict:
    """The linked view's payload for every head of ``exact`` and ``approx`` (same shape).

    ``window`` = (first query, stop, first key, stop) zooms; indices in the payload are absolute. The
    pinned query, key and head are added with ``clamp_view`` (the payload itself does not depend on them). Cell (i, j) of a pooled map stands for queries ``r0 + i·fr`` up to
    ``r0 + min((i+1)·fr, n_queries) − 1`` and the same for keys with ``c0`` and ``fc``. The weight maps
    of a head share one scale, up to ``top`` (the ``cap`` quantile of the pooled |weights| when given);
    when the approximation's weights are ``signed``, the exact map keeps its own scale (``etop``) and the
    approximation a diverging one (``atop``) in other colours than the difference's, as in
    ``compare_heatmaps``. The difference (approx − exact, pooled: mean pooling is linear) has its own,
    symmetric, ``dtop``.
    ``key_tokens``: the keys' labels for cross-attention (else the keys are the tokens)."""
    ex_all, ap_all = _heads(exact), _heads(approx)
    if ex_all.shape != ap_all.shape:
        raise ValueError(f"exact and approx differ in shape: {ex_all.shape} vs {ap_all.shape}.")
    first, r0, c0 = crop_window(ex_all[0], window)
    n_q, n_k = first.shape
    pe_all, fr, fc = pool_heads(ex_all[:, r0:r0 + n_q, c0:c0 + n_k], max_cells)
    pa_all, _, _ = pool_heads(ap_all[:, r0:r0 + n_q, c0:c0 + n_k], max_cells)
    maps, signed = [], False
    for pe, pa in zip(pe_all, pa_all):
        diff = pa.astype(np.float64) - pe
        top, note = scale_top(np.concatenate([pe.ravel(), pa.ravel()]), cap)
        dtop, _ = scale_top(diff.ravel(), cap)
        etop, _ = scale_top(pe.ravel(), cap)
        atop, _ = scale_top(pa.ravel(), cap)
        signed = signed or bool(min(pe.min(initial=0), pa.min(initial=0)) < 0)
        maps.append({"exact": pack_f16(pe), "approx": pack_f16(pa), "diff": pack_f16(diff),
                     "top": top, "dtop": dtop, "etop": etop, "atop": atop, "note": note})
    rows, cols = pe_all.shape[1:]
    keys = key_tokens if key_tokens is not None else tokens
    return {
        "names": [str(names[0]), str(names[1])],
        "n_queries": int(n_q), "n_keys": int(n_k), "r0": int(r0), "c0": int(c0),
        "rows": int(rows), "cols": int(cols), "fr": int(fr), "fc": int(fc),
        "heads": len(maps), "signed": signed, "maps": maps,
        "cross": key_tokens is not None,
        "tokens": _strip(tokens, r0, r0 + n_q), "key_tokens": _strip(keys, c0, c0 + n_k),
    }


def clamp_view(data: dict, query: int, key: int, head: int) -> dict:
    """{"query", "key", "head"} moved into the payload's window and heads (a zoom may exclude the pin)."""
    return {"query": int(min(max(query, data["r0"]), data["r0"] + data["n_queries"] - 1)),
            "key": int(min(max(key, data["c0"]), data["c0"] + data["n_keys"] - 1)),
            "head": int(min(max(head, 0), data["heads"] - 1))}

