"""``SequenceInput``: what every input source returns (synthetic, sample file, upload, real model)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch


@dataclass
class SequenceInput:
    """q, k, v: (B, H, N, d) float tensors. tokens: N labels for axes and hover.
    positions: (N,) or (N, 2) for image patches. provenance: one line naming source, parameters
    and seed, printed under every figure. causal: the source is causal (a decoder model).
    reference_attention: the source's own attention probabilities (B, H, N, N), when a model gave them.
    key_tokens: the keys' labels when keys and values come from a second sequence (N_k of them).
    notices: things the user must be told (text cut to the model's maximum length, …)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    tokens: list[str]
    positions: torch.Tensor
    provenance: str
    causal: bool = False
    reference_attention: torch.Tensor | None = None
    notices: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    key_tokens: list[str] | None = None  # labels of the keys when they are another sequence (cross-attention)

    @property
    def cross(self) -> bool:
        return self.k.shape[-2] != self.q.shape[-2] or self.key_tokens is not None

    @property
    def key_labels(self) -> list[str]:
        return list(self.key_tokens) if self.key_tokens is not None else list(self.tokens)

    @property
    def kv_group(self) -> list[int] | None:
        """Grouped-query models: entry h is the key/value head query head h reads (heads sharing an
        entry share K and V); None when the source has no such groups."""
        group = self.meta.get("kv_group")
        return list(group) if group is not None else None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.q.shape)

    @property
    def n(self) -> int:
        return self.q.shape[-2]

    def to(self, device=None, dtype=None) -> "SequenceInput":
        move = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return replace(self, q=move(self.q), k=move(self.k), v=move(self.v),
                       reference_attention=move(self.reference_attention))

    def head(self, h: int) -> "SequenceInput":
        """One head, kept 4-D: (B, 1, N, d)."""
        pick = lambda t: None if t is None else t[:, h:h + 1]  # noqa: E731
        return replace(self, q=pick(self.q), k=pick(self.k), v=pick(self.v),
                       reference_attention=pick(self.reference_attention),
                       provenance=f"{self.provenance}; head {h}")
