"""The KV-cache policy catalog: ``PolicySpec``, ``register_policy`` / ``get_policy`` / ``list_policies``.

A policy decides, at every decoding step, which cached key positions the step's query reads. It is a
function ``fn(replay, **params) -> select`` (see ``xviz.decode.replay``): it may look at the prompt
through ``replay`` (its shape, budget, prefill, full prompt attention) and returns ``select(chunk)``,
called once per chunk of consecutive steps, in order, returning which keys each step keeps,
(B, H, c, t1) bool (or broadcastable to it). Parameters are typed ``xviz.Param``s, like variants'.

Plugins use the variants' mechanism: a module named in ``XVIZ_PLUGINS`` or an entry point in the
``xviz.variants`` group may call ``register_policy`` too; the catalog is complete (plugins loaded)
before anyone reads it, and a name already taken raises unless ``replace=True``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..core import registry as variant_registry
from ..core.errors import ParameterError, XvizError
from ..core.catalog import Catalog, Spec
from ..core.registry import Param

# simulate()'s own keywords: a policy parameter may not take one of these names.
RESERVED = ("budget", "prefill", "scale", "causal", "policy", "q", "k", "v")


@dataclass(frozen=True)
class PolicySpec(Spec):
    """One KV-cache policy.

    evicts_once: a key that leaves the cache never returns (window, H2O, TOVA, SnapKV); the replay
        stores one eviction step per key and checks the promise. Otherwise (Quest) every step's kept
        set is stored as a bit mask.
    reads_only: the whole cache stays in memory and the policy only chooses what each query reads
        (Quest); the kept bytes are then bytes read, not bytes held.
    uses_budget: False for the reference (the full cache ignores the budget).
    sinks: how many leading positions the policy pins (drawn as sinks), a function of the params.
    check(params, budget, n, prefill) raises ParameterError for combinations the ranges cannot express.
    plain: the policy's plain form, ``plain(q, k, budget=, prefill=, scale=, **params)`` on one batch
        item (q, k: (H, N, d)) -> per head, the kept set of every step: what the tests hold ``fn`` to."""

    name: str
    display_name: str
    paper: str
    fn: Callable[..., Callable]
    params: tuple[Param, ...] = ()
    evicts_once: bool = True
    reads_only: bool = False
    uses_budget: bool = True
    sinks: Callable[[Mapping[str, Any]], int] | None = None
    check: Callable[..., None] | None = None
    description: str = ""
    plain: Callable[..., list] | None = None

    def __post_init__(self) -> None:
        taken = [p.name for p in self.params if p.name in RESERVED]
        if taken:
            raise XvizError(f"policy {self.name!r}: parameter name {taken[0]!r} is reserved by simulate().")

    @property
    def builtin(self) -> bool:
        return self.module.startswith("xviz.decode.")

    def resolve(self, params: Mapping[str, Any], *, n: int, d: int, budget: int, prefill: int) -> dict:
        """Defaults filled in, every value coerced and range-checked, the cross-check run."""
        out = self.coerce_all(params, n, d, f"the {self.display_name} policy")
        if self.check is not None:
            self.check(out, budget=budget, n=n, prefill=prefill)
        return out

    def sink_count(self, params: Mapping[str, Any]) -> int:
        return int(self.sinks(params)) if self.sinks is not None else 0


_CATALOG = Catalog("KV-cache policy", "policies", ParameterError, PolicySpec)


def register_policy(spec: PolicySpec, /, *, replace: bool = False) -> PolicySpec:
    """Add a policy to the catalog; a name already taken raises XvizError unless ``replace=True``."""
    return _CATALOG.register(spec, replace)


unregister_policy = _CATALOG.unregister


def _ensure_loaded() -> None:
    # The built-ins registered when this package was imported; plugins load with the variant catalog
    # (XVIZ_PLUGINS, entry points), whose loader is thread-safe and runs once.
    from . import policies  # noqa: F401

    variant_registry.ensure_loaded()


def list_policies() -> list[PolicySpec]:
    """Every registered policy: the reference (full) first, then by name."""
    _ensure_loaded()
    return sorted(_CATALOG.values(), key=lambda s: (s.uses_budget, s.name))


def get_policy(name: str) -> PolicySpec:
    _ensure_loaded()
    return _CATALOG.get(name)
