"""FlexAttention (torch.nn.attention.flex_attention) for block patterns: placeholder."""
from __future__ import annotations


def wanted(q) -> bool:
    return False
