"""The shared sidebar: where Q, K, V come from (an ``InputSpec``), the shape, causal, device, dtype, seed.
Every widget is bound to the URL; the raw URL is checked first, so a bad value in a link becomes a
sentence on the page instead of a silently dropped parameter."""
from __future__ import annotations

import streamlit as st
import torch

import xviz
from xviz.app import settings as appstate
from xviz import inputs
from xviz.inputs import model as model_lib
from xviz.core.errors import XvizError
from xviz.inputs import InputSpec

from . import compute
from .warm import model_ready
from .context import AppContext
from .display import npz_bytes
from .widgets import field_widget, param_widget


@st.cache_resource(show_spinner=False)
def model_info(model: str) -> dict:
    return dict(inputs.model_info(model or None))


@st.fragment(run_every=0.25)
def _wait_for_model(model: str) -> None:
    if not model_ready(model):
        st.caption("Loading the model (the first visit after the server started)…")
    else:
        st.rerun(scope="app")


def _model_layers(values: dict, sb, messages) -> int | None:
    """The text source's layer range is the model's: None while the model loads in the background,
    unless an earlier load stored its facts (then a stored capture of the text needs no model at all)."""
    if not model_lib.is_loaded(values["model"] or None):
        stored = inputs.stored_model_info(values["model"] or None)
        if stored is not None:  # the text's capture may be stored too: no load started for it
            return int(stored.get("layers", 1)) - 1
    if not model_ready(values["model"]):
        with sb:
            _wait_for_model(values["model"])
        return None
    try:
        return int(model_info(values["model"]).get("layers", 1)) - 1
    except XvizError as exc:
        messages.append(f"Model: {exc}")
        return 0


def _setting(f, sb, high=None):
    """A source setting's widget from its ``Field``; an upload lives in this session only."""
    if f.kind == "file":
        up = sb.file_uploader(f.label, type=list(f.options()) or None, key=f.key, help=f.help)
        return None if up is None else (up.name, up.getvalue())
    return field_widget(f, container=sb, high=high)


def _source_values(spec, sb, raw, messages) -> dict | None:
    """Every setting of the source, drawn from its spec (the ``more`` ones folded away), then its knobs.
    None when there is no input yet (no upload, the model still loading)."""
    values, ready = {}, True
    more = [f for f in spec.fields if f.more]
    for f in spec.fields:
        if f.more:
            if f is more[0]:
                with sb.expander("More: " + ", ".join(m.label.lower() for m in more), expanded=False):
                    values.update({m.key: _setting(m, st) for m in more})
            continue
        high = None
        if spec.name == "text" and f.key == "layer":  # the app loads the model in the background
            high = _model_layers(values, sb, messages)
            ready = high is not None
        values[f.key] = _setting(f, sb, high=high)
    if spec.knobs is not None:
        owner, params = spec.knobs(values)
        n, d = int(values.get("n", 256)), int(values.get("d", 64))
        messages += appstate.check_params(raw, owner, tuple(params), n, d)[1]
        values["knobs"] = {}
        if params:
            with sb.expander(f"{values.get('kind', spec.name)} knobs", expanded=False):
                values["knobs"] = {p.name: param_widget(p, appstate.param_key(owner, p.name), n, d) for p in params}
    note = spec.note(values) if spec.note is not None else ""
    if note:
        sb.caption(note)
    if not ready or any(f.kind == "file" and values[f.key] is None for f in spec.fields):
        return None
    return values


def _source(fields, sb, raw, messages) -> InputSpec | None:
    source = field_widget(fields["source"], container=sb)
    spec = inputs.get_source(source)
    messages += appstate.check_query(raw, {f.key: f for f in spec.fields if f.kind != "file"})[1]
    values = _source_values(spec, sb, raw, messages)
    return None if values is None else InputSpec(spec.name, **values)


def _compute_settings(fields, sb, messages) -> tuple[bool, str, str, int, str]:
    causal = bool(field_widget(fields["causal"], container=sb))
    cols = sb.columns(2)
    choice = field_widget(fields["device"], container=cols[0])
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda and choice in ("cuda", "auto") else "cpu"
    if choice == "cuda" and not cuda:
        messages.append("CUDA is not available on this machine: computing on the CPU.")
    dtype = field_widget(fields["dtype"], container=cols[1], options=list(compute.device_dtypes(device)))
    seed = int(field_widget(fields["seed"], container=sb))
    img = field_widget(fields["img"], container=sb)
    sb.caption("Every setting is in the address bar: copy it to share exactly this view.")
    return causal, device, dtype, seed, img


def build_sidebar() -> AppContext:
    """The shared sidebar. Returns the context every page reads (also kept in session state)."""
    fields = appstate.sidebar_fields()
    raw = st.query_params.to_dict()
    messages = appstate.check_query(raw, fields)[1]
    sb = st.sidebar
    spec = _source(fields, sb, raw, messages)
    sb.divider()
    causal, device, dtype, seed, img = _compute_settings(fields, sb, messages)
    ctx = AppContext(spec=spec, inp=None, device=device, dtype=dtype, causal=causal, seed=seed,
                     present=bool(st.session_state.get("present", False)), img=img, messages=messages,
                     plugin_errors=xviz.plugin_errors())
    if spec is None:
        source = inputs.get_source(st.session_state.get("source", "text"))
        ctx.error = ("Upload a file in the sidebar (or pick another input)." if any(f.kind == "file" for f in source.fields)
                     else "Loading the model: the page fills in when it is ready (a few seconds, once after the server "
                     "started)." if source.name == "text" else "No input: pick another source in the sidebar.")
    else:
        try:
            with st.spinner("Preparing the input…"):
                ctx.inp = compute.load_input(spec, seed, device, dtype)
        except XvizError as exc:
            ctx.error = f"Input: {exc}"
    if ctx.inp is not None:
        inp = ctx.inp
        sb.download_button("⬇ input Q, K, V (NPZ)", key="dl_input", on_click="ignore",
                           data=lambda: npz_bytes({"q": inp.q, "k": inp.k, "v": inp.v, "provenance": inp.provenance}),
                           file_name="xviz_input.npz", mime="application/octet-stream")
    st.session_state[CONTEXT_KEY] = ctx
    return ctx


CONTEXT_KEY = "_xviz_context"


def open_text(text: str, model: str, layer: int) -> None:
    """Switch the sidebar to a text through the model (from a callback, before the sidebar's widgets run):
    the sidebar owns these keys; other pages ask it."""
    st.session_state.update({"source": "text", "text": text, "model": model, "layer": int(layer)})


def context() -> AppContext:
    """The sidebar's context, inside the router (a page opened alone on a fresh server is re-run
    through app.py first)."""
    from .router import ensure_router

    ensure_router()
    return st.session_state[CONTEXT_KEY]
