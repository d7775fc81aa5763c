"""Replay causal decoding under KV-cache policies: ``simulate``, ``simulate_many``, ``budget_sweep``.

Decoding a sequence of N tokens with a prompt of ``prefill`` tokens: the prompt is processed at once
(full causal attention, as every serving stack does), then each step t = prefill … N − 1 appends
token t's key and value and its query reads the cache. The **budget** is the number of cached
positions a step's query may read, its own new entry included (Mistral's rolling buffer of size W
reads the last W positions). A policy chooses the kept set; the replay measures, per step and head,
the full causal attention mass on it, the output's relative error against full attention, and the
bytes of K and V kept.

How it runs: steps are walked in chunks of consecutive positions, batched over B and H. For each
chunk the full logits (B, H, c, t1) are computed once and shared by every policy replayed together
(``simulate_many``, ``budget_sweep``). The policy's output is the softmax restricted to its kept
keys, taken as the full weights masked and renormalised by the kept mass (rows whose kept mass is
under ``LOW_MASS``, where float32 weights may have underflowed, are recomputed from the logits);
when the keys kept by any step and head of a chunk are few (a window), only those columns are used.
Memory is O(B·H·c·N) per chunk, never N×N. Policies that must decide step by step (H2O, TOVA) loop
over the chunk's steps on (B, H, N) state; the others select a whole chunk at once.
``reference.py`` holds the plain per-step, per-head form the tests compare with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..core.engine import as_4d, check_logit_range
from ..core.errors import InputError, ParameterError, VariantError
from ..core.result import check_budget
from ..kernels.dense import masked_softmax, work_dtype
from .registry import PolicySpec, get_policy
from .result import DecodeResult

CHUNK_ELEMENTS = 1 << 22  # logits per chunk (B·H·c·N): 16 MiB of float32


@dataclass
class Chunk:
    """Steps t0 … t1 − 1, batched: their full logits over keys 0 … t1 − 1 (−inf in each step's
    future) and full causal attention's weights, (B, H, c, t1) at the work dtype."""

    t0: int
    t1: int
    logits: torch.Tensor
    probs: torch.Tensor

    @property
    def positions(self) -> torch.Tensor:
        return torch.arange(self.t0, self.t1, device=self.logits.device)

    @property
    def keys(self) -> torch.Tensor:
        return torch.arange(self.t1, device=self.logits.device)

    def step_weights(self, i: int, kept: torch.Tensor) -> torch.Tensor:
        """Step t0 + i's softmax over its ``kept`` keys ((…, t + 1) bool): (B, H, t + 1), 0 elsewhere."""
        t = self.t0 + i
        masked, mass, low = restricted(self.probs[:, :, i, :t + 1], kept)
        if low is not None:
            return masked_softmax(self.logits[:, :, i, :t + 1], kept)[0]
        return masked / mass[..., None]


@dataclass
class Replay:
    """What a policy function sees: the sequence, the budget and prefill, the logit scale, and the
    prompt's full attention (``prompt_weight_sums``), cached across the policies of one replay."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    budget: int
    prefill: int
    scale: float
    _sums: dict = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.q.shape)

    @property
    def n(self) -> int:
        return self.q.shape[-2]

    @property
    def work(self) -> torch.dtype:
        return work_dtype(self.q.dtype)

    def prompt_weight_sums(self, start: int, stop: int) -> torch.Tensor:
        """(B, H, prefill): Σ over prompt queries i in [start, stop) of their full causal attention
        weights on each prompt key (H2O's accumulated score, SnapKV's observation votes, TOVA's
        last row). Computed in row chunks."""
        key = (start, stop)
        if key not in self._sums:
            p, cdt = self.prefill, self.work
            b, h = self.q.shape[:2]
            kp = self.k[..., :p, :].to(cdt)
            total = torch.zeros(b, h, p, dtype=cdt, device=self.q.device)
            step = max(1, CHUNK_ELEMENTS // max(1, b * h * p))
            for r0 in range(start, stop, step):
                r1 = min(stop, r0 + step)
                logits = (self.q[..., r0:r1, :].to(cdt) @ kp.transpose(-1, -2)) * self.scale
                future = torch.arange(p, device=logits.device)[None] > torch.arange(r0, r1, device=logits.device)[:, None]
                total += torch.softmax(logits.masked_fill(future, float("-inf")), -1).sum(-2)
            self._sums[key] = total
        return self._sums[key]


LOW_MASS = 1e-12  # float32 weights keep ~7 digits: below this a renormalised row could lose them


def restricted(probs: torch.Tensor, kept: torch.Tensor):
    """The softmax restricted to ``kept`` from the full weights: (masked weights, kept mass, rows
    whose kept mass is below ``LOW_MASS`` — their weights may have underflowed — or None)."""
    masked = probs * kept
    mass = masked.sum(-1)
    low = mass < LOW_MASS
    return masked, mass, (low.nonzero(as_tuple=True) if bool(low.any()) else None)


class _Run:
    """One policy at one budget inside a replay: its selector, the checks on what it returns, the
    per-step measures and the compact record of its kept sets."""

    def __init__(self, spec: PolicySpec, params: dict, replay: Replay, store: bool):
        b, h, n, _ = replay.shape
        self.spec, self.params, self.replay = spec, params, replay
        self.select = spec.fn(replay, **params)
        self.who = f"policy {spec.name!r} ({spec.module})"
        self.mass, self.error, self.kept = [], [], []
        self.prev = None  # the previous step's kept row (the evict-once check of plugins)
        # Evict-once: key j is kept from step max(j, prefill) until its eviction, so counting the
        # steps that kept it gives the eviction step.
        self.kept_steps = torch.zeros(b, h, n, dtype=torch.long) if spec.evicts_once and store else None
        self.packed = [] if not spec.evicts_once and store else None

    def step_chunk(self, chunk: Chunk, out_full: torch.Tensor, norm_full: torch.Tensor) -> None:
        r = self.replay
        b, h, n, _ = r.shape
        c, t1 = chunk.t1 - chunk.t0, chunk.t1
        kept = self._checked(self.select(chunk), (b, h, c, t1), chunk)
        probs, logits, v, sub = chunk.probs, chunk.logits, r.v[..., :t1, :].to(chunk.probs.dtype), kept
        cols = kept.any(dim=2).flatten(0, 1).any(dim=0)
        if 2 * int(cols.sum()) < t1:  # few keys kept by any step or head (a window): work on those columns only
            idx = cols.nonzero().squeeze(1)
            probs, logits, v, sub = probs[..., idx], logits[..., idx], v[..., idx, :], kept[..., idx]
        masked, mass, low = restricted(probs, sub)
        out = (masked @ v) / mass.clamp_min(LOW_MASS)[..., None]
        if low is not None:  # tiny kept mass: the exact softmax over the kept logits
            rows = masked_softmax(logits[low], sub.expand(b, h, c, -1)[low])[0]
            out[low] = (rows[:, None, :] @ v.expand(b, h, -1, -1)[low[0], low[1]]).squeeze(1)
        self.mass.append(mass)
        self.error.append((out - out_full).norm(dim=-1) / norm_full.clamp_min(torch.finfo(norm_full.dtype).tiny))
        self.kept.append(kept.sum(-1, dtype=torch.int32).expand(b, h, c))
        self._record(kept, chunk)

    def _checked(self, kept: Any, shape: tuple, chunk: Chunk) -> torch.Tensor:
        if not isinstance(kept, torch.Tensor) or kept.dtype != torch.bool:
            raise VariantError(f"{self.who} returned {type(kept).__name__}"
                               f"{'' if not isinstance(kept, torch.Tensor) else ' of ' + str(kept.dtype)}, not a bool tensor.")
        pos = chunk.positions
        try:
            kept.expand(shape)
            kept = kept.to(chunk.logits.device) & (chunk.keys[None] <= pos[:, None])  # no key from the future
        except RuntimeError:
            raise VariantError(f"{self.who} returned kept keys of shape {tuple(kept.shape)}; expected {shape} "
                               f"(B, H, steps in the chunk, keys) or a shape that broadcasts to it.") from None
        while kept.dim() < 4:
            kept = kept[None]
        if not kept[..., torch.arange(len(pos)), pos].all():
            raise VariantError(f"{self.who} dropped the token being decoded in steps {chunk.t0}–{chunk.t1 - 1}; "
                               f"a cache always holds the current token's key.")
        if self.spec.evicts_once and not self.spec.builtin:  # built-ins are held to reference.py by the tests
            self._check_evicts_once(kept.expand(shape), chunk)
        return kept

    def _check_evicts_once(self, kept: torch.Tensor, chunk: Chunk) -> None:
        b, h, c, t1 = kept.shape
        first = torch.ones(b, h, 1, t1, dtype=torch.bool, device=kept.device)  # step prefill: anything goes
        if self.prev is not None:
            first[..., :self.prev.shape[-1]] = self.prev[:, :, None]
        before = torch.cat([first, kept[:, :, :-1]], dim=2)
        before[:, :, torch.arange(c), chunk.positions] = True  # each step's own new token
        if (kept & ~before).any():
            raise VariantError(f"{self.who} declares evicts_once but brought an evicted key back in steps "
                               f"{chunk.t0}–{chunk.t1 - 1}.")
        self.prev = kept[:, :, -1]

    def _record(self, kept: torch.Tensor, chunk: Chunk) -> None:
        if self.kept_steps is not None:
            self.kept_steps[..., :chunk.t1] += kept.sum(2).cpu()
        elif self.packed is not None:
            b, h, n, _ = self.replay.shape
            full = torch.zeros(b, h, chunk.t1 - chunk.t0, n, dtype=torch.bool)
            full[..., :chunk.t1] = kept.cpu()
            self.packed.append(np.packbits(full.numpy(), axis=-1))

    def result(self) -> DecodeResult:
        r = self.replay
        evicted_at = None
        if self.kept_steps is not None:
            evicted_at = torch.arange(r.n).clamp_min(r.prefill) + self.kept_steps
        return DecodeResult(
            policy=self.spec.name, display_name=self.spec.display_name, params=self.params, budget=r.budget,
            prefill=r.prefill, n=r.n, steps=torch.arange(r.prefill, r.n),
            mass=torch.cat(self.mass, -1).cpu(), error=torch.cat(self.error, -1).cpu(),
            kept=torch.cat(self.kept, -1).cpu(), bytes_per_key=(r.k.shape[-1] + r.v.shape[-1]) * r.v.element_size(),
            sinks=self.spec.sink_count(self.params), reads_only=self.spec.reads_only, evicted_at=evicted_at,
            packed=None if self.packed is None else np.concatenate(self.packed, axis=2),
            q=r.q, k=r.k, scale=r.scale)


def _replay(runs: list[_Run], replay: Replay) -> None:
    """Walk the decoding steps in chunks; every run reads the chunk's shared full logits."""
    q, k, v = replay.q, replay.k, replay.v
    b, h, n, _ = q.shape
    cdt = replay.work
    step = max(1, CHUNK_ELEMENTS // max(1, b * h * n))
    for t0 in range(replay.prefill, n, step):
        t1 = min(n, t0 + step)
        logits = (q[..., t0:t1, :].to(cdt) @ k[..., :t1, :].to(cdt).transpose(-1, -2)) * replay.scale
        future = torch.arange(t1, device=q.device)[None] > torch.arange(t0, t1, device=q.device)[:, None]
        logits = logits.masked_fill(future, float("-inf"))
        probs = torch.softmax(logits, -1)
        out_full = probs @ v[..., :t1, :].to(cdt)
        chunk = Chunk(t0, t1, logits, probs)
        for run in runs:
            run.step_chunk(chunk, out_full, out_full.norm(dim=-1))


def whole_number(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
            isinstance(value, float) and value.is_integer()):
        raise ParameterError(f"{name} = {value!r:.40} must be a whole number, at least {low}.")
    return int(value)


def _prepare(q, k, v, prefill, scale, causal) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, float]:
    if causal is not True:
        raise ParameterError(f"causal = {causal!r:.20}: decoding is causal by definition (each step reads only "
                             f"the cache of earlier tokens); call simulate with causal=True or leave it out.")
    q, k, v, _ = as_4d(q, k, v)
    n = q.shape[-2]
    if n < 2:
        raise InputError(f"the sequence has N = {n} token; decoding needs at least 2 (a prompt and one step).")
    prefill = n // 2 if prefill is None else whole_number("prefill", prefill, 1)
    if not 1 <= prefill <= n - 1:
        raise ParameterError(f"prefill = {prefill} must be in [1, N − 1] = [1, {n - 1}]: a prompt of at least one "
                             f"token, and at least one token left to decode.")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    elif isinstance(scale, bool) or not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ParameterError(f"scale = {scale!r:.40} must be a positive finite number.")
    check_logit_range(q, k, float(scale))
    return q, k, v, prefill, float(scale)


def check_cache_budget(budget) -> int:
    budget = whole_number("budget", budget, 1)
    if budget < 1:
        raise ParameterError(f"budget = {budget} must be at least 1 cached token (the token being decoded).")
    return budget


def _make_run(policy, params, replay: Replay, store: bool) -> _Run:
    spec = policy if isinstance(policy, PolicySpec) else get_policy(policy)
    resolved = spec.resolve(params, n=replay.n, d=replay.q.shape[-1], budget=replay.budget, prefill=replay.prefill)
    return _Run(spec, resolved, replay, store)


def _storage_check(runs: list[_Run], replay: Replay) -> None:
    b, h, n, _ = replay.shape
    for run in runs:
        if run.packed is not None:
            check_budget((b, h, n - replay.prefill, (n + 7) // 8), 1, f"the per-step kept sets of {run.who}")


def simulate(policy: str, q, k, v, *, budget: int, prefill: int | None = None, scale: float | None = None,
             causal: bool = True, **params) -> DecodeResult:
    """Replay causal decoding of q, k, v ((B, H, N, d) or (N, d)) under KV-cache ``policy``.

    budget: cached positions a step's query may read (its own new one included); ignored by ``full``.
    prefill: prompt length processed before the first step (default N // 2), in [1, N − 1].
    params: the policy's parameters (``get_policy(policy).params``). Raises XvizError subclasses for
    bad inputs and parameters."""
    return simulate_many([(policy, params)], q, k, v, budget=budget, prefill=prefill, scale=scale, causal=causal)[0]


def simulate_many(policies: Sequence[str | tuple[str, Mapping]], q, k, v, *, budget: int,
                  prefill: int | None = None, scale: float | None = None, causal: bool = True) -> list[DecodeResult]:
    """Several policies at one budget in one pass (they share the full logits): names or (name, params)."""
    q, k, v, prefill, scale = _prepare(q, k, v, prefill, scale, causal)
    replay = Replay(q, k, v, check_cache_budget(budget), prefill, scale)
    runs = [_make_run(*((p, {}) if isinstance(p, (str, PolicySpec)) else (p[0], dict(p[1]))), replay, True)
            for p in policies]
    _storage_check(runs, replay)
    _replay(runs, replay)
    return [run.result() for run in runs]


def budget_sweep(policies: Sequence[str], budgets: Sequence[int], q, k, v, *, prefill: int | None = None,
                 scale: float | None = None, params: Mapping[str, Mapping] | None = None,
                 progress: Callable[[str], None] | None = None) -> list[dict]:
    """Error against budget, one row per (policy, budget), every pair replayed in one shared pass.

    Rows: policy, budget, mean_error, max_error, mean_mass, final_mass, mean_cache_bytes (per head),
    note. A pair the policy cannot run at that budget (sinks ≥ budget, say) gets NaN and a note."""
    q, k, v, prefill, scale = _prepare(q, k, v, prefill, scale, True)
    params = params or {}
    runs, rows, sums = [], [], {}
    for name in policies:
        spec = get_policy(name)  # an unknown name is the caller's mistake: raise, do not note it
        for budget in budgets:
            row = {"policy": name, "budget": check_cache_budget(budget), "note": ""}
            try:
                replay = Replay(q, k, v, row["budget"], prefill, scale, sums)  # prompt sums shared
                runs.append((row, _make_run(spec, dict(params.get(name, {})), replay, False)))
            except ParameterError as exc:
                row["note"] = str(exc)
            rows.append(row)
    if runs:
        if progress:
            progress(f"replaying {len(runs)} policy × budget pairs over {q.shape[-2] - prefill} steps")
        _replay([run for _, run in runs], runs[0][1].replay)
    for row, run in runs:
        result = run.result()
        s = result.summary()
        row.update(mean_error=s["mean_error"], max_error=s["max_error"], mean_mass=s["mean_mass"],
                   final_mass=s["final_mass"], mean_cache_bytes=float(result.cache_bytes.double().mean()))
    for row in rows:
        for key in ("mean_error", "max_error", "mean_mass", "final_mass", "mean_cache_bytes"):
            row.setdefault(key, float("nan"))
    return rows
