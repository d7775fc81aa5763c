"""The state of a linear recurrence, and how far back any causal attention reads: data, no plotly.

A recurrence (RetNet, decayed linear attention, DeltaNet, Gated DeltaNet, Mamba-2, or a plugin)
declares the artifacts of ``xviz.kernels.recurrent.RECURRENT_ARTIFACTS``:

* ``state``       (B, H, d_k, d_v) the fast-weight matrix after the last token;
* ``state_norm``  (B, H, N) ‖S_t‖_F after every token t;
* ``decay``       (B, H, N) the factor a_t the state is multiplied by at token t.

A recurrence reads only the past, so the state after token t is the final state of the same run
on the first t + 1 tokens: ``state_at`` runs that prefix, which needs no variant to store N states.

``effective_decay`` is the geometric mean of a_t per head, exp(mean_t log a_t); after m tokens a
write is scaled by about γ^m, so ``decay_reach`` = log τ / log γ is how many tokens back a write
keeps a share τ of its weight (∞ for γ = 1: linear attention and DeltaNet do not decay; the delta
rule forgets by overwriting instead, which only ``read_back`` sees).

``read_back`` works on ANY causal effective matrix, softmax included: for each query i, the
largest distance i − j (j ≤ i) whose |A_ij| is at least τ (1 %) of the row's largest |A_ij'|;
every key further back weighs less. −1 marks a row that is all zero. Exact case: for A_ij =
c·γ^(i−j) with c > 0 (uniform logits under a decay γ) it is min(i, ⌊log τ / log γ⌋).

``summary(result_or_name, q, k, v, step=...)`` gathers all of it for one head stack (batch 0 by
default) into a ``StateSummary`` of numpy arrays, ready for ``xviz.figures.state``.
Memory: the norms come from the kernels' Gram identity (O(N·c)), the state at a step from one
prefix run (O(N·c + (N/c)·d²)); ``read_back`` takes the N×N matrix a row block at a time.
Nothing loops over heads in Python.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..core.engine import as_4d, run
from ..core.errors import BudgetError, ParameterError
from ..core.registry import VariantSpec, get_variant
from ..core.result import AttentionResult
from ..kernels.recurrent import RECURRENT_ARTIFACTS

THRESHOLD = 0.01  # "still reads": a weight at least 1 % of its row's largest
_ROWS = 512  # read_back's row block: bounds its boolean temporaries at 512·N per head


def is_recurrent(spec: VariantSpec) -> bool:
    """Whether ``spec`` declares the state artifacts (state, state_norm, decay)."""
    return {a.name for a in RECURRENT_ARTIFACTS} <= set(spec.artifact_names)


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ParameterError(f"threshold = {threshold!r:.40} must be a number in (0, 1) (a share of the row maximum).")
    return float(threshold)


def read_back(a: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """How far back each query reads in a causal matrix a (…, N, N): (…, N) int64 distances."""
    threshold = _check_threshold(threshold)
    if a.dim() < 2 or a.shape[-1] != a.shape[-2]:
        raise ParameterError(f"read_back needs square (…, N, N) matrices, got shape {tuple(a.shape)}.")
    n = a.shape[-1]
    cols = torch.arange(n, device=a.device)
    out = []
    for r0 in range(0, n, _ROWS):
        rows = torch.arange(r0, min(n, r0 + _ROWS), device=a.device)
        past = cols[None, :] <= rows[:, None]
        w = torch.where(past, a[..., r0:r0 + len(rows), :].abs(), torch.zeros((), dtype=a.dtype, device=a.device))
        top = w.amax(-1, keepdim=True)
        keep = (w >= threshold * top) & (w > 0)
        first = keep.to(torch.uint8).argmax(-1)  # the first (farthest back) key still read
        out.append(torch.where(keep.any(-1), rows - first, torch.full_like(first, -1)))
    return torch.cat(out, -1)


def effective_decay(decay: torch.Tensor) -> torch.Tensor:
    """Per-head geometric mean of per-step decays (B, H, N) -> (H,) float64, exp(mean log a_t)."""
    d = torch.as_tensor(decay).double()
    return d.clamp_min(torch.finfo(torch.float64).tiny).log().mean((0, 2)).exp()


def decay_reach(gamma: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """log τ / log γ: tokens back at which γ^m falls to τ (∞ where γ = 1)."""
    threshold = _check_threshold(threshold)
    g = torch.as_tensor(gamma, dtype=torch.float64)
    return torch.where(g < 1, math.log(threshold) / g.log(), torch.full_like(g, math.inf))


def state_at(name: str, q, k, v, step: int, *, seed: int = 0, scale: float | None = None, **params) -> torch.Tensor:
    """The state (B, H, d_k, d_v) after token ``step`` (0-based) of recurrence ``name``: the final
    state of the run on tokens 0 … step."""
    spec = get_variant(name)
    if not is_recurrent(spec):
        raise ParameterError(f"{spec.display_name} keeps no recurrent state (it declares no 'state' artifact).")
    q4, k4, v4, _ = as_4d(q, k, v)
    n = q4.shape[-2]
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < n:
        raise ParameterError(f"step = {step!r:.40} must be an integer in [0, {n - 1}] (a token position).")
    cut = slice(0, int(step) + 1)
    r = run(name, q4[..., cut, :], k4[..., cut, :], v4[..., cut, :], causal=True, seed=seed, scale=scale, **params)
    return r.artifacts["state"]


@dataclass
class StateSummary:
    """What the state section draws, for one batch element: numpy arrays, heads first."""

    name: str
    n: int
    threshold: float
    recurrent: bool
    step: int | None = None  # the token whose state ``state`` is
    state: np.ndarray | None = None  # (H, d_k, d_v) after token ``step``
    state_norm: np.ndarray | None = None  # (H, N) ‖S_t‖_F
    decay_steps: np.ndarray | None = None  # (H, N) a_t
    decay: np.ndarray | None = None  # (H,) effective (geometric-mean) decay
    decay_reach: np.ndarray | None = None  # (H,) log τ / log γ, ∞ without decay
    read_back: np.ndarray | None = None  # (H, N) int, −1 for an all-zero row
    note: str = ""  # why something is missing


def _np(x: torch.Tensor, batch: int) -> np.ndarray:
    return x[batch].detach().cpu().double().numpy()


def summary(result_or_name: AttentionResult | str, q, k, v, *, step: int | None = None, batch: int = 0,
            seed: int = 0, scale: float | None = None, threshold: float = THRESHOLD,
            matrix: torch.Tensor | None = None, **params) -> StateSummary:
    """Everything the state section shows for one run: a recurrence's state at ``step`` (default the
    last token), its norm over t, its decays, and for any causal variant the read-back distances.

    ``result_or_name``: a variant name (run here on q, k, v causally with ``seed``, ``scale`` and
    ``params``) or an ``AttentionResult`` of a causal run on these q, k, v (its params and seed are
    reused; pass ``scale`` if it was not the default). The read-back needs the N×N matrix: when it
    is over the matrix budget it is left out and ``note`` says why. ``matrix``: the run's effective matrix
    when the caller has it already (it is then not built again)."""
    threshold = _check_threshold(threshold)
    q4, k4, v4, _ = as_4d(q, k, v)
    n = q4.shape[-2]
    if isinstance(batch, bool) or not isinstance(batch, int) or not 0 <= batch < q4.shape[0]:
        raise ParameterError(f"batch = {batch!r:.40} must be an integer in [0, {q4.shape[0] - 1}].")
    if isinstance(result_or_name, AttentionResult):
        result, name = result_or_name, result_or_name.name
        params, seed = dict(result.params), result.seed
    else:
        name, result = result_or_name, None
    spec = get_variant(name)
    if result is None:
        if not spec.causal:
            raise ParameterError(f"{spec.display_name} has no causal form; the read-back distance needs a causal matrix.")
        result = run(name, q4, k4, v4, causal=True, seed=seed, scale=scale, **params)
    elif not result.causal:
        raise ParameterError("the result was computed without causal=True; the read-back distance needs a causal matrix.")
    out = StateSummary(name=name, n=n, threshold=threshold, recurrent=is_recurrent(spec))
    if out.recurrent:
        out.step = n - 1 if step is None else step
        st = result.artifacts["state"] if out.step == n - 1 else state_at(name, q4, k4, v4, out.step, seed=seed,
                                                                         scale=scale, **params)
        out.state = _np(st, batch)
        out.state_norm = _np(result.artifacts["state_norm"], batch)
        decay = result.artifacts["decay"]
        out.decay_steps = _np(decay, batch)
        gamma = effective_decay(decay[batch:batch + 1])
        out.decay, out.decay_reach = gamma.numpy(), decay_reach(gamma, threshold).numpy()
    if result.has_matrix:
        try:
            a = matrix if matrix is not None else result.matrix(keep=False)
            out.read_back = read_back(a if a.dim() == 4 else a[None, None], threshold)[batch].cpu().numpy()
        except BudgetError as exc:
            out.note = f"read-back left out: {exc}"
    else:
        out.note = f"{spec.display_name} has no effective matrix, so no read-back distance."
    return out
