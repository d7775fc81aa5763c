"""One input dispatcher for the CLI and the app: an ``InputSpec`` names a registered source and the values
of its settings; it parses from the CLI's ``NAME:VALUE`` strings and from a URL, keys caches, and loads
a ``SequenceInput``. What a source takes comes from its ``SourceSpec`` (``xviz.inputs.catalog``).

    spec = InputSpec.parse("text:The animal didn't cross the street.", layer=2)
    spec = InputSpec(source="synthetic", kind="clustered", n=512, d=64, heads=4)
    InputSpec.from_query(spec.to_query()) == spec
    seq = spec.load(seed=0)

Cross-attention: ``kv`` (also ``kv_text``) sends a second text through the same model and layer; its K
and V are the keys and values, the first text's Q the queries.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from ..core.errors import InputError
from .catalog import SourceSpec, cli_forms, get_source, list_sources
from .sequence import SequenceInput


class InputSpec:
    """A source's name and every one of its settings (defaults filled in). Immutable and hashable; the
    settings read as attributes (``spec.text``, ``spec.n``)."""

    __slots__ = ("source", "values")

    def __init__(self, source: str = "text", **values: Any) -> None:
        spec = get_source(source)
        given = {spec.aliases.get(k, k): v for k, v in values.items()}
        if spec.name == "upload" and ("upload_name" in given or "upload_data" in given):  # the old keywords
            given["upload"] = (given.pop("upload_name", ""), given.pop("upload_data", b""))
        for key in given:
            if key != "knobs" or spec.knobs is None:
                spec.field(key)  # an unknown setting is one sentence naming the ones it takes
        full = {**spec.defaults(), **given}
        if spec.knobs is not None:
            full["knobs"] = tuple(sorted(dict(full.get("knobs") or ()).items()))
        object.__setattr__(self, "source", spec.name)
        object.__setattr__(self, "values", tuple(full.items()))

    def __setattr__(self, name, value):
        raise AttributeError("an InputSpec does not change; use with_(...)")

    def __getattr__(self, name: str) -> Any:
        values = dict(object.__getattribute__(self, "values"))
        spec = get_source(object.__getattribute__(self, "source"))
        name = spec.aliases.get(name, name)
        if name in values:
            return values[name]
        raise AttributeError(f"the {spec.name} input has no setting {name!r}")

    def __eq__(self, other) -> bool:
        return isinstance(other, InputSpec) and (self.source, self.values) == (other.source, other.values)

    def __hash__(self) -> int:
        return hash(self.key(0))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_brief(v)}" for k, v in self.values)
        return f"InputSpec(source={self.source!r}, {shown})"

    @property
    def spec(self) -> SourceSpec:
        return get_source(self.source)

    @property
    def seeded(self) -> bool:
        """Whether the seed changes the input (synthetic draws, projections of uploaded hidden states)."""
        return self.spec.seeded

    def key(self, seed: int) -> tuple:
        """What caches are keyed on: the source and a digest of every value (a new setting can never be
        left out), and the seed when it matters."""
        digest = tuple((k, _digest(v)) for k, v in self.values)
        return (self.source, digest) + ((int(seed),) if self.seeded else ())

    def with_(self, **changes) -> "InputSpec":
        return InputSpec(self.source, **{**dict(self.values), **changes})

    def load(self, seed: int = 0) -> SequenceInput:
        return self.spec.load(dict(self.values), int(seed))

    # ------------------------------------------------------------------ the command line and the URL
    @classmethod
    def parse(cls, text: str, **settings: Any) -> "InputSpec":
        """``NAME:VALUE`` (the CLI's --input: ``synthetic:KIND``, ``text:SOME TEXT``, ``file:PATH``, …);
        ``settings`` (the CLI's --n, --d, --heads, --layer, --kv) set the fields the source takes."""
        word, sep, value = str(text).partition(":")
        spec = next((s for s in list_sources() if s.command == word), None) if sep else None
        if spec is None:
            raise InputError(f"input {str(text)[:60]!r} is not one of {cli_forms()}.")
        allowed = {f.key for f in spec.fields} if spec.cli_settings is None else set(spec.cli_settings)
        values = {}
        for key, v in settings.items():
            key = spec.aliases.get(key, key)
            if key in allowed and v is not None:
                values[key] = v
        if spec.cli_field is not None:
            f = spec.field(spec.cli_field)
            if f.kind == "file":
                path = Path(value)
                if not path.is_file():
                    raise InputError(f"no file at {value[:200]!r}.")
                values[f.key] = (path.name, path.read_bytes())
            elif value or f.kind in ("str", "text"):  # a choice is checked by its loader, which names the options
                values[f.key] = value if f.kind in ("str", "text", "choice") else f.parse(value)
        return cls(spec.name, **values)

    def to_query(self) -> dict[str, str]:
        """The URL's values (the sidebar's keys): ``source``, every setting a link can carry, and the
        chosen knobs under ``<prefix>.<knob>``."""
        out = {"source": self.source}
        spec = self.spec
        for f in spec.fields:
            value = getattr(self, f.key)
            if f.kind != "file":
                out[f.key] = _text(value)
        if spec.knobs is not None:
            prefix = spec.knobs(dict(self.values))[0]
            out.update({f"{prefix}.{name}": _text(value) for name, value in self.knobs})
        return out

    @classmethod
    def from_query(cls, raw: Mapping[str, Any]) -> "InputSpec":
        """The spec a URL describes (settings it leaves out take their defaults); a bad value is one
        sentence (``ParameterError``) naming it."""
        source = raw.get("source", "text")
        source = source[-1] if isinstance(source, (list, tuple)) else source
        spec = get_source(str(source))
        values = {f.key: f.parse(raw[f.key]) for f in spec.fields if f.key in raw and f.kind != "file"}
        if spec.knobs is not None:
            full = {**spec.defaults(), **values}
            prefix, params = spec.knobs(full)
            n, d = int(full.get("n", 256)), int(full.get("d", 64))
            values["knobs"] = {p.name: p.coerce(_last(raw[f"{prefix}.{p.name}"]), n, d) for p in params
                               if f"{prefix}.{p.name}" in raw}
        return cls(spec.name, **values)


def _last(raw: Any) -> Any:
    return raw[-1] if isinstance(raw, (list, tuple)) else raw


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _digest(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return hashlib.sha1(bytes(value)).hexdigest()
    if isinstance(value, str):
        return hashlib.sha1(value.encode()).hexdigest() if len(value) > 64 else value
    if isinstance(value, (tuple, list)):
        return tuple(_digest(v) for v in value)
    return value


def _brief(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, tuple):
        return "(" + ", ".join(_brief(v) for v in value) + ")"
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
