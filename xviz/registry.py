"""The variant catalog: typed parameter specs, capabilities, and registration.

A variant is a function ``fn(q, k, v, ctx, **params) -> Output`` plus a ``VariantSpec``.
Built-in variants register themselves as the last statement of their module in
``xviz/variants/``; third-party modules do the same and are loaded from the entry
point group ``xviz.variants`` or the ``XVIZ_PLUGINS`` environment variable.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .errors import ParameterError, UnknownVariantError, XvizError

FAMILIES = (
    "exact",
    "fixed pattern",
    "combined pattern",
    "learnable pattern",
    "low rank",
    "kernel",
    "memory/downsampling",
    "recurrence",
    "prior",
)

# Complexity classes a spec may claim; "subquadratic" ones must never build an N×N tensor.
SUBQUADRATIC = ("linear", "n log n", "n sqrt n", "sparse")


@dataclass(frozen=True)
class Param:
    """One typed parameter. ``high`` may be the string "N" (the sequence length) or "d" (head dim).

    kind: "int", "float", "bool" or "choice" (with ``choices``).
    """

    name: str
    kind: str
    default: Any
    help: str
    low: float | None = None
    high: float | str | None = None
    choices: tuple[str, ...] = ()
    log: bool = False  # a slider on a log scale reads better (features, buckets, rank)

    def bounds(self, n: int, d: int) -> tuple[float | None, float | None]:
        high = {"N": n, "d": d}.get(self.high, self.high) if isinstance(self.high, str) else self.high
        return self.low, high

    def coerce(self, value: Any, n: int, d: int) -> Any:
        """Return ``value`` as this parameter's type, or raise ParameterError naming the valid range."""
        try:
            if self.kind == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                value = int(value)
            elif self.kind == "float":
                value = float(value)
                if value != value or value in (float("inf"), float("-inf")):
                    raise ValueError
            elif self.kind == "bool":
                if isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0"):
                        raise ValueError
                    value = value.lower() in ("true", "1")
                value = bool(value)
            elif self.kind == "choice":
                value = str(value)
                if value not in self.choices:
                    raise ParameterError(
                        f"{self.name} = {value!r} is not one of {', '.join(map(repr, self.choices))}."
                    )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ParameterError):
                raise
            raise ParameterError(f"{self.name} = {value!r} is not a valid {self.kind}.") from None
        low, high = self.bounds(n, d)
        if self.kind in ("int", "float"):
            if (low is not None and value < low) or (high is not None and value > high):
                raise ParameterError(f"{self.name} = {value} is outside its valid range {self.range_text(n, d)}.")
        return value

    def fit_default(self, n: int, d: int) -> Any:
        """The default, clamped into the range at this shape (window 64 at N = 50 becomes 50)."""
        low, high = self.bounds(n, d)
        value = self.default
        if self.kind in ("int", "float"):
            if high is not None and value > high:
                value = high
            if low is not None and value < low:
                value = low
            value = int(value) if self.kind == "int" else float(value)
        return value

    def range_text(self, n: int | None = None, d: int | None = None) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(self.choices) + "}"
        low, high = (self.low, self.high) if n is None else self.bounds(n, d or 0)
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else (high if isinstance(high, str) else f"{high:g}")
        return f"[{lo}, {hi}]"


@dataclass(frozen=True)
class Cost:
    """Theoretical cost of the variant's own algorithm at one shape.

    flops: multiply-adds counted as 2. bytes: the tensors the algorithm materialises
    (inputs, intermediates, output) at the input's element size.
    """

    flops: float
    bytes: float


@dataclass(frozen=True)
class VariantSpec:
    name: str
    display_name: str
    family: str
    paper: str
    complexity: str  # human text, e.g. "O(N·w·d)"
    complexity_class: str  # "linear", "n log n", "n sqrt n", "sparse", "quadratic", "cubic"
    fn: Callable[..., Any]
    cost: Callable[..., Cost]  # cost(B, H, N, d, dv, causal=..., **params) -> Cost
    params: tuple[Param, ...] = ()
    causal: bool = False  # supports causal=True
    stochastic: bool = False  # depends on the seed
    row_stochastic: bool = False  # effective weights are non-negative and rows sum to 1
    has_matrix: bool = True  # can materialise the effective N×N weights
    artifacts: tuple[str, ...] = ()  # names of the artifacts it returns
    # Parameter overrides under which the variant equals exact softmax attention: fn(N, d, H) -> dict.
    exact_when: Callable[[int, int, int], dict] | None = None
    # Extra validation across parameters and the shape: check(params, n, d, heads) raises ParameterError.
    check: Callable[..., None] | None = None
    content_based: bool = True  # equivariant to permuting keys and values together
    mixes_heads: bool = False  # a head's output depends on other heads' inputs by design (shared K/V)
    description: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise XvizError(f"variant {self.name!r}: family {self.family!r} is not one of {FAMILIES}.")

    @property
    def subquadratic(self) -> bool:
        return self.complexity_class in SUBQUADRATIC

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ParameterError(f"{self.display_name} has no parameter {name!r}; it has: {self.param_names()}.")

    def param_names(self) -> str:
        return ", ".join(p.name for p in self.params) or "none"

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def resolve(self, params: dict, n: int, d: int, heads: int) -> dict:
        """Defaults filled in, every value coerced and range-checked, cross-checks run."""
        unknown = set(params) - {p.name for p in self.params}
        if unknown:
            raise ParameterError(
                f"{self.display_name} has no parameter {', '.join(sorted(map(repr, unknown)))}; "
                f"it takes: {self.param_names()}."
            )
        out = {p.name: p.coerce(params[p.name], n, d) if p.name in params else p.fit_default(n, d)
               for p in self.params}
        if self.check is not None:
            self.check(out, n=n, d=d, heads=heads)
        return out


_REGISTRY: dict[str, VariantSpec] = {}


def register_variant(spec: VariantSpec | None = None, /, **fields: Any):
    """Add a variant to the catalog.

    Either ``register_variant(VariantSpec(...))``, or as a decorator:
    ``@register_variant(name=..., display_name=..., family=..., ...)`` on the compute function.
    A name already taken is replaced (so a plugin can be reloaded while developing it).
    """
    if spec is not None:
        _REGISTRY[spec.name] = spec
        return spec

    def decorate(fn: Callable) -> Callable:
        register_variant(VariantSpec(fn=fn, **fields))
        return fn

    return decorate


def unregister_variant(name: str) -> None:
    _REGISTRY.pop(name, None)


_LOADED = False


def _ensure_loaded() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import variants  # noqa: F401  (built-ins register on import)

    load_plugins()


def load_plugins(names: Sequence[str] | None = None) -> list[str]:
    """Import plugin modules: ``names``, else ``XVIZ_PLUGINS`` (comma-separated) and the
    ``xviz.variants`` entry point group. Returns the modules loaded; a module that fails
    to import raises XvizError naming it."""
    loaded = []
    if names is None:
        names = [n.strip() for n in os.environ.get("XVIZ_PLUGINS", "").split(",") if n.strip()]
        from importlib.metadata import entry_points

        for ep in entry_points(group="xviz.variants"):
            try:
                ep.load()
                loaded.append(ep.value)
            except Exception as exc:  # a broken plugin must not take the catalog down silently
                raise XvizError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise XvizError(f"plugin module {name!r} failed to import: {exc}") from exc
        loaded.append(name)
    return loaded


def list_variants(family: str | None = None) -> list[VariantSpec]:
    """Every registered variant's spec, in catalog order (family, then name)."""
    _ensure_loaded()
    specs = [s for s in _REGISTRY.values() if family is None or s.family == family]
    return sorted(specs, key=lambda s: (FAMILIES.index(s.family), s.name))


def get_variant(name: str) -> VariantSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownVariantError(
            f"unknown variant {name!r}; known variants: {', '.join(sorted(_REGISTRY))}."
        ) from None
