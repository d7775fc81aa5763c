"""``AppContext``: what the shared sidebar decided, for every page of this run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xviz.inputs import InputSpec, SequenceInput


@dataclass
class AppContext:
    spec: InputSpec | None  # where the input comes from
    inp: SequenceInput | None  # on the chosen device and dtype
    device: str
    dtype: str
    causal: bool
    seed: int
    present: bool
    img: str
    error: str | None = None
    messages: list[str] = field(default_factory=list)
    plugin_errors: list[str] = field(default_factory=list)

    @property
    def font_size(self) -> int:
        return 20 if self.present else 13

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.inp.q.shape)

    @property
    def n(self) -> int:
        return self.inp.q.shape[-2]

    @property
    def tokens(self) -> list[str]:
        return list(self.inp.tokens)

    @property
    def input_key(self) -> tuple:
        return self.spec.key(self.seed) if self.spec is not None else ()

    def key(self, *more: Any) -> tuple:
        """The cache key of anything computed from this input on this device and dtype."""
        return (self.input_key, self.device, self.dtype, self.causal, self.seed) + more
