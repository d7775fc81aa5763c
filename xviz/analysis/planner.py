"""A per-head plan for a real model: each layer × head's measured attention pattern, and the cheapest
catalog variant (with its parameters) whose error on that head meets a target.

    from xviz.analysis import planner
    rows = planner.plan("The quick brown fox …", model="smollm2-135m", target=0.05)
    rows[0]  # {'layer': 0, 'head': 0, 'pattern': 'local', 'sink_mass': …, 'variant': 'sliding_window', …}

DuoAttention, MInference and RazorAttention choose per head in production; this measures the choice on
the model's own Q, K, V for one text.

**How a head's pattern is measured.** On the model's own causal attention probabilities A (N × N) of the
head, over the query rows i ≥ N/4 (earlier rows see too few keys for any pattern to mean anything),
each a mean over those rows of the mass A puts on a set of keys:

* ``sink_mass`` — key 0 (the attention sink);
* ``local_mass`` — the w latest keys i − w + 1 … i other than key 0, w = max(4, N/8);
* ``column_mass`` — key 0, the c keys other than 0 with the most total mass over the rows (vertical lines),
  c = max(2, N/16), plus the c most heavily used offsets i − j (slash lines), each key counted once;
* ``block_mass`` — in blocks of b = max(4, N/16) keys, the best k = max(1, N/(8b)) blocks of each query's
  row besides its own block (a block-sparse router such as MoBA or NSA picks per query block).

The class is the first that holds, with coverage τ = 0.9: **sink** (sink ≥ τ), **local** (local ≥ τ),
**sink+local** (sink + local ≥ τ), **vertical-slash** (columns ≥ τ), **block-sparse**
(block ≥ τ), else **global** (the mass is spread, or follows content: retrieval heads). The sets are
kept about equally small (≈ N/8 keys a query), so a class says which small set holds the head's mass.

**The cheapest variant.** Candidates: sliding window, sinks + window (1 or 4 sinks), Longformer
(window + 2 global tokens), BigBird, with a few parameter values each, and exact attention (which always
meets the target; top-k is left out: it computes every score, so it costs what exact attention costs).
They are ordered by xviz's own cost model (``Cost.flops`` of the variant at this N, d); the first whose
relative output error ‖O − Ô‖ / ‖O‖ on the head is at most the target is the head's choice.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..core.errors import ParameterError
from ..core.registry import Shape, get_variant
from ..core.engine import run
from .metrics import compare

COVERAGE = 0.9
PATTERNS = ("sink", "local", "sink+local", "vertical-slash", "block-sparse", "global")


def measure(a: torch.Tensor) -> dict[str, float]:
    """The pattern measures of one head's causal attention probabilities ``a`` (N, N), float64."""
    a = a.double()
    n = a.shape[-1]
    r0 = min(n - 1, n // 4)
    rows = a[r0:]
    i = torch.arange(r0, n)[:, None]
    j = torch.arange(n)[None]
    w, c, b = max(4, n // 8), max(2, n // 16), max(4, n // 16)
    sink = rows[:, 0]
    local = (rows * ((j > i - w) & (j <= i) & (j > 0))).sum(-1)
    # vertical lines: the heaviest columns (key 0 aside); slash lines: the heaviest offsets i − j
    col_total = rows.sum(0)
    col_total[0] = float("inf")  # key 0 always in the set (counted as the sink)
    columns = torch.zeros(n, dtype=torch.bool)
    columns[torch.topk(col_total, min(n, c + 1)).indices] = True
    offsets = (i - j).clamp_min(0)
    off_total = torch.zeros(n, dtype=torch.float64).index_add_(0, offsets.flatten(), (rows * (j <= i)).flatten())
    slashes = torch.zeros(n, dtype=torch.bool)
    slashes[torch.topk(off_total, min(n, c)).indices] = True
    vs = (rows * ((columns[None] | slashes[offsets]) & (j <= i))).sum(-1)
    # block-sparse: each query's own block plus its best k other blocks
    nb, k = -(-n // b), max(1, n // (8 * b))
    pad = torch.nn.functional.pad(rows, (0, nb * b - n))
    blocks = pad.unflatten(-1, (nb, b)).sum(-1)  # (rows, nb)
    own = (i[:, 0] // b)
    own_mass = blocks.gather(1, own[:, None])[:, 0]
    others = blocks.scatter(1, own[:, None], 0.0)
    best = torch.topk(others, min(k, nb), dim=-1).values.sum(-1)
    return dict(sink_mass=float(sink.mean()), local_mass=float(local.mean()), column_mass=float(vs.mean()),
                block_mass=float((own_mass + best).mean()))


def classify(m: dict[str, float], coverage: float = COVERAGE) -> str:
    """The pattern class of a head from its ``measure`` values (the first that holds, in PATTERNS order)."""
    if m["sink_mass"] >= coverage:
        return "sink"
    if m["local_mass"] >= coverage:
        return "local"
    if m["sink_mass"] + m["local_mass"] >= coverage:
        return "sink+local"
    if m["column_mass"] >= coverage:
        return "vertical-slash"
    if m["block_mass"] >= coverage:
        return "block-sparse"
    return "global"


def candidates(n: int) -> list[tuple[str, dict]]:
    """The variants tried on every head, a few parameter values each (windows as shares of N)."""
    sizes = sorted({max(1, min(n, s)) for s in (4, 8, n // 8, n // 4, n // 2)})
    out: list[tuple[str, dict]] = []
    for w in sizes:
        out.append(("sliding_window", dict(window=w)))
        if w > 1:
            out.append(("sinks", dict(sinks=1, window=w)))
        if w > 4:
            out.append(("sinks", dict(sinks=4, window=w)))
        out.append(("longformer", dict(window=w, num_global=2)))
    for block in sorted({max(2, n // 16), max(4, n // 8)}):
        out.append(("bigbird", dict(block=block, window_blocks=3, global_blocks=1, random_blocks=1)))
    out.append(("exact", {}))
    return out


def _cost(name: str, params: dict, h: int, n: int, d: int, dv: int) -> float:
    return float(get_variant(name).cost(Shape(1, h, n, d, dv, True), **params).flops)


def _check_target(target) -> None:
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
        raise ParameterError(f"target = {target!r:.30} must be a relative output error between 0 and 1.")


def plan_layers(layers: Sequence, *, target: float = 0.05,
                progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """One row per layer × head of ``layers`` (SequenceInputs of one model on one text, with the model's
    own probabilities as ``reference_attention``): layer, head, pattern, the four measures, the chosen
    variant, its params (text), its error and its FLOPs relative to exact attention's."""
    _check_target(target)
    rows = []
    for li, seq in enumerate(layers):
        if seq.reference_attention is None:
            raise ParameterError(f"layer {li}: the input has no model attention probabilities to measure.")
        if not seq.causal:
            raise ParameterError("the planner measures a decoder's causal heads; this model is not causal "
                                 "(use smollm2-135m).")
        b, h, n, d = seq.q.shape
        dv = seq.v.shape[-1]
        exact = run("exact", seq.q, seq.k, seq.v, causal=True)
        exact_flops = _cost("exact", {}, h, n, d, dv)
        options = sorted(((name, params, _cost(name, params, h, n, d, dv)) for name, params in candidates(n)),
                         key=lambda x: x[2])
        chosen: list = [None] * h
        for name, params, flops in options:
            todo = [hh for hh in range(h) if chosen[hh] is None]
            if not todo:
                break
            if name == "exact":
                errors = [0.0] * h
            else:
                approx = run(name, seq.q, seq.k, seq.v, causal=True, seed=0, **params)
                errors = compare(exact, approx, with_matrix=False).per_head["rel_out"]
            for hh in todo:
                if errors[hh] <= target:
                    chosen[hh] = (name, params, errors[hh], flops / exact_flops)
        for hh in range(h):
            m = measure(seq.reference_attention[0, hh])
            name, params, err, ratio = chosen[hh]
            rows.append(dict(layer=li, head=hh, pattern=classify(m), **m, variant=name,
                             params=", ".join(f"{k}={v}" for k, v in params.items()), error=float(err),
                             flops_ratio=float(ratio)))
        if progress:
            progress(li + 1, len(layers))
    return rows


def plan(text: str, *, model: str = "smollm2-135m", target: float = 0.05,
         progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """``plan_layers`` over every layer of ``model`` on ``text`` (one pass of the model)."""
    from ..inputs import from_text_layers

    _check_target(target)  # before the model runs
    return plan_layers(from_text_layers(text, model=model), target=target, progress=progress)


def summary(rows: Sequence[dict]) -> dict:
    """Heads per pattern class and per chosen variant, and the plan's FLOPs relative to exact everywhere."""
    patterns = {p: sum(r["pattern"] == p for r in rows) for p in PATTERNS}
    variants: dict[str, int] = {}
    for r in rows:
        variants[r["variant"]] = variants.get(r["variant"], 0) + 1
    ratio = sum(r["flops_ratio"] for r in rows) / max(1, len(rows))
    return dict(heads=len(rows), patterns=patterns, variants=variants, flops_ratio=ratio)
