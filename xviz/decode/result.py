"""``DecodeResult``: what a replay measured, per step and head, and which keys each step kept.

The kept sets are stored compactly: for a policy whose evicted keys never return, one eviction step
per key (B, H, N); otherwise every step's set as a bit mask (B, H, S, ⌈N/8⌉ bytes). ``kept_at(t)``
rebuilds step t's set either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.errors import ParameterError
from ..core.result import check_budget
from ..kernels.dense import masked_softmax, work_dtype


@dataclass
class DecodeResult:
    """One policy replayed over one sequence at one budget.

    steps: (S,) the decoded positions t = prefill … N − 1 (step t's query reads keys ≤ t).
    mass: (B, H, S) the share of full causal attention's weight on the kept keys.
    error: (B, H, S) ‖o_t − ô_t‖ / ‖o_t‖, the step's output against full attention's.
    kept: (B, H, S) how many keys each step read.
    bytes_per_key: K and V of one position at the input dtype, (d + d_v) · element size.
    """

    policy: str
    display_name: str
    params: dict
    budget: int
    prefill: int
    n: int
    steps: torch.Tensor
    mass: torch.Tensor
    error: torch.Tensor
    kept: torch.Tensor
    bytes_per_key: int
    sinks: int = 0
    reads_only: bool = False
    evicted_at: torch.Tensor | None = None  # (B, H, N) first step a key is not kept; N = never
    packed: np.ndarray | None = None  # (B, H, S, ⌈N/8⌉) bit-packed kept masks (dynamic policies)
    q: torch.Tensor | None = field(default=None, repr=False)  # the replayed queries and keys, for weights_at
    k: torch.Tensor | None = field(default=None, repr=False)
    scale: float = 1.0

    @property
    def label(self) -> str:
        return self.display_name if not self.params else (
            f"{self.display_name} (" + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in self.params.items()) + ")")

    @property
    def cache_bytes(self) -> torch.Tensor:
        """(B, H, S) bytes of K and V of the kept positions (for a reads-only policy: bytes read)."""
        return self.kept.to(torch.int64) * self.bytes_per_key

    @property
    def resident_bytes(self) -> torch.Tensor:
        """(B, H, S) bytes held in memory: the kept bytes, or the whole cache for a reads-only policy."""
        if not self.reads_only:
            return self.cache_bytes
        return ((self.steps + 1).to(torch.int64) * self.bytes_per_key).expand_as(self.kept).clone()

    def _index(self, step: int) -> int:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not self.prefill <= step < self.n:
            raise ParameterError(f"step = {step!r:.40} must be a decoded position in [{self.prefill}, {self.n - 1}].")
        return int(step) - self.prefill

    def kept_at(self, step: int) -> torch.Tensor:
        """(B, H, step + 1) bool: which positions 0 … step the query at position ``step`` read."""
        i = self._index(step)
        if self.evicted_at is not None:
            return self.evicted_at[..., :step + 1] > step
        bits = np.unpackbits(self.packed[:, :, i], axis=-1, count=step + 1)
        return torch.from_numpy(bits.astype(bool))

    def weights_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(full, policy): the query's weights over keys 0 … step, (B, H, step + 1) each, float64 —
        full causal attention, and the policy's softmax over its kept keys (0 elsewhere)."""
        self._index(step)
        q = self.q[..., step:step + 1, :]
        k = self.k[..., :step + 1, :]
        cdt = work_dtype(q.dtype)
        logits = (q.to(cdt) @ k.to(cdt).transpose(-1, -2)).squeeze(-2).double() * self.scale
        kept = self.kept_at(step).to(logits.device)
        return torch.softmax(logits, -1), masked_softmax(logits, kept)[0]

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(full, policy): every query's weights, (B, H, N, N) float32 each — full causal attention, and
        the policy's: the prompt's rows (before ``prefill``) read every earlier key, each decoded step t
        its softmax over the keys it kept (``weights_at(t)`` for every t at once). For the linked view;
        BudgetError when B·H·N² does not fit the matrix budget."""
        b, h, n = self.q.shape[0], self.q.shape[1], self.n
        check_budget((b, h, n, n), 8, "the decode replay's weights (full and policy)")
        cdt = work_dtype(self.q.dtype)
        logits = (self.q.to(cdt) @ self.k.to(cdt).transpose(-1, -2)).double() * self.scale
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        keep = causal.expand(b, h, n, n).clone()
        for step in range(self.prefill, n):
            keep[..., step, :step + 1] = self.kept_at(step)
        return masked_softmax(logits, causal)[0].float(), masked_softmax(logits, keep)[0].float()

    def summary(self) -> dict:
        """Final and mean kept mass, mean and max output error (over steps and heads), cache bytes
        summed over batch and heads: at the final step, the peak, and the full cache's."""
        total = self.cache_bytes.sum(dim=(0, 1))
        b, h = self.kept.shape[:2]
        return {
            "steps": int(self.steps.numel()),
            "final_mass": float(self.mass[..., -1].double().mean()),
            "mean_mass": float(self.mass.double().mean()),
            "mean_error": float(self.error.double().mean()),
            "max_error": float(self.error.double().max()),
            "final_cache_bytes": int(total[-1]),
            "peak_cache_bytes": int(total.max()),
            "full_cache_bytes": int(b * h * self.n * self.bytes_per_key),
        }

    def rows(self) -> list[dict]:
        """One row per (batch, head, step): the CSV table."""
        b, h, s = self.kept.shape
        steps = self.steps.tolist()
        mass, err = self.mass.double().tolist(), self.error.double().tolist()
        kept, nbytes = self.kept.tolist(), self.cache_bytes.tolist()
        return [{"batch": bi, "head": hi, "step": steps[si], "kept": kept[bi][hi][si],
                 "mass": mass[bi][hi][si], "error": err[bi][hi][si], "cache_bytes": nbytes[bi][hi][si]}
                for bi in range(b) for hi in range(h) for si in range(s)]

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything measured, as NumPy arrays (the NPZ file)."""
        out = {"steps": self.steps.numpy(), "mass": self.mass.double().numpy(), "error": self.error.double().numpy(),
               "kept": self.kept.numpy(), "cache_bytes": self.cache_bytes.numpy(),
               "resident_bytes": self.resident_bytes.numpy()}
        if self.evicted_at is not None:
            out["evicted_at"] = self.evicted_at.numpy()
        if self.packed is not None:
            out["kept_bits"] = self.packed
        return out


def needle_found(result: DecodeResult, needle: int, query: int | None = None) -> torch.Tensor:
    """(B, H) bool: at step ``query`` (default the last position) the policy still holds the key at
    ``needle`` and puts more weight on it than on any other kept key, so the output retrieves it."""
    query = result.n - 1 if query is None else query
    if isinstance(needle, bool) or not isinstance(needle, (int, np.integer)) or not 0 <= needle <= query:
        raise ParameterError(f"needle = {needle!r:.40} must be a position in [0, {query}] (at or before the query).")
    _, weights = result.weights_at(query)
    return result.kept_at(query)[..., needle].to(weights.device) & (weights.argmax(-1) == needle)
