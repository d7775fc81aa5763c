"""The app's settings as plain data: URL query parameters ⇄ validated values, widget specs, number formats.

No streamlit here: the app binds every widget to a query parameter named by ``key`` below, and
calls :func:`check_query` on the raw URL before the widgets read it, so a bad value in a link
(an unknown variant, a window of −3, N = 10⁹) becomes a sentence on the page instead of a
silently dropped parameter or a traceback.

Names in the URL:
    source, causal, device, dtype, seed, present, img
    the source's own settings by their keys (text, model, kv, layer; kind, n, d, heads; sample; …: its
                          ``SourceSpec.fields``), and its knobs (syn.<kind>.<knob>, e.g. syn.clustered.clusters)
    variant, <variant>.<param>   the Explorer's variant and its parameters (e.g. sliding_window.window)
    head, query, topk     the Explorer's head, inspected query and top-k for recall
    budget, pattern       the Compare page's keys per query and the Patterns page's pattern
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlencode

from ..core.errors import XvizError
from ..core.registry import Param
from ..inputs.catalog import Field, list_sources, parse_value
from ..inputs.catalog import quoted as shown
from ..inputs.sources import DEFAULT_TEXT

DEVICES = ("auto", "cuda", "cpu")
DTYPES = ("float32", "bfloat16", "float16")
IMAGE_FORMATS = ("png", "svg")


def sidebar_fields() -> dict[str, Field]:
    """The shared sidebar's settings besides the source's own (those come from its ``SourceSpec``)."""
    return {f.key: f for f in (
        Field("source", "choice", "text", "Input", "where Q, K, V come from: " + "; ".join(
            f"{s.name}, {s.label}" for s in list_sources()), choices=lambda: tuple(s.name for s in list_sources())),
        Field("causal", "bool", False, "causal", "query i sees only keys j ≤ i"),
        Field("device", "choice", "auto", "device", "auto = CUDA when available", choices=DEVICES),
        Field("dtype", "choice", "float32", "dtype", "compute dtype", choices=DTYPES),
        Field("seed", "int", 0, "seed", "fixes every random draw", low=0, high=2**31 - 1),
        Field("present", "bool", False, "presentation", "large fonts, controls hidden"),
        Field("img", "choice", "png", "toolbar image", "format of the chart toolbar's camera (3× scale)",
              choices=IMAGE_FORMATS),
    )}


def param_key(owner: str, name: str) -> str:
    """URL/widget key of a variant parameter or a generator knob: ``owner.name``."""
    return f"{owner}.{name}"


def check_query(raw: Mapping[str, Any], fields: Mapping[str, Field]) -> tuple[dict, list[str]]:
    """Validate the raw URL values of ``fields``: (valid values, one message per bad value)."""
    values, messages = {}, []
    for key, f in fields.items():
        if key not in raw:
            continue
        try:
            values[key] = f.parse(raw[key])
        except XvizError as exc:
            messages.append(f"Link setting ignored: {exc} Using {f.default!r}.")
    return values, messages


def check_params(raw: Mapping[str, Any], owner: str, params: Sequence[Param], n: int, d: int) -> tuple[dict, list[str]]:
    """Validate ``owner.name`` URL values against typed Params at this shape."""
    values, messages = {}, []
    for p in params:
        key = param_key(owner, p.name)
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, (list, tuple)):
            value = value[-1] if value else ""
        try:
            if p.kind in ("int", "float"):
                value = parse_value(key, p.kind, value)
            values[p.name] = p.coerce(value, n, d)
        except XvizError as exc:
            messages.append(f"Link setting ignored: {owner} {exc} Using the default, {p.fit_default(n, d)!r}.")
    return values, messages


def check_variant(name: Any, known: Iterable[str], default: str = "exact") -> tuple[str, list[str]]:
    names = list(known)
    if isinstance(name, (list, tuple)):
        name = name[-1] if name else ""
    if name is None or name == "":
        return default, []
    if str(name) in names:
        return str(name), []
    return default, [f"Link setting ignored: unknown variant {shown(name)}; known variants: "
                     f"{', '.join(names)}. Showing {default!r}."]


def check_choice(raw: Mapping[str, Any], key: str, options: Sequence[str]) -> list[str]:
    """A message when the URL's ``key`` is not one of ``options`` (the widget then shows its default)."""
    if key not in raw:
        return []
    value = raw[key]
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else ""
    if str(value) in options:
        return []
    return [f"Link setting ignored: {key} = {shown(value)} is not one of: {', '.join(options)}."]


def unused_link_settings(url: Mapping[str, Any], used: Iterable[str]) -> list[str]:
    """One sentence per URL key that nothing on the page read (``used``: the keys the page's widgets and
    the sidebar hold), with the setting it probably meant: ``window`` for ``sliding_window.window``."""
    known = sorted({str(k) for k in used if not str(k).startswith("_")})
    out = []
    for key, value in url.items():
        if key in known:
            continue
        value = value[-1] if isinstance(value, (list, tuple)) and value else value
        near = [k for k in known if k.endswith("." + key)] or difflib.get_close_matches(key, known, n=2, cutoff=0.75)
        hint = f"; did you mean {' or '.join(near[:3])}?" if near else "."
        name = key if len(key) <= 40 else key[:40] + "…"
        out.append(f"Link setting ignored: {name} = {shown(value)} is not a setting of this page{hint}")
    return out


def query_string(values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> str:
    """A URL query for ``values`` (keys equal to their defaults left out, as the widgets do)."""
    items = []
    for k, v in values.items():
        if defaults is not None and k in defaults and defaults[k] == v:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        items.append((k, str(v)))
    return urlencode(items)


def widget_spec(p: Param, n: int, d: int) -> dict:
    """How to draw a Param as a widget at this shape: kind, min, max, default, step, options."""
    low, high = p.bounds(n, d)
    spec = dict(kind=p.kind, default=p.fit_default(n, d), help=p.help, label=p.name)
    if p.kind == "int":
        lo = int(math.ceil(low)) if low is not None else None
        hi = int(math.floor(high)) if high is not None else None
        if lo is not None and hi is not None and hi < lo:
            hi = lo
        spec.update(min=lo, max=hi, step=1)
    elif p.kind == "float":
        spec.update(min=float(low) if low is not None else None, max=float(high) if high is not None else None)
    elif p.kind == "choice":
        spec.update(options=list(p.choices))
    return spec


def describe_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) or "—"


def format_flops(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    for unit, s in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= s:
            return f"{x / s:.3g} {unit}"
    return f"{x:.3g}"


def seconds_estimate(flops: float, rate: float = 2e10) -> float:
    """Rough wall time of ``flops`` at ``rate`` FLOP/s (a 2-core CPU does a few 10¹⁰)."""
    return flops / rate
