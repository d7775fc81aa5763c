"""The variant catalog: typed parameter specs, capabilities, artifacts, and registration.

A variant is a function ``fn(q, k, v, ctx, **params) -> Output`` plus a ``VariantSpec`` that says
everything the product needs to know about it: its parameters (``Param``, with ranges and validity
rules), what it can do (causal, cross-attention, row-stochastic or signed weights, shared QK, a
rank parameter, …), what it draws (``Artifact``: a kind and dims, so any plugin's artifacts get a
figure), and its theoretical cost at a ``Shape``. Built-in variants register themselves as the
last statement of their module in ``xviz/variants/``; third-party modules do the same and are
loaded from the entry point group ``xviz.variants`` or the ``XVIZ_PLUGINS`` environment variable.

Loading is thread-safe and complete before anyone reads the catalog (the app's first sessions
arrive together); a plugin that fails to load is recorded and reported by ``plugin_errors()`` on
every later call, never silently missing.
"""
from __future__ import annotations

import importlib
import inspect
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .catalog import Catalog, Spec
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

# What an artifact is, so a figure can be chosen for it without knowing the variant:
#   mask    bool (…, Nq, Nk): which keys each query may attend          -> a max-pooled pattern
#   ids     int (…, N): a group / bucket / segment / cluster per token  -> a coloured strip
#   points  float (…, M, d): coordinates (landmarks, centroids, inducing points) -> a heatmap
#   matrix  float (…, R, C): a projection, a factor, a state            -> a heatmap
#   curve   float (…, L): one value per position or index (counts, norms, spectra) -> a line
#   tensor  anything else: drawn by its rank (1-D line, 2-D+ heatmap)
ARTIFACT_KINDS = ("mask", "ids", "points", "matrix", "curve", "tensor")


@dataclass(frozen=True)
class Artifact:
    """One named artifact a variant returns: its kind (see ``ARTIFACT_KINDS``), its dims (names
    such as "B", "H", "N", "Nk", "rounds", "m"), and a sentence saying what it is."""

    name: str
    kind: str = "tensor"
    dims: tuple[str, ...] = ()
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ARTIFACT_KINDS:
            raise XvizError(f"artifact {self.name!r}: kind {self.kind!r} is not one of {ARTIFACT_KINDS}.")


@dataclass(frozen=True)
class Param:
    """One typed parameter. ``high`` may be the string "N" (the key sequence length) or "d" (head dim).

    kind: "int", "float", "bool" or "choice" (with ``choices``). ``rule(value, n, d)`` returns a
    sentence when a value inside the range is still invalid (Reformer's buckets must be 1 or even),
    else None; sweeps and widgets use ``valid`` to offer only values that will run."""

    name: str
    kind: str
    default: Any
    help: str
    low: float | None = None
    high: float | str | None = None
    choices: tuple[str, ...] = ()
    log: bool = False  # a slider on a log scale reads better (features, buckets, rank)
    rule: Callable[[Any, int, int], str | None] | None = None

    def bounds(self, n: int, d: int) -> tuple[float | None, float | None]:
        high = {"N": n, "d": d}.get(self.high, self.high) if isinstance(self.high, str) else self.high
        return self.low, high

    def valid(self, value: Any, n: int, d: int) -> bool:
        try:
            self.coerce(value, n, d)
        except ParameterError:
            return False
        return True

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
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, ParameterError):
                raise
            raise ParameterError(f"{self.name} = {value!r:.80} is not a valid {self.kind}.") from None
        low, high = self.bounds(n, d)
        if self.kind in ("int", "float"):
            if (low is not None and value < low) or (high is not None and value > high):
                raise ParameterError(f"{self.name} = {value} is outside its valid range {self.range_text(n, d)}.")
        if self.rule is not None:
            why = self.rule(value, n, d)
            if why:
                raise ParameterError(f"{self.name} = {value} {why}")
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
class Shape:
    """The shape a variant runs at: batch, heads, queries n, head dim d, value dim dv, causal, and
    the number of keys nk (cross-attention; equal to n for self-attention)."""

    b: int
    h: int
    n: int
    d: int
    dv: int
    causal: bool = False
    nk: int = -1

    def __post_init__(self) -> None:
        if self.nk < 0:
            object.__setattr__(self, "nk", self.n)


@dataclass(frozen=True)
class Cost:
    """Theoretical cost of the variant's own algorithm at one shape.

    flops: multiply-adds counted as 2. bytes: the tensors the algorithm materialises
    (inputs, intermediates, output) at 4 bytes an element.
    """

    flops: float
    bytes: float


Capability = bool | Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class VariantSpec(Spec):
    name: str
    display_name: str
    family: str
    paper: str
    complexity: str  # human text, e.g. "O(N·w·d)"
    complexity_class: str  # "linear", "n log n", "n sqrt n", "sparse", "quadratic", "cubic"
    fn: Callable[..., Any]
    cost: Callable[..., Cost]  # cost(shape: Shape, **resolved_params) -> Cost
    params: tuple[Param, ...] = ()
    causal: bool = False  # supports causal=True
    causal_only: bool = False  # a recurrence over positions: always runs causally (result.causal says so)
    # The order a causal run generates positions in, causal_order(n, params) -> (N,) positions, when it is
    # not the token order (Image Transformer's block raster); None: token order.
    causal_order: Callable[[int, Mapping[str, Any]], Any] | None = None
    cross: bool = False  # accepts queries and keys of different lengths (N_q ≠ N_k, non-causal)
    stochastic: bool = False  # depends on the seed
    # Effective weights non-negative with rows summing to 1 (a bool, or a function of the resolved params).
    row_stochastic: Capability = False
    # Effective weights may be negative (figures then use a diverging scale centred at 0).
    signed: Capability = False
    has_matrix: bool = True  # can materialise the effective N×N weights
    artifacts: tuple[Artifact, ...] = ()
    # Parameter overrides under which the variant equals exact softmax attention: fn(N, d, H) -> dict.
    exact_when: Callable[[int, int, int], dict] | None = None
    # Extra validation across parameters and the shape: check(params, n, d, heads) raises ParameterError.
    check: Callable[..., None] | None = None
    content_based: bool = True  # equivariant to permuting keys and values together
    mixes_heads: bool = False  # a head's output depends on other heads' inputs by design (shared K/V)
    shared_qk: bool = False  # keys are the (normalised) queries; the k input is ignored
    # Parameters at which the effective matrix has rank ≤ k: low_rank(k, fixed_params) -> dict.
    low_rank: Callable[[int, Mapping[str, Any]], dict] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise XvizError(f"variant {self.name!r}: family {self.family!r} is not one of {FAMILIES}.")
        arts = tuple(a if isinstance(a, Artifact) else Artifact(str(a)) for a in self.artifacts)
        object.__setattr__(self, "artifacts", arts)

    @property
    def subquadratic(self) -> bool:
        return self.complexity_class in SUBQUADRATIC

    @property
    def builtin(self) -> bool:
        return self.module.startswith("xviz.variants.")

    def is_row_stochastic(self, params: Mapping[str, Any] | None = None) -> bool:
        rs = self.row_stochastic
        return bool(rs(params or self.defaults()) if callable(rs) else rs)

    def is_signed(self, params: Mapping[str, Any] | None = None) -> bool:
        s = self.signed
        return bool(s(params or self.defaults()) if callable(s) else s)

    @property
    def artifact_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.artifacts)

    def artifact(self, name: str) -> Artifact:
        for a in self.artifacts:
            if a.name == name:
                return a
        return Artifact(name)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ParameterError(f"{self.display_name} has no parameter {name!r}; it has: {self.param_names()}.")

    def resolve(self, params: Mapping[str, Any], n: int, d: int, heads: int) -> dict:
        """Defaults filled in, every value coerced and range-checked, cross-checks run."""
        out = self.coerce_all(params, n, d, self.display_name)
        if self.check is not None:
            self.check(out, n=n, d=d, heads=heads)
        return out

    def cost_at(self, shape: Shape, params: Mapping[str, Any] | None = None) -> Cost:
        """The cost at ``shape`` with ``params`` resolved (defaults filled in) at that shape."""
        resolved = self.resolve(dict(params or {}), n=shape.nk, d=shape.d, heads=shape.h)
        return self.cost(shape, **resolved)


# ----------------------------------------------------------------------------------------------- catalog
_CATALOG = Catalog("variant", "variants", UnknownVariantError)
_LOCK = threading.RLock()  # the loading lock (re-entrant: loading the built-ins registers them from this thread)
_LOADED = False
_PLUGIN_ERRORS: dict[str, str] = {}


def register_variant(spec: VariantSpec | None = None, /, *, replace: bool = False, **fields: Any):
    """Add a variant to the catalog.

    Either ``register_variant(VariantSpec(...))``, or as a decorator:
    ``@register_variant(name=..., display_name=..., family=..., ...)`` on the compute function.
    A name already taken raises ``XvizError`` unless ``replace=True`` (reloading a plugin while
    developing it), so a plugin can never silently replace a built-in.
    """
    if spec is not None:
        _check_cost_signature(spec)
        return _CATALOG.register(spec, replace)

    def decorate(fn: Callable) -> Callable:
        register_variant(VariantSpec(fn=fn, **fields), replace=replace)
        return fn

    return decorate


def _check_cost_signature(spec: VariantSpec) -> None:
    """The cost function must take ``cost(shape, **params)``: a plugin written for the earlier
    ``cost(b, h, n, d, dv, causal, **params)`` is named here once, not by a TypeError on every run."""
    try:
        inspect.signature(spec.cost).bind(Shape(1, 1, 8, 4, 4), **spec.defaults())
    except TypeError:
        raise XvizError(f"variant {spec.name!r} ({spec.module}): its cost function takes "
                        f"{_signature_text(spec.cost)}; xviz calls cost(shape, **params) with shape an xviz.Shape "
                        f"(b, h, n, d, dv, causal, nk) and the variant's parameters by name.") from None
    except ValueError:  # a builtin or C function without a signature: nothing to check
        pass


def _signature_text(fn) -> str:
    try:
        return f"cost{inspect.signature(fn)}"
    except (TypeError, ValueError):
        return "another signature"


def unregister_variant(name: str) -> None:
    _CATALOG.unregister(name)


def ensure_loaded() -> None:
    """Load the built-in variants and the plugins, once; every reader of the catalog calls this first."""
    global _LOADED
    if _LOADED:  # set only once everything below has finished: readers never see a partial catalog
        return
    with _LOCK:
        if _LOADED:
            return
        from .. import variants  # noqa: F401  (built-ins register on import)

        load_plugins(strict=False)
        _LOADED = True


def _plugin_names() -> list[tuple[str, Callable[[], Any]]]:
    from importlib.metadata import entry_points

    out = [(f"entry point {ep.name!r} ({ep.value})", ep.load) for ep in entry_points(group="xviz.variants")]
    for name in os.environ.get("XVIZ_PLUGINS", "").split(","):
        if name.strip():
            out.append((f"plugin module {name.strip()!r}", lambda m=name.strip(): importlib.import_module(m)))
    return out


def load_plugins(names: Sequence[str] | None = None, *, strict: bool = True) -> list[str]:
    """Import plugin modules: ``names``, else ``XVIZ_PLUGINS`` (comma-separated) and the
    ``xviz.variants`` entry point group. Returns what loaded. A plugin that fails is recorded in
    ``plugin_errors()`` (shown by the app and the CLI on every later call) and, when ``strict``,
    raises XvizError naming it."""
    items = (_plugin_names() if names is None else
             [(f"plugin module {n!r}", lambda m=n: importlib.import_module(m)) for n in names])
    loaded = []
    with _LOCK:
        for label, load in items:
            try:
                load()
            except Exception as exc:  # a broken plugin must not take the catalog down silently
                msg = f"{label} failed to load: {type(exc).__name__}: {exc}"
                _PLUGIN_ERRORS[label] = msg[:500]
                if strict:
                    raise XvizError(msg) from exc
                continue
            _PLUGIN_ERRORS.pop(label, None)
            loaded.append(label)
    return loaded


def plugin_errors() -> list[str]:
    """One sentence per plugin that failed to load (empty when all loaded)."""
    ensure_loaded()
    with _LOCK:
        return list(_PLUGIN_ERRORS.values())


def list_variants(family: str | None = None) -> list[VariantSpec]:
    """Every registered variant's spec, in catalog order (family, then name)."""
    ensure_loaded()
    specs = [s for s in _CATALOG.values() if family is None or s.family == family]
    return sorted(specs, key=lambda s: (FAMILIES.index(s.family), s.name))


def get_variant(name: str) -> VariantSpec:
    ensure_loaded()
    return _CATALOG.get(name)
