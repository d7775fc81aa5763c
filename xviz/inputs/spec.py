"""One input dispatcher for the CLI and the app: an ``InputSpec`` says where Q, K, V come from, parses
from the CLI's ``KIND:VALUE`` strings, keys caches (its provenance), and loads a ``SequenceInput``.

    spec = InputSpec.parse("text:The animal didn't cross the street.", layer=2)
    spec = InputSpec(source="synthetic", kind="clustered", n=512, d=64, heads=4)
    seq = spec.load(seed=0)

Cross-attention: ``kv_text`` sends a second text through the same model and layer; its K and V are the
keys and values, the first text's Q the queries (``SequenceInput.key_tokens`` labels the keys).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from .files import load_upload
from .model import from_text
from .samples import load_sample
from .sequence import SequenceInput
from .synthetic import synthetic

SOURCES = ("text", "synthetic", "sample", "upload")
CLI_FORMS = "synthetic:KIND, sample:NAME, text:TEXT, file:PATH"


@dataclass(frozen=True)
class InputSpec:
    source: str = "text"
    text: str = ""
    model: str = ""  # "" = the bundled model
    layer: int = 0
    kv_text: str = ""  # cross-attention: keys and values from this second text (same model and layer)
    kind: str = "clustered"
    n: int = 256
    d: int = 64
    heads: int = 4
    knobs: tuple[tuple[str, Any], ...] = ()
    sample: str = ""
    n_max: int | None = None
    upload_name: str = ""
    upload_data: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InputError(f"input source {str(self.source)[:40]!r} is not one of {', '.join(SOURCES)}.")

    @classmethod
    def parse(cls, text: str, *, n: int = 256, d: int = 64, heads: int = 4, layer: int = 0, kv_text: str = "") -> "InputSpec":
        """``synthetic:KIND`` | ``sample:NAME`` | ``text:SOME TEXT`` | ``file:PATH`` (the CLI's --input)."""
        kind, sep, value = str(text).partition(":")
        if not sep:
            raise InputError(f"input {str(text)[:60]!r} is not one of {CLI_FORMS}.")
        if kind == "synthetic":
            return cls(source="synthetic", kind=value or "clustered", n=n, d=d, heads=heads)
        if kind == "sample":
            return cls(source="sample", sample=value, layer=layer)
        if kind == "text":
            return cls(source="text", text=value, layer=layer, kv_text=kv_text)
        if kind == "file":
            path = Path(value)
            if not path.is_file():
                raise InputError(f"no file at {value[:200]!r}.")
            return cls(source="upload", upload_name=path.name, upload_data=path.read_bytes(), layer=layer)
        raise InputError(f"input {str(text)[:60]!r} is not one of {CLI_FORMS}.")

    @property
    def seeded(self) -> bool:
        """Whether the seed changes the input (synthetic draws, projections of uploaded hidden states)."""
        return self.source != "text"

    def key(self, seed: int) -> tuple:
        """What caches are keyed on: the provenance (uploads by a digest of their bytes), and the seed
        when it matters."""
        digest = hashlib.sha1(self.upload_data).hexdigest() if self.upload_data else ""
        text = hashlib.sha1(self.text.encode()).hexdigest() if self.text else ""
        kv = hashlib.sha1(self.kv_text.encode()).hexdigest() if self.kv_text else ""
        base = (self.source, text, self.model, self.layer, kv, self.kind, self.n, self.d, self.heads, self.knobs,
                self.sample, self.n_max, self.upload_name, digest)
        return base + ((int(seed),) if self.seeded else ())

    def with_(self, **changes) -> "InputSpec":
        return replace(self, **changes)

    def load(self, seed: int = 0) -> SequenceInput:
        model = self.model or None
        if self.source == "synthetic":
            return synthetic(self.kind, n=self.n, d=self.d, heads=self.heads, seed=seed, **dict(self.knobs))
        if self.source == "sample":
            return load_sample(self.sample, n_max=self.n_max, seed=seed, layer=self.layer)
        if self.source == "upload":
            if not self.upload_data:
                raise InputError("no file was uploaded.")
            return load_upload(self.upload_name, self.upload_data, seed=seed, layer=self.layer)
        seq = from_text(self.text, model=model, layer=self.layer)
        if not self.kv_text.strip():
            return seq
        kv = from_text(self.kv_text, model=model, layer=self.layer)
        return replace(seq, k=kv.k, v=kv.v, key_tokens=list(kv.tokens), reference_attention=None,
                       provenance=f"{seq.provenance}; keys and values from a second text ({len(kv.tokens)} tokens)",
                       notices=list(seq.notices) + list(kv.notices), causal=False)
