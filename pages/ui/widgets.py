"""Widgets bound to the URL (``bind="query-params"``): the address bar is a link to what is on screen.
A variant's parameters get widgets from their typed ``Param`` (range, help, log scale)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import streamlit as st

from xviz.app import settings as appstate
from xviz.core.errors import XvizError
from xviz.core.registry import Param

from .display import notice

BIND = "query-params"


def follow_default(key: str, default: Any) -> None:
    """What a page shows must be a function of its URL. A widget whose default depends on other settings
    (a budget on N, a window on the budget) and whose value is not in the URL holds its default; when
    that default moves, the widget moves with it, as a fresh opening of the same link would show."""
    seen = st.session_state.setdefault("_widget_defaults", {})
    if key not in st.query_params and key in st.session_state and key in seen and seen[key] != default:
        st.session_state[key] = default
    seen[key] = default


def param_widget(p: Param, key: str, n: int, d: int, *, default: Any = None, container=None) -> Any:
    """A widget for a typed Param (range and help from the spec), bound to the URL under ``key``."""
    c = container or st
    spec = appstate.widget_spec(p, n, d)
    value = spec["default"] if default is None else default
    label, help_ = p.name.replace("_", " "), p.help
    lo, hi = spec.get("min"), spec.get("max")
    if p.kind in ("int", "float"):
        value = int(value) if p.kind == "int" else float(value)
        value = max(value, lo) if lo is not None else value
        value = min(value, hi) if hi is not None else value
    follow_default(key, value)
    if p.kind == "bool":
        return c.checkbox(label, value=bool(value), key=key, help=help_, bind=BIND)
    if p.kind == "choice":
        options = spec["options"]
        return c.selectbox(label, options, index=options.index(value) if value in options else 0, key=key,
                           help=help_, bind=BIND)
    if p.kind == "int" and p.rule is not None and lo is not None and hi is not None and hi - lo <= 4096:
        # a rule (Reformer's buckets: 1 or even) narrows the range: offer only the values that will run
        options = [x for x in range(lo, hi + 1) if p.valid(x, n, d)] or [value]
        value = value if value in options else min(options, key=lambda x: abs(x - value))
        return c.select_slider(label, options, value=value, key=key, help=help_, bind=BIND)
    if p.kind == "int":
        if lo is not None and hi is not None and 0 < hi - lo <= 256:
            return c.slider(label, min_value=lo, max_value=hi, value=value, step=1, key=key, help=help_, bind=BIND)
        return c.number_input(label, min_value=lo, max_value=hi, value=value, step=1, key=key, help=help_, bind=BIND)
    if lo is not None and hi is not None and hi > lo and not p.log:
        return c.slider(label, min_value=lo, max_value=hi, value=value, key=key, help=help_, bind=BIND)
    return c.number_input(label, min_value=lo, max_value=hi, value=value, key=key, help=help_, format="%g", bind=BIND)


def param_widgets(spec, n: int, d: int, defaults: Mapping[str, Any] | None = None) -> dict:
    """One widget per parameter of ``spec``, four to a row, each bound to ``<variant>.<param>``."""
    params: dict = {}
    if spec.params:
        cols = st.columns(min(4, len(spec.params)))
        for i, p in enumerate(spec.params):
            params[p.name] = param_widget(p, appstate.param_key(spec.name, p.name), n, d,
                                          default=(defaults or {}).get(p.name), container=cols[i % len(cols)])
    return params


def field_widget(f: appstate.Field, *, container=None, options: Sequence[str] | None = None,
                 high: int | None = None, default: Any = None) -> Any:
    """A widget for a typed setting (``appstate.Field``: the shared sidebar's, an input source's), bound
    to the URL under its key. ``high`` narrows an int's range (a model's layers)."""
    c = container or st
    value = f.default if default is None else default
    top = f.upper() if high is None else high
    if f.kind == "int" and top is not None:
        value = min(int(value), int(top))
    follow_default(f.key, value)
    if f.kind == "choice":
        opts = list(f.options() if options is None else options)
        if f.open:  # a value from the link that is not listed is offered too (checked when the input loads)
            typed = st.session_state.get(f.key, _url_value(f.key)[-1] if _url_value(f.key) else None)
            opts += [typed] if typed is not None and typed not in opts else []
        return c.selectbox(f.label, opts, index=opts.index(value) if value in opts else 0, key=f.key, help=f.help,
                           bind=BIND, accept_new_options=f.open, format_func=lambda x: x if x != "" else "(default)")
    if f.kind == "bool":
        return c.toggle(f.label, value=bool(value), key=f.key, help=f.help, bind=BIND)
    if f.kind == "text":
        return c.text_area(f.label, value=str(value), key=f.key, help=f.help, bind=BIND, height=110)
    if f.kind == "str":
        return c.text_input(f.label, value=str(value), key=f.key, help=f.help, bind=BIND)
    if f.kind == "float":
        return c.number_input(f.label, min_value=f.low, max_value=top, value=float(value), key=f.key, help=f.help,
                              format="%g", bind=BIND)
    if top is not None:
        _within(f, int(top))
    return c.number_input(f.label, min_value=None if f.low is None else int(f.low),
                          max_value=None if top is None else int(top), value=int(value), step=1, key=f.key,
                          help=f.help, bind=BIND)


def _within(f: appstate.Field, high: int) -> None:
    """A link value inside the field's own range but above this run's (layer 99 of a 6-layer model) is named:
    the widget would drop it silently. Values outside the field's own range are named by the sidebar."""
    raw = _url_value(f.key)
    if raw is None or f.key in st.session_state or f.upper() is None or high >= f.upper():
        return
    try:
        appstate.parse_value(f.key, "int", raw[-1], f.low, f.upper())
    except XvizError:
        return
    try:
        appstate.parse_value(f.key, "int", raw[-1], f.low, high)
    except XvizError as exc:
        notice(f"Link setting ignored: {exc} Using {min(int(f.default), high)}.")


def name_unused_link_settings() -> None:
    """After a page ran to its end: every URL key that no widget of this run holds is named (a typo, a
    parameter of another variant, a setting of another source)."""
    for message in appstate.unused_link_settings(st.query_params.to_dict(), st.session_state.keys()):
        notice(message)


def _url_value(key: str) -> list[str] | None:
    return st.query_params.get_all(key) if key in st.query_params else None


def _ignored(key: str, raw: Any, why: str, using: Any) -> None:
    notice(f"Link setting ignored: {key} = {appstate.shown(raw)} {why}; using {appstate.shown(using)}.")


def _name_unlisted(key: str, options: Sequence, using: Any) -> None:
    """A link value for ``key`` that is not one of ``options`` is named (the widget would drop it)."""
    raw = _url_value(key)
    if raw is not None and key not in st.session_state and raw[-1] not in options:
        _ignored(key, raw[-1], f"is not one of: {', '.join(map(str, list(options)[:20]))}", using)


def number(label: str, key: str, low: int, high: int, value: int, *, container=None, help: str | None = None) -> int:
    """A bound integer input clamped to [low, high] (a page's own setting: head, query, budget, …). A link
    value that is not a whole number in range is named in a message (the widget would drop it silently)."""
    c = container or st
    high = max(low, high)
    value = min(max(value, low), high)
    follow_default(key, value)
    raw = _url_value(key)
    if raw is not None and key not in st.session_state:
        try:
            appstate.parse_value(key, "int", raw[-1], low, high)
        except XvizError as exc:
            notice(f"Link setting ignored: {exc} Using {value}.")
    return int(c.number_input(label, min_value=low, max_value=high, value=value, step=1, key=key, bind=BIND,
                              help=help))


def choice(label: str, options: Sequence[str], key: str, default: str | None = None, *, container=None,
           help: str | None = None, format_func=str) -> str:
    c = container or st
    opts = list(options)
    idx = opts.index(default) if default in opts else 0
    follow_default(key, opts[idx] if opts else None)
    _name_unlisted(key, opts, opts[idx] if opts else None)
    return c.selectbox(label, opts, index=idx, key=key, bind=BIND, help=help, format_func=format_func)


def tabs(labels: Sequence[str], key: str) -> Sequence:
    """Bound tabs whose content runs only while open (``tab.open``): a hidden tab costs neither its
    work nor its figures. A link value that is not a tab is named."""
    _name_unlisted(key, labels, labels[0])
    return st.tabs(list(labels), key=key, on_change="rerun", bind=BIND)


def choices(label: str, options: Sequence[str], key: str, default: Sequence[str], *, container=None,
            help: str | None = None, format_func=str) -> list[str]:
    """A bound multiselect; link values that are not options are named in a message."""
    c = container or st
    opts = list(options)
    raw = _url_value(key)
    if raw is not None and key not in st.session_state:
        bad = [x for x in raw if x not in opts]
        if bad:
            _ignored(key, ", ".join(bad), "is not among the options", ", ".join(x for x in raw if x in opts) or
                     "the defaults")
    return c.multiselect(label, opts, default=[x for x in default if x in opts], key=key, bind=BIND, help=help,
                         format_func=format_func)


def toggle(label: str, key: str, value: bool = False, *, container=None, help: str | None = None) -> bool:
    c = container or st
    raw = _url_value(key)
    if raw is not None and key not in st.session_state:
        try:
            appstate.parse_value(key, "bool", raw[-1])
        except XvizError as exc:
            notice(f"Link setting ignored: {exc} Using {value}.")
    return c.toggle(label, value=value, key=key, bind=BIND, help=help)
