"""Input sources as a catalog, like the variants and the KV-cache policies.

A ``SourceSpec`` says everything the product needs to know about a source: its name, its typed settings
(``Field``: URL key, type, default, range or choices, a sentence of help) and how it loads a
``SequenceInput``. From the spec come the sidebar's widgets, the URL keys, the CLI's ``--input
NAME:VALUE`` grammar (VALUE fills ``cli_field``) and the cache key (``InputSpec.key`` hashes every
value). A new source is one module ending in ``register_source(SourceSpec(...))``; the built-in ones are
in ``xviz.inputs.sources``, a plugin's load like variant plugins (``XVIZ_PLUGINS``, entry points).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..core.catalog import Catalog
from ..core.errors import InputError, ParameterError
from ..core.registry import Param, ensure_loaded
from ._common import LIMITS

FIELD_KINDS = ("int", "float", "bool", "choice", "str", "text", "file")


def quoted(value: Any, limit: int = 60) -> str:
    """A user's value as a message echoes it: quoted, and cut to ``limit`` characters (a link may carry
    100 KB in one parameter)."""
    text = str(value)
    return repr(text[:limit] + "…") if len(text) > limit else repr(text)


def parse_value(key: str, kind: str, raw: Any, low=None, high=None, choices: Sequence[str] = ()) -> Any:
    """A URL (or command-line) string as ``kind``; ParameterError with a sentence when it is not valid.
    ``choices`` empty for a choice: any text is taken (an open choice, checked when the input loads)."""
    text = str(raw).strip()
    if kind in ("str", "text"):
        return str(raw)
    if kind == "bool":
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise ParameterError(f"{key} = {quoted(text)} is not true or false.")
    if kind == "choice":
        if choices and text not in choices:
            raise ParameterError(f"{key} = {quoted(text)} is not one of: {', '.join(choices)}.")
        return text
    if kind == "file":
        raise ParameterError(f"{key} is a file: a link cannot carry it.")
    try:
        value: Any = float(text)
    except ValueError:
        raise ParameterError(f"{key} = {quoted(text)} is not a number.") from None
    if not math.isfinite(value):
        raise ParameterError(f"{key} = {quoted(text)} is not a finite number.")
    if kind == "int":
        if not float(value).is_integer():
            raise ParameterError(f"{key} = {quoted(text)} is not a whole number.")
        value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ParameterError(f"{key} = {text[:40]}{'…' if len(text) > 40 else ''} is outside its valid range [{lo}, {hi}].")
    return value


@dataclass(frozen=True)
class Field:
    """One typed setting: its URL key (also the widget's key and the ``InputSpec`` value's name), kind
    (``FIELD_KINDS``: "text" is several lines, "file" a (name, bytes) pair no link can carry), default,
    label, help, and range (``high`` may name a ``LIMITS`` entry, read when checked) or choices (a tuple,
    or a function listing them now; for a file, the accepted extensions). An ``open`` choice also takes a value that is not listed (a model
    folder the operator allows), checked when the input loads; ``more`` settings are drawn folded away."""

    key: str
    kind: str
    default: Any
    label: str
    help: str = ""
    low: float | None = None
    high: float | str | None = None
    choices: tuple[str, ...] | Callable[[], Sequence[str]] = ()
    open: bool = False
    more: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FIELD_KINDS:
            raise InputError(f"setting {self.key!r}: kind {self.kind!r} is not one of {', '.join(FIELD_KINDS)}.")

    def options(self) -> tuple[str, ...]:
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def upper(self) -> float | None:
        return LIMITS[self.high] if isinstance(self.high, str) else self.high

    def parse(self, raw: Any) -> Any:
        """The URL value as this field's type; ParameterError with a sentence when it is not valid."""
        if isinstance(raw, (list, tuple)):
            raw = raw[-1] if raw else ""
        return parse_value(self.key, self.kind, raw, self.low, self.upper(), () if self.open else self.options())


@dataclass(frozen=True)
class SourceSpec:
    """An input source.

    label: a few words saying what it is (the source picker's help lists them); help: a sentence more.
    fields: its settings, in the order the sidebar draws them.
    load: ``load(values, seed) -> SequenceInput`` with ``values`` holding every field's value (and
      ``knobs``, the chosen knobs, when the source has them).
    cli_field: the field ``--input NAME:VALUE`` fills (``cli_name`` defaults to the source's name);
      ``cli_settings`` names the fields the command line's own flags (--n, --d, --heads, --layer, --kv)
      may set (None: every field).
    seeded: whether the seed changes the input (then it is part of the cache key).
    knobs: for a source with per-choice typed knobs (the synthetic generators), ``knobs(values) ->
      (URL prefix, Params)``; their widgets sit under ``<prefix>.<knob>``.
    note: ``note(values) -> str``, a sentence shown under the settings (what the chosen sample is).
    """

    name: str
    label: str
    help: str
    fields: tuple[Field, ...]
    load: Callable[[Mapping[str, Any], int], Any]
    cli_field: str | None = None
    cli_name: str = ""
    cli_settings: tuple[str, ...] | None = None
    seeded: bool = True
    knobs: Callable[[Mapping[str, Any]], tuple[str, Sequence[Param]]] | None = None
    note: Callable[[Mapping[str, Any]], str] | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)  # old keyword names of fields (kv_text -> kv)

    def __post_init__(self) -> None:
        keys = [f.key for f in self.fields]
        if len(set(keys)) != len(keys) or {"knobs", "source"} & set(keys):
            raise InputError(f"input source {self.name!r}: its settings need distinct keys, and 'knobs' and "
                             f"'source' are reserved.")
        if self.cli_field is not None and self.cli_field not in keys:
            raise InputError(f"input source {self.name!r}: cli_field {self.cli_field!r} is not one of its settings.")

    @property
    def module(self) -> str:
        return getattr(self.load, "__module__", None) or "?"

    @property
    def command(self) -> str:
        """The word before the colon in ``--input``."""
        return self.cli_name or self.name

    def cli_form(self) -> str:
        if self.cli_field is None:
            return f"{self.command}:"
        f = self.field(self.cli_field)
        return f"{self.command}:{'PATH' if f.kind == 'file' else f.key.upper()}"

    def field(self, key: str) -> Field:
        for f in self.fields:
            if f.key == key:
                return f
        raise InputError(f"the {self.name} input has no setting {quoted(key, 40)}; it takes: "
                         f"{', '.join(f.key for f in self.fields) or 'none'}.")

    def defaults(self) -> dict:
        return {f.key: f.default for f in self.fields}


_CATALOG = Catalog("input source", "input sources", InputError, SourceSpec)


def register_source(spec: SourceSpec, /, *, replace: bool = False) -> SourceSpec:
    """Add a source to the catalog; a name already taken raises unless ``replace=True``."""
    return _CATALOG.register(spec, replace)


unregister_source = _CATALOG.unregister


def list_sources() -> list[SourceSpec]:
    """Every registered source: the built-ins in their order, then plugins' by name."""
    ensure_loaded()  # plugins register their sources on import, with the variant plugins
    specs = _CATALOG.values()
    return [s for s in specs if s.module.startswith("xviz.")] + sorted(
        (s for s in specs if not s.module.startswith("xviz.")), key=lambda s: s.name)


def get_source(name: str) -> SourceSpec:
    try:
        return _CATALOG.get(name)
    except InputError:
        ensure_loaded()
        return _CATALOG.get(name)


def cli_forms() -> str:
    return ", ".join(s.cli_form() for s in list_sources())
