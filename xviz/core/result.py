"""What a variant returns (``Output``) and what ``xviz.run`` hands the user (``AttentionResult``)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from .errors import BudgetError, VariantError
from .registry import Cost

# Bytes an N×N-sized request (matrix(), a dense mask) may allocate. 2 GiB by default:
# enough for B·H·N² float32 at N = 8K with 8 heads, far below this machine's memory.
_DEFAULT_BUDGET = int(os.environ.get("XVIZ_MATRIX_BUDGET_BYTES", 2 * 1024**3))
_budget = _DEFAULT_BUDGET


def set_matrix_budget(nbytes: int) -> None:
    """Largest allocation ``matrix()`` and dense artifacts may make (bytes)."""
    global _budget
    _budget = int(nbytes)


def matrix_budget() -> int:
    return _budget


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry is finite, in one min/max pass (NaN and ±∞ reach the extremes): torch.isfinite
    builds temporaries and took 17× longer on a (8, 4096, 64) float32 tensor here."""
    if t.numel() == 0 or not t.is_floating_point():
        return True
    lo, hi = torch.aminmax(t.detach())
    return bool(torch.isfinite(lo) and torch.isfinite(hi))


def check_budget(shape: tuple[int, ...], element_size: int, what: str) -> None:
    nbytes = element_size
    for s in shape:
        nbytes *= int(s)
    if nbytes > _budget:
        raise BudgetError(
            f"{what} of shape {tuple(shape)} would take {nbytes / 2**30:.2f} GiB, over the "
            f"{_budget / 2**30:.2f} GiB budget; use a shorter sequence, fewer heads, or raise it "
            f"with xviz.set_matrix_budget() / XVIZ_MATRIX_BUDGET_BYTES."
        )


class Artifacts(Mapping):
    """Named tensors that explain a variant. A value may be given as a zero-argument callable:
    it is computed (and cached) on first access, so an N×N mask is built only when asked for."""

    def __init__(self, items: dict[str, Any] | None = None):
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> Any:
        value = self._items[key]
        if callable(value) and not isinstance(value, torch.Tensor):
            value = value()
            self._items[key] = value
        return value

    def __contains__(self, key: object) -> bool:  # the Mapping default would build a lazy value
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def nbytes(self) -> int:
        """Bytes of the artifacts evaluated so far (lazy ones count once built)."""
        total = 0
        for v in self._items.values():
            for t in (v.values() if isinstance(v, dict) else v if isinstance(v, (list, tuple)) else (v,)):
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total

    def is_lazy(self, key: str) -> bool:
        v = self._items[key]
        return callable(v) and not isinstance(v, torch.Tensor)

    def __repr__(self) -> str:
        return "Artifacts(" + ", ".join(self._items) + ")"


@dataclass
class Output:
    """A variant function's return value. ``matrix`` builds the (B, H, N, N) effective weights."""

    out: torch.Tensor
    matrix: Callable[[], torch.Tensor] | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttentionResult:
    """The result of ``xviz.run``.

    out: (B, H, N, d_v), or (N, d_v) when the inputs were (N, d).
    artifacts: named tensors (native shapes; see the variant's docstring), lazily computed.
    cost: theoretical FLOPs and bytes at this shape.
    """

    name: str
    out: torch.Tensor
    artifacts: Artifacts
    cost: Cost
    params: dict
    causal: bool
    seed: int
    matrix_fn: Callable[[], torch.Tensor] | None  # builds the 4-D matrix on request (None: there is none)
    matrix_shape: tuple[int, int, int, int]  # (B, H, N_q, N_k), checked against the budget before building
    squeeze: bool = False  # the inputs were 2-D: ``out`` and ``matrix()`` drop the batch and head axes
    source: str = ""  # who builds the matrix, named when it comes back wrong
    _matrix: torch.Tensor | None = field(default=None, repr=False)

    @property
    def has_matrix(self) -> bool:
        return self.matrix_fn is not None

    def matrix(self, keep: bool = True) -> torch.Tensor:
        """Effective attention weights A with A @ v == out: (B, H, N_q, N_k), or (N_q, N_k) for 2-D inputs.

        Raises BudgetError (before allocating) when B·H·N_q·N_k exceeds the matrix budget. ``keep=False``
        builds it without keeping it on the result (a result shared by a cache must not hold N×N)."""
        if self._matrix is not None:
            return self._matrix
        if not keep:
            return self._build_matrix()
        self._matrix = self._build_matrix()
        return self._matrix

    def _build_matrix(self) -> torch.Tensor:
        if self.matrix_fn is None:
            raise BudgetError(f"{self.name} has no effective attention matrix.")
        check_budget(self.matrix_shape, self.out.element_size(), f"the {self.name} attention matrix")
        m = self.matrix_fn()
        if not isinstance(m, torch.Tensor) or tuple(m.shape) != tuple(self.matrix_shape):
            got = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise VariantError(f"{self.source or self.name} returned a matrix of shape {got}; "
                               f"expected {tuple(self.matrix_shape)}.")
        return m[0, 0] if self.squeeze else m

    def drop_matrix(self) -> None:
        """Forget the materialised matrix (caches keep results, not their N×N weights)."""
        self._matrix = None

    @property
    def nbytes(self) -> int:
        """Bytes this result holds now: out, the matrix if materialised, and evaluated tensor artifacts."""
        total = self.out.numel() * self.out.element_size()
        if self._matrix is not None:
            total += self._matrix.numel() * self._matrix.element_size()
        return total + self.artifacts.nbytes()
