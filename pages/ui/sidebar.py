"""The shared sidebar: where Q, K, V come from (an ``InputSpec``), the shape, causal, device, dtype, seed.
Every widget is bound to the URL; the raw URL is checked first, so a bad value in a link becomes a
sentence on the page instead of a silently dropped parameter."""
from __future__ import annotations

import threading

import streamlit as st
import torch

import xviz
from xviz import appstate, inputs
from xviz.core.errors import XvizError
from xviz.inputs import InputSpec

from . import compute
from .context import AppContext
from .display import npz_bytes
from .widgets import field_widget, param_widget

SIDEBAR_KEYS = ("source", "text", "model", "kv", "layer", "kind", "sample", "n", "d", "heads", "causal", "device",
                "dtype", "seed", "img", "present")
UPLOAD_TYPES = ["npz", "npy", "safetensors", "txt", "csv", "png"]


@st.cache_resource(show_spinner=False)
def model_info(model: str) -> dict:
    return dict(inputs.model_info(model or None))


def _fields():
    samples = list(inputs.list_samples())
    return appstate.sidebar_fields(synthetic_kinds=inputs.SYNTHETIC_KINDS, samples=[s.name for s in samples]), samples


_LOADING: dict[str, threading.Thread] = {}  # model -> the thread loading it (one per model per process)


def model_ready(model: str) -> bool:
    """Whether the model is loaded; if not, load it in the background (once), so the page is drawn first
    and fills in when the model is ready (the first visit after the server started)."""
    from xviz.inputs import model as model_lib

    if model_lib.is_loaded(model or None):
        return True
    thread = _LOADING.get(model)
    if thread is not None and not thread.is_alive():
        return True  # it finished without a model: the page's own call says why
    if thread is None:
        thread = threading.Thread(target=lambda: _quiet(model_info, model), name="xviz-model-load", daemon=True)
        _LOADING[model] = thread
        thread.start()
    return False


def _quiet(fn, *args) -> None:
    try:
        fn(*args)
    except XvizError:  # the page's own call says why
        pass


@st.fragment(run_every=0.5)
def _wait_for_model(model: str) -> None:
    if not model_ready(model):
        st.caption("Loading the model (the first visit after the server started)…")
    else:
        st.rerun(scope="app")


# The bundled models by their ``model`` value ("" is the default): the picker writes the model field, which
# stays the one setting in the URL (a local folder is typed there).
BUNDLED_MODELS = {"": "all-MiniLM-L6-v2 (encoder, 6 layers × 12 heads)",
                  "smollm2-135m": "SmolLM2-135M (decoder, 30 × 9 heads; 4-bit Q4_1 weights dequantized)"}
_PICK = "_model_pick"


def _pick_model() -> None:
    st.session_state["model"] = st.session_state[_PICK]


def _model_picker(sb) -> None:
    current = str(st.session_state.get("model", st.query_params.get("model", "")))
    options = list(BUNDLED_MODELS) + ([current] if current not in BUNDLED_MODELS else [])
    st.session_state[_PICK] = current  # follows the model field (a link, a typed folder)
    sb.selectbox("Model", options, key=_PICK, on_change=_pick_model,
                 format_func=lambda m: BUNDLED_MODELS.get(m, "a local folder (see Model folder)"),
                 help="the bundled models; SmolLM2's first use converts its weights once (about 20 s), then it "
                      "loads in seconds")


def _text_source(fields, sb, messages) -> InputSpec | None:
    text = sb.text_area("Text", value=appstate.DEFAULT_TEXT, key="text", bind="query-params", height=110,
                        help="goes through the model: one layer's Q, K, V per head and its own attention")
    _model_picker(sb)
    with sb.expander("Model, cross-attention", expanded=False):
        model = field_widget(fields["model"])
        kv = field_widget(fields["kv"])
    if not model_ready(model):
        field_widget(fields["layer"], container=sb, high=128)
        with sb:
            _wait_for_model(model)
        return None
    try:
        layers = int(model_info(model).get("layers", 1))
    except XvizError as exc:
        layers = 1
        messages.append(f"Model: {exc}")
    layer = field_widget(fields["layer"], container=sb, high=max(0, layers - 1))
    return InputSpec(source="text", text=text, model=model, layer=int(layer), kv_text=kv)


def _synthetic_source(fields, sb, raw, messages) -> InputSpec:
    kind = field_widget(fields["kind"], container=sb, options=inputs.SYNTHETIC_KINDS)
    n, d, heads = (int(field_widget(fields[x], container=sb)) for x in ("n", "d", "heads"))
    owner = appstate.knob_owner(kind)
    knob_params = tuple(inputs.synthetic_params(kind))
    messages += appstate.check_params(raw, owner, knob_params, n, d)[1]
    knobs = {}
    if knob_params:
        with sb.expander(f"{kind} knobs", expanded=False):
            knobs = {p.name: param_widget(p, appstate.param_key(owner, p.name), n, d) for p in knob_params}
    return InputSpec(source="synthetic", kind=kind, n=n, d=d, heads=heads, knobs=tuple(sorted(knobs.items())))


def _sample_source(fields, sb, samples) -> InputSpec | None:
    names = [s.name for s in samples]
    if not names:
        return None
    name = field_widget(fields["sample"], container=sb, options=names, default=names[0])
    desc = {s.name: s.description for s in samples}.get(name, "")
    if desc:
        sb.caption(desc)
    n_max = int(field_widget(fields["n"], container=sb, default=1024))
    layer = int(field_widget(fields["layer"], container=sb, high=127))
    return InputSpec(source="sample", sample=name, n_max=n_max, layer=layer)


def _upload_source(fields, sb) -> InputSpec | None:
    up = sb.file_uploader("Q/K/V (.npz .npy .safetensors), text (.txt), series (.csv) or an image (.png)",
                          type=UPLOAD_TYPES, key="upload")
    layer = int(field_widget(fields["layer"], container=sb, high=127))
    sb.caption("An upload stays in this browser session: a link cannot carry it.")
    if up is None:
        return None
    return InputSpec(source="upload", upload_name=up.name, upload_data=up.getvalue(), layer=layer)


def _source(fields, samples, sb, raw, messages) -> InputSpec | None:
    source = field_widget(fields["source"], container=sb, options=list(inputs.spec.SOURCES), default="text")
    if source == "text":
        return _text_source(fields, sb, messages)
    if source == "synthetic":
        return _synthetic_source(fields, sb, raw, messages)
    if source == "sample":
        spec = _sample_source(fields, sb, samples)
        if spec is None:
            messages.append("No sample files were found in sample_inputs/.")
        return spec
    return _upload_source(fields, sb)


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
    fields, samples = _fields()
    raw = st.query_params.to_dict()
    messages = appstate.check_query(raw, fields)[1]
    sb = st.sidebar
    spec = _source(fields, samples, sb, raw, messages)
    sb.divider()
    causal, device, dtype, seed, img = _compute_settings(fields, sb, messages)
    ctx = AppContext(spec=spec, inp=None, device=device, dtype=dtype, causal=causal, seed=seed,
                     present=bool(st.session_state.get("present", False)), img=img, messages=messages,
                     plugin_errors=xviz.plugin_errors())
    if spec is None:
        source = st.session_state.get("source", raw.get("source", "text"))
        ctx.error = {"upload": "Upload a file in the sidebar (or pick another input).",
                     "text": "Loading the model: the page fills in when it is ready (a few seconds, once after "
                             "the server started)."}.get(source, "No input: pick another source in the sidebar.")
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
