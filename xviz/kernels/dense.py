"""Dense building blocks: the reference softmax attention every variant is held against, the one
empty-row-safe masked softmax, and the merge of partial softmaxes computed over disjoint key sets.

All logits are formed at float32 or wider (half-precision inputs are upcast): a softmax needs the
max-subtraction and an accumulator wider than 8 bits of mantissa.
"""
from __future__ import annotations

import torch

from ..core.errors import InputError
from ..core.result import all_finite, check_budget


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bfloat16 inputs, else the input's (float32 or float64)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, in x's dtype; a zero row stays zero. Computed at the work dtype
    after dividing by max|x|: a norm clamped at an eps divides short vectors by the eps (and a
    float16 eps of 1e−12 is 0, so 0/0)."""
    w = x.to(work_dtype(x.dtype))
    top = w.abs().amax(-1, keepdim=True)
    w = w / torch.where(top > 0, top, torch.ones_like(top))
    return torch.nn.functional.normalize(w, dim=-1).to(x.dtype)


def cast_checked(x: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    """``x`` (computed at the work dtype) cast to ``dtype``, or InputError when finite values lie beyond
    ``dtype``'s range (float16 ends at 65,504): a signed method's output or weights can, and inf in
    place of a number would be a silent lie."""
    out = x.to(dtype)
    if out.dtype != x.dtype and out.is_floating_point() and all_finite(x) and not all_finite(out):
        top = x.detach().abs().max().item()
        raise InputError(f"{what} reaches {top:.3g}, beyond the range of {str(dtype).removeprefix('torch.')} "
                         f"({torch.finfo(dtype).max:.3g}); run in float32 or rescale v.")
    return out


def causal_mask(n: int, nk: int | None = None, device=None) -> torch.Tensor:
    """(n, nk) bool, True where key j is in query i's future (j > i): what a causal softmax drops."""
    return torch.ones(n, n if nk is None else nk, dtype=torch.bool, device=device).triu(1)


DENSE_CHUNK_ELEMENTS = 1 << 20  # logits formed at once by dense_weights (4 MB of float32: stays in cache)


def dense_weights(q, k, scale: float, causal: bool, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(QKᵀ·scale + bias), the future masked when ``causal``: (B, H, N_q, N_k) at q's dtype,
    computed at ≥ float32. The reference every variant is held against (O(N²) memory: display only)."""
    nq, nk = q.shape[-2], k.shape[-2]
    check_budget((*q.shape[:-2], nq, nk), 4, "the dense attention matrix")
    cdt = work_dtype(q.dtype)
    qs, kt = q.to(cdt) * scale, k.to(cdt).transpose(-1, -2)
    out = torch.empty(*torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]), nq, nk, dtype=cdt, device=q.device)
    # in query chunks into one buffer: no N×N temporaries (one whole-matrix pass took 1.8× as long at 4K, 8 heads)
    step = max(1, DENSE_CHUNK_ELEMENTS // max(1, out[..., :1, :].numel()))
    for r0 in range(0, nq, step):
        r1 = min(nq, r0 + step)
        logits = torch.matmul(qs[..., r0:r1, :], kt)
        if bias is not None:
            logits = logits + (bias[..., r0:r1, :] if bias.dim() >= 2 and bias.shape[-2] == nq else bias).to(cdt)
        if causal:
            rows = torch.arange(r0, r1, device=q.device)  # the chunk's own rows of the mask, not N×N per chunk
            logits = logits.masked_fill(torch.arange(nk, device=q.device)[None, :] > rows[:, None], float("-inf"))
        out[..., r0:r1, :] = torch.softmax(logits, dim=-1)
    return out.to(q.dtype)


def masked_softmax(logits: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the last dim restricted to ``valid`` (None: all), and its log-normaliser
    (log Σ exp over valid). A row with no valid entry gets zero weights and lse = −inf. No NaN
    appears anywhere, in the values or the gradients (the gradient tests of causal variants
    differentiate through empty rows)."""
    if valid is not None:
        logits = logits.masked_fill(~valid, float("-inf"))
    mx = logits.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isinf(mx), torch.zeros_like(mx), mx).detach()
    e = torch.exp(logits - mx)
    s = e.sum(dim=-1, keepdim=True)
    nonempty = s > 0
    probs = e / torch.where(nonempty, s, torch.ones_like(s))
    lse = torch.where(nonempty, torch.log(torch.where(nonempty, s, torch.ones_like(s))) + mx,
                      torch.full_like(s, float("-inf")))
    return probs, lse.squeeze(-1)


def merge(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Combine partial softmaxes over disjoint key sets: out = Σ_p exp(lse_p − lse)·out_p with
    lse = logsumexp_p lse_p (each part's out normalised over its own keys; lse = −inf: no keys)."""
    if len(parts) == 1:
        return parts[0][0]
    lse = torch.logsumexp(torch.stack([p[1] for p in parts]), dim=0)
    out = None
    for o, l in parts:
        w = torch.nan_to_num(torch.exp(l - lse), nan=0.0).unsqueeze(-1)
        out = o * w if out is None else out + o * w
    return out
