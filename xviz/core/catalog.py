"""A catalog of named specs, safe to read while another thread registers: what the variant catalog and
the KV-cache policy catalog share. A name already taken raises unless ``replace=True``; an unknown
name raises a sentence listing the known ones."""
from __future__ import annotations

import threading
from typing import Any, Mapping

from .errors import XvizError


class Catalog:
    def __init__(self, kind: str, plural: str, unknown_error: type = XvizError, spec_type: type | None = None):
        self.kind, self.plural, self._unknown, self._type = kind, plural, unknown_error, spec_type
        self._items: dict[str, Any] = {}
        self._lock = threading.Lock()  # held only around dict access, never while importing

    def register(self, spec, replace: bool = False):
        if self._type is not None and not isinstance(spec, self._type):
            raise XvizError(f"a {self.kind} is registered as a {self._type.__name__}, not a {type(spec).__name__}.")
        with self._lock:
            old = self._items.get(spec.name)
            if old is not None and not replace:
                raise XvizError(f"{self.kind} name {spec.name!r} (from {spec.module}) is already registered by "
                                f"{old.module}; choose another name, or pass replace=True to replace it on purpose.")
            self._items[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        with self._lock:
            self._items.pop(name, None)

    def get(self, name):
        with self._lock:
            spec = self._items.get(name) if isinstance(name, str) else None
            known = sorted(self._items)
        if spec is None:
            raise self._unknown(f"unknown {self.kind} {str(name)[:80]!r}; known {self.plural}: {', '.join(known)}.")
        return spec

    def values(self) -> list:
        with self._lock:
            return list(self._items.values())


class Spec:
    """What a variant's and a policy's spec share: where the code lives, its typed parameters."""

    @property
    def module(self) -> str:
        """Where the code lives (named in every error a broken plugin causes)."""
        return getattr(self.fn, "__module__", None) or "?"

    def param_names(self) -> str:
        return ", ".join(p.name for p in self.params) or "none"

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def coerce_all(self, params: Mapping[str, Any], n: int, d: int, what: str) -> dict:
        """Defaults filled in, every value coerced and range-checked; an unknown name raises."""
        from .errors import ParameterError

        unknown = set(params) - {p.name for p in self.params}
        if unknown:
            names = ", ".join(sorted(repr(str(u)[:40]) for u in unknown)[:5])
            raise ParameterError(f"{what} has no parameter {names}; it takes: {self.param_names()}.")
        return {p.name: p.coerce(params[p.name], n, d) if p.name in params else p.fit_default(n, d)
                for p in self.params}
