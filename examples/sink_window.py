"""An xviz plugin, complete: "attention sinks" + a recent window (Xiao et al. 2023, StreamingLLM).

Every query attends the first ``sinks`` tokens and the ``window`` tokens before it. Load it with
    XVIZ_PLUGINS=sink_window PYTHONPATH=examples make app
or check it with
    PYTHONPATH=examples .venv/bin/python -m xviz check sink_window:sink_window
"""
import torch

import xviz
from xviz.kernels.costs import sparse_cost
from xviz.kernels.sparse import KEYS_PER_ROW, MASK, sparse_attention


def sink_window(q, k, v, ctx, sinks: int, window: int):
    offsets = torch.arange(-window, 1 if ctx.causal else window + 1, device=q.device)
    sink_keys = torch.arange(sinks, device=q.device)

    def keys_for(rows):  # key positions for a chunk of query rows: (rows, K); xviz masks, dedupes, gathers
        local = rows[:, None] + offsets
        return torch.cat([sink_keys.expand(len(rows), -1), local], dim=1), None

    return sparse_attention(q, k, v, ctx, keys_for, width=sinks + offsets.numel())


xviz.register_variant(xviz.VariantSpec(
    name="sink_window", display_name="Sinks + window (plugin)", family="fixed pattern",
    paper="Xiao et al. 2023, Efficient Streaming Language Models with Attention Sinks (arXiv:2309.17453)",
    complexity="O(N·(s + w)·d)", complexity_class="sparse", fn=sink_window,
    cost=lambda s, sinks, window: sparse_cost(s, sinks + (1 if s.causal else 2) * window + 1),
    params=(xviz.Param("sinks", "int", 4, "first tokens every query attends", low=0, high="N"),
            xviz.Param("window", "int", 64, "recent keys on each side", low=1, high="N")),
    causal=True, row_stochastic=True, artifacts=(MASK, KEYS_PER_ROW), content_based=False,
    exact_when=lambda n, d, h: {"window": n},
))
