"""Generation under a KV-cache policy: a real decoder, run token by token, every layer's cache pruned.

    import xviz.decode as dec
    r = dec.generate("h2o", "The capital of France is", model="smollm2-135m", max_new_tokens=32, budget=64)
    r.text, r.tokens, r.kl, r.kept_at(5), r.cache_bytes
    dec.generate_many(["full", "window", "sinks", "h2o", "snapkv"], prompt, budget=64)   # one shared prefill

How it runs. The prompt is processed at once with full causal attention (as every serving stack does)
and the first new token comes from it. Then each generated token is fed back: at every layer the
attention call (transformers' attention interface, the model's own eager attention) asks the policy
which cached positions the new query reads, and attends over those only. The policies are the ones
``simulate`` replays (``policies.py``), called the same way — ``fn(replay, **params)`` returns
``select(chunk)``, called once per step in order — but here the Q, K and V they see are the model's
own, produced by a model whose earlier steps already ran on pruned caches: errors compound, and the
text can depart from the full cache's. The cache is simulated by masking: evicted keys stay in memory
but are never read, which gives exactly the outputs of a cache that dropped them (a token's K and V
are computed once, when it is fed, and never change). A policy that does not evict once and for all
(Quest: every query re-chooses pages over the whole cache) is rebuilt at every step on the cache so
far, since it may look at every cached key; the others are built once, when the first step arrives.

Grouped-query attention (SmolLM2: 9 query heads over 3 key/value heads): a cache holds K and V per
key/value head, so a policy decides per key/value head. The policy sees one "head" per key/value head
whose attention weights are the mean of its query heads' softmax weights (H2O's accumulated scores,
TOVA's and SnapKV's votes all read these), and Quest's page bound uses the group's mean query (an
upper bound on the group's mean logit, hence on the mean weights' ranking up to the softmax). The
kept set of a key/value head applies to every query head of its group.

What is measured per generated token s (s = 0 is the prefill's token): ``kl[s]`` = KL(full ‖ policy)
of the next-token distributions, where "full" is the same model with a full cache fed the same
tokens (the policy's own text so far), so it measures the error the pruned cache adds at that step,
not the drift of two different texts; ``kept[s]`` the positions each layer and key/value head read;
``attention[s]`` the attention weights the query that produced token s used, averaged per group. Greedy decoding
(argmax, ties to the lower id, as transformers' ``generate(do_sample=False)``); generation stops
after the model's end-of-sequence token, as ``generate`` does.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..core.errors import ParameterError, VariantError
from ..inputs import model as models
from ..inputs import LIMITS
from .registry import PolicySpec, get_policy
from .replay import Chunk, Replay, check_cache_budget, whole_number

DEFAULT_MODEL = "smollm2-135m"
MAX_NEW_TOKENS = 512


@dataclass
class GenerationResult:
    """One policy's generation. T generated tokens, P prompt tokens, L layers, G key/value heads.

    tokens: the generated ids (T); text: them decoded; labels: one short label per token (axes); pieces:
        each token's own text, spaces kept.
    kl: (T,) KL(full ‖ policy) in nats of each step's next-token distribution (kl[0] = 0: the prefill).
    kept: (T, L, G, P + T − 1) bool, the positions the query that produced token s read (s = 0: the
        last prompt query, which reads the whole prompt).
    attention: (T, L, G, P + T − 1) float32, the attention weights that query used (0 off the keys it
        read), averaged over each key/value head's query heads.
    kv_group: entry h is query head h's key/value head.
    bytes_per_key: K and V of one position for one key/value head, float32: (d + d_v) · 4."""

    policy: str
    display_name: str
    params: dict
    budget: int
    model: str
    prompt_ids: list[int]
    prompt_labels: list[str]
    tokens: list[int]
    labels: list[str]
    text: str
    kl: np.ndarray
    kept: np.ndarray
    attention: np.ndarray
    kv_group: list[int]
    bytes_per_key: int
    notices: list[str] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)  # each token's own text, spaces kept (text = their join)

    @property
    def label(self) -> str:
        shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        return f"{self.display_name} ({shown})" if shown else self.display_name

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held (what a cache bounded by bytes counts)."""
        return int(self.kept.nbytes + self.attention.nbytes + self.kl.nbytes)

    @property
    def prefill(self) -> int:
        return len(self.prompt_ids)

    @property
    def kept_counts(self) -> np.ndarray:
        """(T, L, G) how many positions each layer and key/value head read at each step."""
        return self.kept.sum(-1)

    @property
    def cache_bytes(self) -> np.ndarray:
        """(T,) bytes of K and V read at each step, all layers and key/value heads (for a policy that
        evicts: the bytes its cache holds)."""
        return self.kept_counts.sum((1, 2)).astype(np.int64) * self.bytes_per_key

    def kept_at(self, step: int) -> np.ndarray:
        """(L, G, P + step) bool: what the query that produced token ``step`` read."""
        if not 0 <= step < len(self.tokens):
            raise ParameterError(f"step = {step} is outside 0–{len(self.tokens) - 1}.")
        return self.kept[step, :, :, :self.prefill + step]  # its query sits at position P + step − 1

    def kept_per_query_head(self, step: int) -> np.ndarray:
        """(L, H, P + step) bool: ``kept_at(step)`` for every query head (a group's heads read the same keys)."""
        return self.kept_at(step)[:, self.kv_group]

    def first_divergence(self, other: "GenerationResult") -> int | None:
        """The first step whose token differs from ``other``'s (None: one text is a prefix of the other)."""
        for s, (a, b) in enumerate(zip(self.tokens, other.tokens)):
            if a != b:
                return s
        return None

    def summary(self) -> dict:
        return dict(policy=self.policy, label=self.label, budget=self.budget, tokens=len(self.tokens),
                    mean_kl=float(self.kl.mean()), max_kl=float(self.kl.max()),
                    mean_cache_bytes=float(self.cache_bytes.mean()), text=self.text)


class _GroupedReplay(Replay):
    """A Replay whose heads are the key/value heads: prompt votes averaged over each group's query heads."""

    def __init__(self, q, k, v, budget, prefill, scale, heads: Replay, group: int):
        super().__init__(q, k, v, budget, prefill, scale)
        self.heads, self.group = heads, group

    def prompt_weight_sums(self, start: int, stop: int) -> torch.Tensor:
        return self.heads.prompt_weight_sums(start, stop).unflatten(1, (-1, self.group)).mean(2)


class _LayerCache:
    """One layer's view for a policy: the model's Q (per query head), K and V (per key/value head) so
    far, and the policy's selector."""

    def __init__(self, prompt: dict, n_total: int, spec: PolicySpec, params: dict, budget: int):
        qh, k, v = prompt["q"], prompt["k"], prompt["v"]
        b, h, p, d = qh.shape
        self.g, self.size, self.p, self.scale = k.shape[1], h // k.shape[1], p, prompt["scale"]
        self.spec, self.params, self.budget, self.n_total = spec, params, budget, n_total
        self.qh = qh.new_zeros(b, h, n_total, d)
        self.k = k.new_zeros(b, self.g, n_total, d)
        self.v = v.new_zeros(b, self.g, n_total, v.shape[-1])
        self.qh[..., :p, :], self.k[..., :p, :], self.v[..., :p, :] = qh, k, v
        self.heads = prompt["heads"]  # the prompt per query head, its attention sums shared by every policy
        self.select = None

    def _replay(self, length: int) -> _GroupedReplay:
        qmean = self.qh[..., :length, :].unflatten(1, (self.g, self.size)).mean(2)
        return _GroupedReplay(qmean, self.k[..., :length, :], self.v[..., :length, :], self.budget, self.p,
                              self.scale, self.heads, self.size)

    def step(self, t: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Position t's query arrives (key and value hold positions 0 … t): the keys it reads, (1, G, t + 1)
        bool. The policy sees the group-mean weights of the full cache (what ``simulate``'s chunks hold)."""
        self.qh[..., t, :], self.k[..., t, :], self.v[..., t, :] = query[..., 0, :], key[..., t, :], value[..., t, :]
        logits = (query.float() @ key.float().repeat_interleave(self.size, 1).transpose(-1, -2)) * self.scale
        probs = torch.softmax(logits, -1).unflatten(1, (self.g, self.size)).mean(2)  # (1, G, 1, t + 1)
        if self.select is None or not self.spec.evicts_once:
            length = self.n_total if self.spec.evicts_once else t + 1
            self.select = self.spec.fn(self._replay(length), **self.params)
        kept = self.select(Chunk(t, t + 1, probs.log(), probs))
        if not isinstance(kept, torch.Tensor) or kept.dtype != torch.bool:
            raise VariantError(f"policy {self.spec.name!r} ({self.spec.module}) returned a "
                               f"{type(kept).__name__}, not a bool tensor.")
        try:
            kept = kept.expand(1, self.g, 1, t + 1)[:, :, 0]
        except RuntimeError:
            raise VariantError(f"policy {self.spec.name!r} ({self.spec.module}) returned kept keys of shape "
                               f"{tuple(kept.shape)}; expected (1, {self.g}, 1, {t + 1}).") from None
        if not bool(kept[..., t].all()):
            raise VariantError(f"policy {self.spec.name!r} ({self.spec.module}) dropped the token being decoded "
                               f"at position {t}; a cache always holds the current token's key.")
        return kept


class _PolicyRun:
    """One policy's generation: its per-layer views, its batch rows, what it records."""

    def __init__(self, spec: PolicySpec, params: dict, budget: int, shared: "_Prefill", steps: int, row: int,
                 full_row: int | None):
        self.spec, self.params, self.budget = spec, params, budget
        self.row, self.full_row = row, full_row  # its cache's row, and its full-cache companion's (None: full)
        n = shared.p + steps - 1  # positions fed: the prompt, then every generated token but the last
        self.layers = [_LayerCache(layer, n, spec, params, budget) for layer in shared.layers]
        g = shared.layers[0]["k"].shape[1]
        self.kept = np.zeros((steps, len(self.layers), g, n), dtype=bool)
        self.attention = np.zeros(self.kept.shape, dtype=np.float32)
        self.kept[0, :, :, :shared.p] = True
        self.attention[0, :, :, :shared.p] = shared.last_attention
        self.tokens = [int(torch.argmax(shared.logits))]
        self.kl = [0.0]


class _Batch:
    """Every run stepped together, one forward per step: a batch row per policy's cache and one per its
    full-cache companion (fed the policy's tokens), all holding the same positions. A row's attention
    reads only what its policy keeps; the batch's rows never mix (attention, norms and MLPs are per row)."""

    def __init__(self, runs: list[_PolicyRun], shared: "_Prefill", rows: int):
        self.runs, self.step_index, self._calls = runs, 0, 0
        self.cache = copy.deepcopy(shared.cache)
        self.cache.reorder_cache(torch.zeros(rows, dtype=torch.long))  # the prompt's cache in every row
        self.rows = rows

    def _attend(self, eager, module, query, key, value, attention_mask, scaling=None, **kwargs):
        layer, self._calls = self._calls, self._calls + 1
        t, h = key.shape[-2] - 1, query.shape[1]
        read = torch.ones(self.rows, h, 1, t + 1, dtype=torch.bool)
        for run in self.runs:
            r = run.row
            kept = run.layers[layer].step(t, query[r:r + 1], key[r:r + 1], value[r:r + 1])
            run.kept[self.step_index, layer, :, :t + 1] = kept[0].numpy()
            read[r] = kept[0].repeat_interleave(h // kept.shape[1], 0)[:, None, :]
        low = torch.full((), torch.finfo(query.dtype).min, dtype=query.dtype)
        base = attention_mask[..., :t + 1] if attention_mask is not None else query.new_zeros(())
        out, weights = eager(module, query, key, value, torch.where(read, base, low), scaling=scaling, dropout=0.0,
                             **kwargs)
        for run in self.runs:  # the weights the model used (0 off the kept keys), averaged over each group
            g = run.kept.shape[2]
            run.attention[self.step_index, layer, :, :t + 1] = weights[run.row, :, 0].float().unflatten(
                0, (g, -1)).mean(1).numpy()
        return out, weights

    def step(self, lm, s: int, eos) -> bool:
        """Generated token s for every run still going; False when every run has ended."""
        going = [run for run in self.runs if run.tokens[-1] != eos]
        if not going:
            return False
        ids = [[0] for _ in range(self.rows)]
        for run in self.runs:  # an ended run keeps feeding its last token: its row is ignored
            ids[run.row] = [run.tokens[-1]]
            if run.full_row is not None:
                ids[run.full_row] = [run.tokens[-1]]
        self.step_index, self._calls = s, 0
        logits = models.lm_step(lm, ids, self.cache, override=self._attend)
        for run in going:
            ours = logits[run.row]
            full = ours if run.full_row is None else logits[run.full_row]
            run.kl.append(_kl(full, ours))
            run.tokens.append(int(torch.argmax(ours)))
        return True


@dataclass
class _Prefill:
    """The prompt through the model once: its cache, and each layer's Q, K, V and scale."""

    p: int
    cache: object
    logits: torch.Tensor
    layers: list = field(default_factory=list)
    last_attention: np.ndarray | None = None  # (L, G, P): the last prompt query's group-mean weights


def _prefill(lm, ids: list[int]) -> _Prefill:
    layers, last = [], []

    def record(eager, module, query, key, value, attention_mask, scaling=None, **kwargs):
        out, weights = eager(module, query, key, value, attention_mask, scaling=scaling, dropout=0.0, **kwargs)
        size = query.shape[1] // key.shape[1]
        q, k, v = (x.detach().float().clone() for x in (query, key, value))
        scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
        # budget 1: prompt_weight_sums, all a policy asks of this Replay, does not read the budget
        heads = Replay(q, k.repeat_interleave(size, 1), v.repeat_interleave(size, 1), 1, q.shape[-2], scale)
        layers.append(dict(q=q, k=k, v=v, scale=scale, heads=heads))
        last.append(weights[0, :, -1].float().unflatten(0, (-1, size)).mean(1).numpy())
        return out, weights

    cache = models.new_cache(lm)
    logits = models.lm_step(lm, ids, cache, override=record)
    return _Prefill(p=len(ids), cache=cache, logits=logits, layers=layers, last_attention=np.stack(last))


def _kl(full: torch.Tensor, ours: torch.Tensor) -> float:
    """KL(full ‖ ours) of two next-token distributions given as logits, in float64, in nats."""
    lp, lq = torch.log_softmax(full.double(), -1), torch.log_softmax(ours.double(), -1)
    return float((lp.exp() * (lp - lq)).sum().clamp_min(0.0))


def _check_steps(max_new_tokens) -> int:
    t = whole_number("max_new_tokens", max_new_tokens, 1)
    if not 1 <= t <= MAX_NEW_TOKENS:
        raise ParameterError(f"max_new_tokens = {t} must be in 1–{MAX_NEW_TOKENS}.")
    return t


def generate(policy, prompt: str, *, model: str = DEFAULT_MODEL, max_new_tokens: int = 32, budget: int,
             progress: Callable[[int, int], None] | None = None, **params) -> GenerationResult:
    """Greedy generation of ``max_new_tokens`` tokens after ``prompt`` with every layer's KV cache
    pruned by ``policy`` (a name from ``list_policies()``) at ``budget`` cached positions per step
    (the token being decoded included). params: the policy's parameters. progress(done, total) is
    called after each generated token (done of max_new_tokens)."""
    return generate_many([(policy, params)], prompt, model=model, max_new_tokens=max_new_tokens, budget=budget,
                         progress=progress)[0]


def generate_many(policies: Sequence[str | tuple[str, Mapping]], prompt: str, *, model: str = DEFAULT_MODEL,
                  max_new_tokens: int = 32, budget: int,
                  progress: Callable[[int, int], None] | None = None) -> list[GenerationResult]:
    """Several policies (names or (name, params)) after one shared prefill of ``prompt``, stepped together
    (one batched forward per generated token)."""
    steps, budget = _check_steps(max_new_tokens), check_cache_budget(budget)
    lm = models.decoder(model)
    limit = min(lm.max_tokens, LIMITS["max_model_tokens"]) - steps
    if limit < 1:
        raise ParameterError(f"max_new_tokens = {steps} leaves no room for a prompt: {lm.name} reads at most "
                             f"{lm.max_tokens:,} tokens here.")
    ids, notices = models.prompt_ids(lm, prompt, limit)
    resolved = []
    for item in policies:
        name, params = (item, {}) if isinstance(item, (str, PolicySpec)) else (item[0], dict(item[1]))
        spec = name if isinstance(name, PolicySpec) else get_policy(name)
        resolved.append((spec, spec.resolve(params, n=len(ids) + steps, d=lm.head_dim, budget=budget,
                                            prefill=len(ids))))
    if not resolved:
        raise ParameterError("no policy given; name at least one (list_policies()).")
    shared = _prefill(lm, ids)
    runs, row = [], 0
    for spec, params in resolved:
        full_row = None if spec.name == "full" else row + 1
        runs.append(_PolicyRun(spec, params, budget, shared, steps, row, full_row))
        row += 1 if full_row is None else 2
    batch = _Batch(runs, shared, row)
    eos = getattr(lm.tokenizer, "eos_token_id", None)
    if progress:
        progress(1, steps)
    for s in range(1, steps):
        if not batch.step(lm, s, eos):
            break
        if progress:
            progress(s + 1, steps)
    results = []
    dv = shared.layers[0]["v"].shape[-1]
    for run in runs:
        t = len(run.tokens)
        results.append(GenerationResult(
            policy=run.spec.name, display_name=run.spec.display_name, params=run.params, budget=budget,
            model=lm.name, prompt_ids=list(ids), prompt_labels=models.labels(lm, ids), tokens=run.tokens,
            labels=models.labels(lm, run.tokens), text=lm.tokenizer.decode(run.tokens, skip_special_tokens=True),
            kl=np.array(run.kl), kept=run.kept[:t, :, :, :len(ids) + t - 1],
            attention=run.attention[:t, :, :, :len(ids) + t - 1], kv_group=lm.kv_group,
            bytes_per_key=(lm.head_dim + dv) * 4, notices=list(notices),
            pieces=[lm.tokenizer.decode([t]) for t in run.tokens]))
    return results
