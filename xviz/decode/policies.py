"""The built-in KV-cache policies. Each is ``fn(replay, **params) -> select(chunk) -> kept``.

Conventions shared by all (see ``replay.py``): the budget b counts the positions a step's query reads,
its own new token included; "step t" is the query at position t. The prompt (``prefill`` tokens) is
compressed once, when the first step arrives; ties between equal scores go to the earlier position
(a stable sort), so every choice is deterministic.

* ``full`` — keep everything: the reference (the budget is ignored).
* ``window`` — Mistral's rolling buffer (Jiang et al. 2023, Mistral 7B, arXiv:2310.06825, §2): a
  cache of W = b slots written at position mod W, so step t reads positions t − b + 1 … t.
* ``sinks`` — StreamingLLM (Xiao et al. 2023, Efficient Streaming Language Models with Attention
  Sinks, arXiv:2309.17453): the first ``sinks`` positions stay forever, plus the b − sinks latest.
  The paper keeps 4 sink tokens (the default here).
* ``h2o`` — Heavy-Hitter Oracle (Zhang et al. 2023, H2O, arXiv:2306.14048): each key's accumulated
  attention (the prompt's full attention summed over its queries, then every step's own attention
  over the kept cache) ranks the "heavy hitters"; a recent window of r = round(recent·b) positions
  (at least 1) is always kept, the other b − r slots hold the heaviest. When a step would overflow,
  the lightest key outside the coming recent window is evicted (one per step, as in the paper's
  Algorithm 1). ``recent`` = 0.5 is the paper's half-and-half split.
* ``tova`` — Token Omission Via Attention (Oren et al. 2024, Transformers are Multi-State RNNs,
  arXiv:2401.06104): after each step, the key with the lowest weight under that step's query is
  evicted. The paper's policy is per layer: weights averaged over heads, one kept set shared by the
  heads (``heads="mean"``, the default); ``heads="each"`` lets every head choose its own. The prompt
  is cut to b − 1 keys by the last prompt query's weights (an untrained choice: the paper's
  prompt handling is a loop; its last row is the decision that loop ends with for the latest query).
* ``snapkv`` — SnapKV (Li et al. 2024, SnapKV: LLM Knows What You Are Looking for Before Generation,
  arXiv:2404.14469): once, at the end of the prompt, the last ``observe`` prompt queries (the
  observation window) vote with their attention for the earlier keys; votes are pooled along the
  keys (kernel ``kernel``, average or max, stride 1, zero padding counted, as the authors' code) and
  the prompt is cut to b − 1 keys (the first step then reads b): the window and the earlier keys
  with the most votes. Generated tokens are all kept (the method compresses the prompt only), so
  the cache grows by one per step beyond b. The window shrinks to b − 1 when that is smaller.
  Defaults (32, 5, average) are the authors' code's.
* ``quest`` — Quest (Tang et al. 2024, Query-Aware Sparsity for Efficient Long-Context LLM
  Inference, arXiv:2406.10774): the cache is cut into pages of ``page`` tokens, each with its keys'
  per-channel min m and max M; a query's bound on a page is Σ_i max(q_i·M_i, q_i·m_i) (≥ every
  q·k in the page), and the step reads the ⌊b / page⌋ pages with the highest bounds, the current
  (still filling) page always among them. Nothing is evicted: the whole cache stays resident, the
  budget limits what is read. Page 16 is the paper's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import ParameterError
from ..core.registry import Param
from .registry import PolicySpec, register_policy


def top_positions(scores: torch.Tensor, count: int) -> torch.Tensor:
    """(…, L) bool: the ``count`` highest scores, ties to the earlier position."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    if count > 0:
        order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :count]
        keep.scatter_(-1, order, True)
    return keep


def recent_length(recent: float, budget: int) -> int:
    return max(1, min(budget, int(recent * budget + 0.5)))


def _chunk_shaped(kept_prefix: torch.Tensor, chunk) -> torch.Tensor:
    return kept_prefix[..., None, :chunk.t1]


# ------------------------------------------------------------------------------ static policies
def full(replay):
    return lambda chunk: torch.ones(1, 1, 1, chunk.t1, dtype=torch.bool, device=chunk.logits.device)


def window(replay):
    b = replay.budget
    return lambda chunk: (chunk.keys[None] > chunk.positions[:, None] - b)[None, None]


def sinks(replay, sinks: int):
    b = replay.budget

    def select(chunk):
        keys, pos = chunk.keys[None], chunk.positions[:, None]
        return ((keys < sinks) | (keys > pos - (b - sinks)))[None, None]
    return select


def snapkv(replay, observe: int, kernel: int, pooling: str):
    b, p, n = replay.budget, replay.prefill, replay.n
    bsz, h = replay.shape[:2]
    kept = torch.ones(bsz, h, n, dtype=torch.bool, device=replay.q.device)
    cap = b - 1  # prompt keys kept, so that the first step reads b
    if p > cap:  # keep the observation window and the best-voted earlier keys
        o = min(observe, cap)
        kept[..., :p - o] = False
        if o > 0 and cap > o:
            votes = replay.prompt_weight_sums(p - o, p)[..., :p - o].reshape(bsz * h, 1, p - o)
            pool = F.avg_pool1d if pooling == "avg" else F.max_pool1d
            pooled = pool(votes, kernel_size=kernel, stride=1, padding=kernel // 2)[..., :p - o]
            kept[..., :p - o] = top_positions(pooled.reshape(bsz, h, p - o), cap - o)
    return lambda chunk: _chunk_shaped(kept, chunk)


def quest(replay, page: int):
    b, n = replay.budget, replay.n
    pages = -(-n // page)
    k = replay.k.to(replay.work)
    pad = pages * page - n
    kmax = F.pad(k, (0, 0, 0, pad), value=float("-inf")).unflatten(-2, (pages, page)).amax(-2)
    kmin = F.pad(k, (0, 0, 0, pad), value=float("inf")).unflatten(-2, (pages, page)).amin(-2)
    read = b // page

    def select(chunk):
        q = replay.q[..., chunk.t0:chunk.t1, :].to(replay.work)
        # max(q_i·M_i, q_i·m_i) = q_i⁺·M_i + q_i⁻·m_i (M ≥ m): two matmuls, no (c, pages, d) tensor
        bound = q.clamp(min=0) @ kmax.transpose(-1, -2) + q.clamp(max=0) @ kmin.transpose(-1, -2)
        current = (chunk.positions // page)[:, None]
        ids = torch.arange(pages, device=q.device)[None]
        bound = bound.masked_fill(ids > current, float("-inf")).masked_fill(ids == current, float("inf"))
        chosen = top_positions(bound, read) & (ids <= current)
        return chosen.repeat_interleave(page, dim=-1)[..., :chunk.t1]
    return select


# ------------------------------------------------------------------------------ step-by-step policies
def h2o(replay, recent: float):
    b, p, n = replay.budget, replay.prefill, replay.n
    bsz, h = replay.shape[:2]
    r = recent_length(recent, b)
    acc = torch.zeros(bsz, h, n, dtype=replay.work, device=replay.q.device)
    acc[..., :p] = replay.prompt_weight_sums(0, p)
    kept = torch.zeros(bsz, h, n, dtype=torch.bool, device=replay.q.device)
    kept[..., :p] = True
    old = p + 1 - r  # positions before step p's recent window [p − r + 1, p]
    if p + 1 > b and old > 0:
        kept[..., :old] = top_positions(acc[..., :old], b - r)

    def select(chunk):
        out = torch.empty(bsz, h, chunk.t1 - chunk.t0, chunk.t1, dtype=torch.bool, device=kept.device)
        for i, t in enumerate(range(chunk.t0, chunk.t1)):
            kept[..., t] = True
            out[:, :, i] = kept[..., :chunk.t1]
            acc[..., :t + 1] += chunk.step_weights(i, kept[..., :t + 1])
            _evict_lowest(kept, acc, t, b, evictable=t + 2 - r)  # outside step t + 1's recent window
        return out
    return select


def tova(replay, heads: str):
    b, p, n = replay.budget, replay.prefill, replay.n
    bsz, h = replay.shape[:2]
    shared = heads == "mean"
    last = replay.prompt_weight_sums(p - 1, p)  # the last prompt query's full weights
    last = last.mean(1, keepdim=True) if shared else last
    kept = torch.zeros(bsz, 1 if shared else h, n, dtype=torch.bool, device=replay.q.device)
    kept[..., :p] = True
    if p + 1 > b:
        kept[..., :p] = top_positions(last, b - 1)

    def select(chunk):
        out = torch.empty(bsz, h, chunk.t1 - chunk.t0, chunk.t1, dtype=torch.bool, device=kept.device)
        for i, t in enumerate(range(chunk.t0, chunk.t1)):
            kept[..., t] = True
            out[:, :, i] = kept[..., :chunk.t1]
            if t + 1 < n and int(kept[..., :t + 1].sum(-1).max()) >= b:
                w = chunk.step_weights(i, kept[..., :t + 1])
                _evict_lowest(kept, w.mean(1, keepdim=True) if shared else w, t, b, evictable=t + 1)
        return out
    return select


def _evict_lowest(kept: torch.Tensor, score: torch.Tensor, t: int, b: int, evictable: int) -> None:
    """Where the next step would read more than b keys, drop the kept key in [0, evictable) with
    the lowest score (in place; the first such key on ties)."""
    if evictable <= 0 or t + 1 >= kept.shape[-1]:
        return
    full = kept[..., :t + 1].sum(-1) >= b
    if not bool(full.any()):
        return
    candidates = kept[..., :evictable]
    lowest = score[..., :evictable].masked_fill(~candidates, float("inf")).argmin(-1, keepdim=True)
    kept[..., :evictable].scatter_(-1, lowest, ~full[..., None] & candidates.gather(-1, lowest))


# ------------------------------------------------------------------------------ plain forms
# Each policy's plain form, beside it: one batch item (q, k: (H, N, d)), one step at a time, with Python
# sets and one float64 softmax row per query. ``plain(q, k, budget=, prefill=, scale=, **params)`` returns,
# per head, the kept set of every step t = prefill … N − 1; ``xviz.decode.reference`` holds the fast
# paths to them (display sizes only: slow).
def _row(q, k, t: int, keys, scale: float) -> dict[int, float]:
    """Query t's softmax weights over ``keys`` (q, k: (N, d) of one head)."""
    keys = sorted(keys)
    w = torch.softmax((k[keys].double() @ q[t].double()) * scale, 0).tolist()
    return dict(zip(keys, w))


def _top(scores: dict[int, float], count: int) -> set[int]:
    return set(sorted(scores, key=lambda j: (-scores[j], j))[:max(count, 0)])


def _each_step(q, prefill: int, kept_at) -> list[list[set[int]]]:
    """Per head, ``kept_at(head, t)`` at every step."""
    return [[kept_at(h, t) for t in range(prefill, q.shape[-2])] for h in range(q.shape[0])]


def full_plain(q, k, *, budget, prefill, scale):
    return _each_step(q, prefill, lambda h, t: set(range(t + 1)))


def window_plain(q, k, *, budget, prefill, scale):
    return _each_step(q, prefill, lambda h, t: set(range(max(0, t - budget + 1), t + 1)))


def sinks_plain(q, k, *, budget, prefill, scale, sinks):
    return _each_step(q, prefill, lambda h, t: set(range(min(sinks, t + 1))) |
                      set(range(max(0, t - (budget - sinks) + 1), t + 1)))


def _snapkv_prompt(q, k, budget, p, observe, kernel, pooling, scale) -> set[int]:
    cap = budget - 1
    if p <= cap:
        return set(range(p))
    o = min(observe, cap)
    prefix = p - o
    keep = set(range(prefix, p))
    if o == 0 or cap <= o:
        return keep
    votes = [0.0] * prefix
    for i in range(prefix, p):
        for j, w in _row(q, k, i, range(i + 1), scale).items():
            if j < prefix:
                votes[j] += w
    half = kernel // 2
    pooled = {}
    for j in range(prefix):
        inside = [votes[u] for u in range(j - half, j - half + kernel) if 0 <= u < prefix]
        pooled[j] = sum(inside) / kernel if pooling == "avg" else max(inside)
    return keep | _top(pooled, cap - o)


def snapkv_plain(q, k, *, budget, prefill, scale, observe, kernel, pooling):
    prompt = [_snapkv_prompt(q[h], k[h], budget, prefill, observe, kernel, pooling, scale) for h in range(q.shape[0])]
    return _each_step(q, prefill, lambda h, t: prompt[h] | set(range(prefill, t + 1)))


def _quest_step(q, k, t, budget, page):
    current, read = t // page, budget // page
    chosen = set(range(current + 1))
    if current + 1 > read:
        bounds = {}
        for g in range(current):
            block = k[g * page:(g + 1) * page].double()
            hi, lo = block.max(0).values, block.min(0).values
            bounds[g] = float(torch.maximum(q[t].double() * hi, q[t].double() * lo).sum())
        chosen = _top(bounds, read - 1) | {current}
    return {j for j in range(t + 1) if j // page in chosen}


def quest_plain(q, k, *, budget, prefill, scale, page):
    return _each_step(q, prefill, lambda h, t: _quest_step(q[h], k[h], t, budget, page))


def _h2o_head(q, k, budget, p, recent, scale):
    n = q.shape[0]
    r = recent_length(recent, budget)  # positions always kept
    acc = [0.0] * n
    for i in range(p):
        for j, w in _row(q, k, i, range(i + 1), scale).items():
            acc[j] += w
    cache = set(range(p))
    if p + 1 > budget:
        old = p + 1 - r
        cache = set(range(old, p)) | _top({j: acc[j] for j in range(old)}, budget - r)
    out = []
    for t in range(p, n):
        cache.add(t)
        out.append(set(cache))
        for j, w in _row(q, k, t, cache, scale).items():
            acc[j] += w
        if len(cache) >= budget and t + 1 < n:
            cache.remove(min((j for j in cache if j <= t + 1 - r), key=lambda j: (acc[j], j)))
    return out


def h2o_plain(q, k, *, budget, prefill, scale, recent):
    return [_h2o_head(q[h], k[h], budget, prefill, recent, scale) for h in range(q.shape[0])]


def _tova_group(qs, ks, budget, p, scale):
    """TOVA over a group of heads that share one kept set (one head for heads="each")."""
    def mean_row(t, keys):
        rows = [_row(q, k, t, keys, scale) for q, k in zip(qs, ks)]
        return {j: sum(r[j] for r in rows) / len(rows) for j in rows[0]}

    n = qs[0].shape[0]
    cache = set(range(p))
    if p + 1 > budget:
        cache = _top(mean_row(p - 1, range(p)), budget - 1)
    out = []
    for t in range(p, n):
        cache.add(t)
        out.append(set(cache))
        if len(cache) >= budget and t + 1 < n:
            w = mean_row(t, cache)
            cache.remove(min(cache, key=lambda j: (w[j], j)))
    return out


def tova_plain(q, k, *, budget, prefill, scale, heads):
    if heads == "mean":
        return [_tova_group(list(q), list(k), budget, prefill, scale)] * q.shape[0]
    return [_tova_group([q[h]], [k[h]], budget, prefill, scale) for h in range(q.shape[0])]


# ------------------------------------------------------------------------------ checks and registration
def _sinks_fit(params, budget, n, prefill):
    if params["sinks"] >= budget:
        raise ParameterError(f"sinks = {params['sinks']} must be smaller than the budget ({budget}): "
                             f"the window must hold at least the token being decoded.")


def _page_fits(params, budget, n, prefill):
    if params["page"] > budget:
        raise ParameterError(f"page = {params['page']} must be at most the budget ({budget}): Quest reads "
                             f"whole pages, at least the current one.")


register_policy(PolicySpec(
    name="full", display_name="Full cache", paper="the reference: every key kept", fn=full, plain=full_plain,
    uses_budget=False, description="every position stays; what the other policies are measured against"))
register_policy(PolicySpec(
    name="window", display_name="Sliding window", fn=window, plain=window_plain,
    paper="Jiang et al. 2023, Mistral 7B (arXiv:2310.06825), rolling buffer cache",
    description="the last `budget` positions"))
register_policy(PolicySpec(
    name="sinks", display_name="Sinks + window", fn=sinks, plain=sinks_plain,
    paper="Xiao et al. 2023, Efficient Streaming Language Models with Attention Sinks (arXiv:2309.17453)",
    params=(Param("sinks", "int", 4, "first positions kept forever (attention sinks)", low=0, high="N"),),
    sinks=lambda params: params["sinks"], check=_sinks_fit,
    description="the first `sinks` positions plus the latest budget − sinks"))
register_policy(PolicySpec(
    name="h2o", display_name="H2O", fn=h2o, plain=h2o_plain,
    paper="Zhang et al. 2023, H2O: Heavy-Hitter Oracle for Efficient Generative Inference (arXiv:2306.14048)",
    params=(Param("recent", "float", 0.5, "share of the budget kept for the most recent positions",
                  low=0.0, high=1.0),),
    description="heavy hitters by accumulated attention plus a recent window"))
register_policy(PolicySpec(
    name="tova", display_name="TOVA", fn=tova, plain=tova_plain,
    paper="Oren et al. 2024, Transformers are Multi-State RNNs (arXiv:2401.06104)",
    params=(Param("heads", "choice", "mean", "mean: one kept set per layer from head-averaged weights "
                  "(the paper's); each: every head chooses", choices=("mean", "each")),),
    description="after each step, evict the key the current query weighs least"))
register_policy(PolicySpec(
    name="snapkv", display_name="SnapKV", fn=snapkv, plain=snapkv_plain,
    paper="Li et al. 2024, SnapKV: LLM Knows What You Are Looking for Before Generation (arXiv:2404.14469)",
    params=(Param("observe", "int", 32, "observation window: the last prompt queries that vote", low=1, high="N"),
            Param("kernel", "int", 5, "pooling kernel along the keys (1 = no pooling)", low=1, high=63),
            Param("pooling", "choice", "avg", "how votes are pooled", choices=("avg", "max"))),
    description="prompt keys chosen once by the observation window's pooled votes; generated tokens kept"))
register_policy(PolicySpec(
    name="quest", display_name="Quest", fn=quest, plain=quest_plain, evicts_once=False, reads_only=True,
    paper="Tang et al. 2024, Quest: Query-Aware Sparsity for Efficient Long-Context LLM Inference "
          "(arXiv:2406.10774)",
    params=(Param("page", "int", 16, "tokens per page (per-page key min/max bounds)", low=1, high="N"),),
    check=_page_fits, description="per query, the pages with the highest key-bound scores; nothing evicted"))
