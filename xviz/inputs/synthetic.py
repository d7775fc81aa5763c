"""Synthetic Q/K/V with the knobs that decide how hard attention is to approximate.

Every generator builds unit-scale query and key directions u_q, u_k (‖u‖ ≈ 1) and returns
q = g·u_q, k = g·u_k with g = √(logit_scale·√d), so the engine's logits q·k/√d equal
``logit_scale · (u_q·u_k)``: ``logit_scale`` is the logit of a perfect match (for "gaussian", the
standard deviation of the logits). Small values give near-uniform attention, large ones
near one-hot attention, which is where low-rank and kernel methods struggle and hashing and
top-k methods do well (catalog, identity 12).

Kinds (all seeded, any N ≥ 1 and d ≥ 1, batch 1, float32, O(N·d) to generate — no N×N tensor):

* ``gaussian``: iid N(0, logit_scale) entries in q and k: unstructured attention, logit std = logit_scale.
* ``clustered``: tokens drawn from a mixture of ``clusters`` Gaussians (centres shared by q and k,
  independent noise of relative size ``spread``); in order (contiguous clusters) the attention is
  block-diagonal, shuffled it is block structure after sorting by ``meta["clusters"]``.
* ``positional``: a content vector moved by positions, either rotary (RoPE, Su et al. 2021,
  q_m = R_m(a + noise)) or additive sinusoidal (Vaswani et al. 2017, q_m = p_m + noise). Both give
  logits that depend on i − j through Σ_f w_f·cos((i − j)θ_f), θ_f = base^(−2f/d): attention is banded.
* ``periodic``: a univariate series (``harmonics`` sinusoids of period ``period`` plus noise),
  embedded by :func:`embed_series` (sinusoidal random features of a sliding window): tokens attend
  to the same phase, so the map has stripes every ``period`` tokens.
* ``duplication``: the Reformer duplication task (Kitaev et al. 2020, §5): random symbols w followed
  by their copy, w w. Queries match the symbol and, through a sharp positional code, the position
  half a sequence away: each token attends to its copy (``meta["partner"]``), the way a trained
  model solves the task. ``position_weight`` = 0 leaves only the symbol match (self and copy tie).
* ``image``: a random scene of coloured discs on a gradient, cut into ``patch``×``patch`` patches in
  raster order on a grid (``positions`` (N, 2) = row, column); q = k = projected patch content plus
  a 2-D positional code, so attention is local in 2-D (including the token one row up, ``cols`` tokens
  away in raster order) and follows colour.
* ``needle``: needle in a haystack for decoding (KV-cache policies): haystack tokens attend locally
  (a sharp positional code of share ``locality``, plus random content); the key at ``needle`` (a
  fraction of N) and the query at ``query`` (a fraction of N) share one random content direction
  and no position, so their logit is ``logit_scale`` and full causal attention's strongest key for
  that query is the needle (``meta["needle"]``, ``meta["query"]``): a cache that evicted it cannot
  answer. Nothing else attends the needle, so accumulated attention does not protect it.
"""
from __future__ import annotations

import math
import operator

import torch

from ..core.engine import check_seed, generator
from ..core.errors import InputError, ParameterError
from ..core.registry import Param
from .sequence import SequenceInput
from ._common import check_size, logit_gain, unit_rows

SYNTHETIC_KINDS = ("gaussian", "clustered", "positional", "periodic", "duplication", "image", "needle")


def _scale_param(default: float) -> Param:
    return Param("logit_scale", "float", default,
                 "logit of a perfect match (q·k/√d): small = near-uniform attention, large = near one-hot",
                 low=0.01, high=50.0, log=True)


_PARAMS: dict[str, tuple[Param, ...]] = {
    "gaussian": (
        Param("logit_scale", "float", 1.0,
              "standard deviation of the logits q·k/√d: small = near-uniform attention, large = near one-hot",
              low=0.01, high=50.0, log=True),
    ),
    "clustered": (
        Param("clusters", "int", 8, "number of clusters (mixture components) the tokens are drawn from",
              low=1, high="N", log=True),
        Param("spread", "float", 0.3, "noise around each cluster centre, relative to the centre's norm",
              low=0.0, high=3.0),
        _scale_param(6.0),
        Param("shuffle", "bool", False, "scatter the clusters over the sequence instead of contiguous blocks"),
    ),
    "positional": (
        Param("encoding", "choice", "rotary", "rotary (RoPE, multiplicative) or additive sinusoidal positions",
              choices=("rotary", "sinusoidal")),
        Param("base", "float", 1_000.0, "frequency base: θ_f = base^(−2f/d); larger = slower decay, wider band",
              low=2.0, high=1e6, log=True),
        _scale_param(10.0),
        Param("content", "float", 0.3, "size of random content added to the positional signal (0 = pure position)",
              low=0.0, high=3.0),
    ),
    "periodic": (
        Param("period", "int", 32, "period of the series in tokens", low=2, high="N"),
        Param("harmonics", "int", 2, "number of harmonics (amplitude 1/j for the j-th)", low=1, high=8),
        Param("noise", "float", 0.1, "standard deviation of the added white noise", low=0.0, high=3.0),
        Param("window", "int", 8, "tokens per embedded window (the features see x[t−window+1..t])",
              low=1, high=64),
        _scale_param(8.0),
    ),
    "duplication": (
        Param("vocab", "int", 64, "number of distinct symbols", low=2, high=4096, log=True),
        Param("position_weight", "float", 0.5,
              "share of the query that seeks the position half a sequence away (0 = symbol match only)",
              low=0.0, high=1.0),
        _scale_param(8.0),
    ),
    "image": (
        Param("patch", "int", 4, "patch side in pixels", low=1, high=16),
        Param("cols", "int", 0, "patches per grid row (0 = ⌈√N⌉, a near-square grid)", low=0, high="N"),
        Param("position_weight", "float", 0.4, "share of q and k given to the 2-D position (the rest: content)",
              low=0.0, high=1.0),
        _scale_param(6.0),
    ),
    "needle": (
        Param("needle", "float", 0.1, "position of the needle key, as a fraction of the sequence (0 = first token)",
              low=0.0, high=1.0),
        Param("query", "float", 1.0, "position of the query that seeks the needle, as a fraction (1 = last token)",
              low=0.0, high=1.0),
        Param("locality", "float", 0.8, "share of q and k given to position: how strongly other tokens attend nearby",
              low=0.0, high=0.95),
        _scale_param(10.0),
    ),
}

_SALT = {kind: 101 * (i + 1) for i, kind in enumerate(SYNTHETIC_KINDS)}


def synthetic_params(kind: str) -> tuple[Param, ...]:
    """The knobs of a synthetic kind (typed, ranged, with help), for widgets."""
    _check_kind(kind)
    return _PARAMS[kind]


def _check_kind(kind) -> None:
    if kind not in _PARAMS:
        raise InputError(f"unknown synthetic input kind {kind!r}; choose one of {', '.join(SYNTHETIC_KINDS)}.")


def _int_arg(name: str, value, low: int = 1) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)  # int, NumPy integers
    except TypeError:
        raise InputError(f"{name} = {value!r} must be a whole number (at least {low}).") from None
    if value < low:
        raise InputError(f"{name} = {value} must be at least {low}.")
    return value


def _resolve(kind: str, n: int, d: int, knobs: dict) -> dict:
    params = _PARAMS[kind]
    names = [p.name for p in params]
    unknown = sorted(set(knobs) - set(names))
    if unknown:
        raise InputError(f"the {kind} input has no knob {', '.join(map(repr, unknown))}; "
                         f"it takes: {', '.join(names)}.")
    out = {}
    for p in params:
        try:
            out[p.name] = p.coerce(knobs[p.name], n, d) if p.name in knobs else p.fit_default(n, d)
        except ParameterError as exc:
            raise InputError(str(exc)) from None
    return out


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float32)


# ------------------------------------------------------------------ positional codes


def rotary(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """RoPE (half-split pairs (f, f + d/2), as in LLaMA) applied to x (..., N, d) at positions pos (N,).
    An odd last dimension is left unrotated."""
    d = x.shape[-1]
    half = d // 2
    if half == 0:
        return x
    theta = base ** (-torch.arange(half, dtype=torch.float64) / half)
    ang = pos.to(torch.float64)[:, None] * theta[None]  # angles in float64: exact at N = 65,536
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, rest], dim=-1)


def fourier_positions(pos: torch.Tensor, m: int, sigma: float, g: torch.Generator, heads: int) -> torch.Tensor:
    """Random Fourier features of positions pos (N, p): (heads, N, m) with rows of norm 1 and
    P(a)·P(b) ≈ exp(−‖a − b‖² / 2σ²) (Rahimi & Recht 2007): a sharp, alias-free positional code."""
    half = max(m // 2, 1)
    p = pos.reshape(pos.shape[0], -1).to(torch.float64)
    omega = torch.randn(heads, half, p.shape[1], generator=g, dtype=torch.float64) / sigma
    ang = torch.einsum("np,hfp->hnf", p, omega)
    feats = torch.cat([ang.cos(), ang.sin()], dim=-1) / math.sqrt(half)
    return feats[..., :m].to(torch.float32)


def _two_part(content: torch.Tensor | None, position: torch.Tensor | None, weight: float) -> torch.Tensor:
    """Concatenate √(1−w)·content and √w·position (each part's rows of norm ≈ 1), so ‖u‖ ≈ 1."""
    if content is None or content.shape[-1] == 0:
        return position
    if position is None or position.shape[-1] == 0:
        return content
    return torch.cat([math.sqrt(1.0 - weight) * content, math.sqrt(weight) * position], dim=-1)


def _split_dims(d: int, weight: float) -> tuple[int, int]:
    """(content dims, position dims): position dims even, each part non-empty when its weight is."""
    dp = 2 * round(weight * d / 2)
    if weight > 0 and dp == 0 and d >= 2:
        dp = 2
    if weight < 1 and dp >= d:
        dp = d - 1 if (d - 1) % 2 == 0 else d - 2
    dp = max(dp, 0)
    return d - dp, dp


# ------------------------------------------------------------------ embeddings shared with real files


def embed_series(x: torch.Tensor, d: int, heads: int, g: torch.Generator, window: int = 8,
                 logit_scale: float = 4.0):
    """Embed a univariate series x (N,) as q, k, v (1, heads, N, d) with sinusoidal features.

    Token t sees the window w_t = (x[t−L+1], …, x[t]) (the first value repeats before the start) of the
    standardised series. Features: φ(w) = √(2/d)·cos(Ωw + b) with Ω ~ N(0, 2/L), b ~ U(0, 2π), so
    φ(w)·φ(w′) ≈ exp(−‖w − w′‖²/L): windows of the same shape (the same phase) attract. q = k = g·φ;
    v = √2·cos(Ω′w + b′) with independent Ω′, b′ (unit-variance entries)."""
    x = x.to(torch.float64).flatten()
    n = x.numel()
    # Standardising is scale-invariant: divide by the largest |x| first, so sums of values near the
    # float64 maximum (1e308 in a CSV) cannot overflow into NaN q, k, v.
    x = x / x.abs().amax().clamp_min(torch.finfo(torch.float64).tiny) if n else x
    std = x.std() if n > 1 else torch.tensor(0.0, dtype=torch.float64)
    x = (x - x.mean()) / (std if std > 0 else 1.0)
    L = max(1, min(int(window), n))
    padded = torch.cat([x[:1].expand(L - 1), x])
    w = padded.unfold(0, L, 1)  # (N, L)
    omega = torch.randn(heads, L, d, generator=g, dtype=torch.float64) * math.sqrt(2.0 / L)
    b = torch.rand(heads, 1, d, generator=g, dtype=torch.float64) * 2 * math.pi
    omega_v = torch.randn(heads, L, d, generator=g, dtype=torch.float64) * math.sqrt(2.0 / L)
    b_v = torch.rand(heads, 1, d, generator=g, dtype=torch.float64) * 2 * math.pi
    phi = torch.cos(torch.einsum("nl,hld->hnd", w, omega) + b) * math.sqrt(2.0 / d)
    v = torch.cos(torch.einsum("nl,hld->hnd", w, omega_v) + b_v) * math.sqrt(2.0)
    q = (logit_gain(logit_scale, d) * phi).to(torch.float32)[None]
    return q, q.clone(), v.to(torch.float32)[None]


def grid_shape(n: int, cols: int = 0) -> tuple[int, int]:
    """(rows, cols) of a raster grid holding n patches; cols = 0 picks ⌈√n⌉ (a near-square grid)."""
    cols = cols or math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def embed_patches(img: torch.Tensor, n: int, cols: int, patch: int, d: int, heads: int, g: torch.Generator,
                  position_weight: float = 0.4, logit_scale: float = 6.0):
    """Cut img (rows·patch, cols·patch, C) into patches in raster order (the first n) and embed them.

    Content: the patch pixels, centred over patches, randomly projected (per head) and normalised, so
    u·u′ is the patches' cosine similarity (Johnson–Lindenstrauss). Position: a 2-D random Fourier code
    with P(a)·P(b) ≈ exp(−‖a − b‖²/2·1.5²) over (row, column). q = k = g·[√(1−w)·content, √w·position];
    v: another random projection of the content (unit-variance entries).
    Returns q, k, v (1, heads, n, d) and positions (n, 2) = (row, column)."""
    rows = math.ceil(n / cols)
    c = img.shape[-1]
    img = img[: rows * patch, : cols * patch].to(torch.float64)
    patches = img.reshape(rows, patch, cols, patch, c).permute(0, 2, 1, 3, 4).reshape(rows * cols, -1)[:n]
    feats = patches - patches.mean(dim=0, keepdim=True)
    dc, dp = _split_dims(d, position_weight)
    pos = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1).reshape(-1, 2)[:n]
    content = None
    if dc:
        proj = torch.randn(heads, feats.shape[1], dc, generator=g, dtype=torch.float64)
        content = unit_rows(torch.einsum("np,hpd->hnd", feats, proj)).to(torch.float32)
    position = fourier_positions(pos, dp, 1.5, g, heads) if dp else None
    u = _two_part(content, position, position_weight)
    proj_v = torch.randn(heads, feats.shape[1], d, generator=g, dtype=torch.float64)
    v = unit_rows(torch.einsum("np,hpd->hnd", feats, proj_v)) * math.sqrt(d)
    q = logit_gain(logit_scale, d) * u
    return q[None], q[None].clone(), v.to(torch.float32)[None], pos


# ------------------------------------------------------------------ the generators


def _gaussian(n, d, heads, g, logit_scale):
    s = math.sqrt(logit_scale)
    q, k, v = s * _randn(g, heads, n, d), s * _randn(g, heads, n, d), _randn(g, heads, n, d)
    return q[None], k[None], v[None], [f"t{i}" for i in range(n)], torch.arange(n), {}


def _clustered(n, d, heads, g, clusters, spread, logit_scale, shuffle):
    assign = torch.arange(n) * clusters // n  # contiguous blocks, sizes differing by at most 1
    if shuffle:
        assign = assign[torch.randperm(n, generator=g)]
    centres = unit_rows(_randn(g, heads, clusters, d))
    uq = centres[:, assign] + spread * _randn(g, heads, n, d) / math.sqrt(d)
    uk = centres[:, assign] + spread * _randn(g, heads, n, d) / math.sqrt(d)
    gain = logit_gain(logit_scale, d)
    v = _randn(g, heads, n, d)
    tokens = [f"c{int(c)}" for c in assign]
    return (gain * uq)[None], (gain * uk)[None], v[None], tokens, torch.arange(n), {"clusters": assign}


def _positional(n, d, heads, g, encoding, base, logit_scale, content):
    pos = torch.arange(n)
    noise_q = content * _randn(g, heads, n, d) / math.sqrt(d)
    noise_k = content * _randn(g, heads, n, d) / math.sqrt(d)
    if encoding == "rotary":
        a = unit_rows(_randn(g, heads, 1, d))  # per-head content direction; its pair norms weight the frequencies
        uq, uk = rotary(a + noise_q, pos, base), rotary(a + noise_k, pos, base)
    else:
        half = d // 2
        gains = _randn(g, heads, 1, half).abs()
        gains = gains / gains.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        theta = base ** (-torch.arange(half, dtype=torch.float64) / max(half, 1))
        ang = pos.to(torch.float64)[:, None] * theta[None]
        p = torch.cat([gains * ang.sin().float(), gains * ang.cos().float(),
                       torch.zeros(heads, n, d - 2 * half)], dim=-1)
        uq, uk = p + noise_q, p + noise_k
    gain = logit_gain(logit_scale, d)
    v = _randn(g, heads, n, d)
    return (gain * uq)[None], (gain * uk)[None], v[None], [f"t{i}" for i in range(n)], pos, {}


def _periodic(n, d, heads, g, period, harmonics, noise, window, logit_scale):
    t = torch.arange(n, dtype=torch.float64)
    phases = torch.rand(harmonics, generator=g, dtype=torch.float64) * 2 * math.pi
    x = sum(torch.sin(2 * math.pi * j * t / period + phases[j - 1]) / j for j in range(1, harmonics + 1))
    x = x + noise * torch.randn(n, generator=g, dtype=torch.float64)
    q, k, v = embed_series(x, d, heads, g, window=window, logit_scale=logit_scale)
    return q, k, v, [f"t{i}" for i in range(n)], torch.arange(n), {"series": x.float(), "period": period}


def _duplication(n, d, heads, g, vocab, position_weight, logit_scale):
    half = n // 2
    word = torch.randint(1, vocab + 1, (half,), generator=g)
    symbols = torch.cat([word, word, torch.zeros(n - 2 * half, dtype=torch.long)])  # odd N: a final separator 0
    pos = torch.arange(n)
    partner = torch.where(pos < half, pos + half, pos - half)
    partner[2 * half:] = pos[2 * half:]
    dc, dp = _split_dims(d, position_weight)
    table = unit_rows(_randn(g, heads, vocab + 1, dc)) if dc else None
    content = table[:, symbols] if dc else None
    # Queries carry the code of their partner's position, keys their own: q_i·k_j peaks at j = partner(i).
    code = fourier_positions(pos, dp, 1.0, g, heads) if dp else None
    uq = _two_part(content, code[:, partner] if dp else None, position_weight)
    uk = _two_part(content, code, position_weight)
    gain = logit_gain(logit_scale, d)
    v = _randn(g, heads, n, d)
    meta = {"symbols": symbols, "partner": partner}
    return (gain * uq)[None], (gain * uk)[None], v[None], [str(int(s)) for s in symbols], pos, meta


def random_scene(height: int, width: int, g: torch.Generator, discs: int = 7) -> torch.Tensor:
    """A (height, width, 3) image in [0, 1]: a vertical colour gradient with hard-edged coloured discs."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height, dtype=torch.float64),
                            torch.linspace(0, 1, width, dtype=torch.float64), indexing="ij")
    top, bottom = torch.rand(3, generator=g, dtype=torch.float64), torch.rand(3, generator=g, dtype=torch.float64)
    img = top + (bottom - top) * yy[..., None]
    aspect = width / max(height, 1)
    for _ in range(discs):
        cy, cx, r = torch.rand(3, generator=g, dtype=torch.float64).tolist()
        r = 0.08 + 0.2 * r
        colour = torch.rand(3, generator=g, dtype=torch.float64)
        inside = ((yy - cy) ** 2 + ((xx - cx) * aspect) ** 2) < r * r
        img = torch.where(inside[..., None], colour, img)
    img = img + 0.02 * torch.randn(height, width, 3, generator=g, dtype=torch.float64)
    return img.clamp(0, 1)


def _image(n, d, heads, g, patch, cols, position_weight, logit_scale):
    rows, cols = grid_shape(n, cols)
    img = random_scene(rows * patch, cols * patch, g)
    q, k, v, pos = embed_patches(img, n, cols, patch, d, heads, g, position_weight, logit_scale)
    tokens = [f"r{int(r)}c{int(c)}" for r, c in pos]
    return q, k, v, tokens, pos, {"grid": (rows, cols), "image": img.float()}


def _needle(n, d, heads, g, needle, query, locality, logit_scale):
    at, ask = round(needle * (n - 1)), round(query * (n - 1))
    dc, dp = _split_dims(d, locality)
    content_k, content_q = unit_rows(_randn(g, heads, n, dc)), unit_rows(_randn(g, heads, n, dc))
    code = fourier_positions(torch.arange(n), dp, 1.0, g, heads) if dp else None
    uk, uq = _two_part(content_k, code, locality), _two_part(content_q, code, locality)
    # Needle key and query: one random content direction, no position, so their logit is logit_scale
    # against ≈ ±logit_scale·√(1 − locality)/√d_content for every other key the query sees.
    target = torch.cat([unit_rows(_randn(g, heads, dc)), torch.zeros(heads, d - dc)], dim=-1)
    uk[:, at], uq[:, ask] = target, target
    gain = logit_gain(logit_scale, d)
    v = _randn(g, heads, n, d)
    tokens = [f"t{i}" for i in range(n)]
    tokens[ask], tokens[at] = "query", "needle"
    return (gain * uq)[None], (gain * uk)[None], v[None], tokens, torch.arange(n), {"needle": at, "query": ask}


_GENERATORS = {"gaussian": _gaussian, "clustered": _clustered, "positional": _positional,
               "periodic": _periodic, "duplication": _duplication, "image": _image, "needle": _needle}


def synthetic(kind: str, n: int = 256, d: int = 64, heads: int = 4, seed: int = 0, **knobs) -> SequenceInput:
    """A seeded synthetic input of ``kind`` (see the module docstring), q, k, v of shape (1, heads, n, d)."""
    _check_kind(kind)
    n, d, heads = _int_arg("n", n), _int_arg("d", d), _int_arg("heads", heads)
    seed = check_seed(_int_arg("seed", seed, low=0), InputError)
    check_size(n, d, heads, what=f"the synthetic {kind} input")
    params = _resolve(kind, n, d, knobs)
    g = generator(seed, _SALT[kind])
    q, k, v, tokens, positions, meta = _GENERATORS[kind](n, d, heads, g, **params)
    knob_text = ", ".join(f"{key}={val:g}" if isinstance(val, float) else f"{key}={val}" for key, val in params.items())
    provenance = f"synthetic {kind} input (N={n}, d={d}, {heads} heads; {knob_text}; seed {seed})"
    meta.update(kind=kind, params=params, seed=seed)
    return SequenceInput(q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), tokens=tokens, positions=positions,
                         provenance=provenance, causal=False, meta=meta)
