"""What every page shares: the sidebar (input, shape, device, dtype, seed), cached computation,
error display, figure display with downloads, and the presentation mode.

Every widget is bound to a URL query parameter (``bind="query-params"``), so the address bar is
a link to exactly what is on screen. Computation is cached on explicit keys — the input's
settings (its provenance), device, dtype, variant and parameters — never on hashes of tensors.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import streamlit as st
import torch

import xviz
from xviz import appstate, figures
from xviz.core.errors import XvizError
from xviz.analysis.budget import budget_params
from xviz.core.registry import Param, Shape
from xviz.inputs.sequence import SequenceInput

BIND = "query-params"
CTX_KEY = "_xviz_context"
EXACT_GUARD_FLOPS = 4e11  # above this the exact reference waits for a click (tens of seconds on a CPU)
MATRIX_METRICS_MAX_N = 8192  # matrix-based metrics and heatmaps up to this N (memory: B·H·N² floats)


# ------------------------------------------------------------------------------------- inputs API
def inputs_module():
    """xviz.inputs, or None while it is not installed (the app then offers a Gaussian fallback)."""
    try:
        from xviz import inputs
    except ImportError:
        return None
    return inputs


def _fallback_gaussian(n: int, d: int, heads: int, seed: int) -> SequenceInput:
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(3, 1, heads, n, d, generator=g).unbind(0)
    return SequenceInput(q=q, k=k, v=v, tokens=[str(i) for i in range(n)], positions=torch.arange(n),
                         provenance=f"iid Gaussian N={n} d={d} heads={heads} seed={seed} (xviz.inputs missing)")


@st.cache_resource(show_spinner=False)
def model_info(model: str) -> dict:
    """The model is a cached resource: loaded once per process (xviz.inputs also caches it)."""
    return dict(inputs_module().model_info(model or None))


@st.cache_resource(max_entries=8, show_spinner=False)
def _load_input_cached(key: tuple, _load: Callable[[], SequenceInput]) -> SequenceInput:
    return _load()


@st.cache_resource(max_entries=8, show_spinner=False)
def _moved_cached(key: tuple, device: str, dtype: str, _inp: SequenceInput) -> SequenceInput:
    return _inp.to(device=device, dtype=getattr(torch, dtype))


@st.cache_resource(max_entries=48, show_spinner=False)
def cached(key: tuple, _fn: Callable[[], Any]) -> Any:
    """A page's expensive result, cached on an explicit key whose first item names the computation."""
    return _fn()


@st.cache_resource(max_entries=4, show_spinner=False)
def model_layers(text: str, model: str):
    """Every layer's Q/K/V of the model on ``text`` (Spectra and Real model share it)."""
    from xviz.analysis import spectra

    return spectra.model_layers(text, model or None)


@st.cache_resource(show_spinner=False)
def device_dtypes(device: str) -> tuple[str, ...]:
    """The dtypes this device can run attention in (a tiny softmax and matmul probe each)."""
    ok = []
    for name in appstate.DTYPES:
        dt = getattr(torch, name)
        try:
            x = torch.ones(2, 4, 4, dtype=dt, device=device)
            torch.softmax(torch.matmul(x, x.transpose(-1, -2)), -1).sum().item()
            ok.append(name)
        except Exception:
            pass
    return tuple(ok) or ("float32",)


# ------------------------------------------------------------------------------------- context
@dataclass
class AppContext:
    inp: SequenceInput | None  # on the chosen device and dtype
    input_key: tuple  # provenance of the input: what the caches are keyed on
    device: str
    dtype: str
    causal: bool
    seed: int
    present: bool
    img: str
    error: str | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def font_size(self) -> int:
        return 20 if self.present else 13

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.inp.q.shape)

    @property
    def n(self) -> int:
        return self.inp.q.shape[-2]

    @property
    def tokens(self) -> list[str]:
        return list(self.inp.tokens)

    def key(self, *more: Any) -> tuple:
        return (self.input_key, self.device, self.dtype, self.causal, self.seed) + more


def ensure_router() -> None:
    """A page must run inside app.py's router. On a fresh server, Streamlit's first run of a page
    URL (say /compare?…) goes through its legacy pages/ directory mode, which runs the page file
    alone: switch that mode off (as st.navigation does), run the router here (it runs this page
    through st.navigation) and stop the outer run."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover
        return
    if PagesManager.uses_pages_directory and CTX_KEY not in st.session_state:
        import runpy
        from pathlib import Path

        PagesManager.uses_pages_directory = False
        runpy.run_path(str(Path(__file__).resolve().parent.parent / "app.py"), run_name="__main__")
        st.stop()


def context() -> AppContext:
    ensure_router()
    return st.session_state[CTX_KEY]


# ------------------------------------------------------------------------------------- widgets
def param_widget(p: Param, key: str, n: int, d: int, *, default: Any = None, container=None) -> Any:
    """A widget for a typed Param (range and help from the spec), bound to the URL under ``key``."""
    c = container or st
    spec = appstate.widget_spec(p, n, d)
    value = spec["default"] if default is None else default
    label, help_ = p.name.replace("_", " "), p.help
    if p.kind == "bool":
        return c.checkbox(label, value=bool(value), key=key, help=help_, bind=BIND)
    if p.kind == "choice":
        options = spec["options"]
        return c.selectbox(label, options, index=options.index(value) if value in options else 0, key=key,
                           help=help_, bind=BIND)
    if p.kind == "int":
        lo, hi = spec["min"], spec["max"]
        value = int(value)
        if lo is not None:
            value = max(value, lo)
        if hi is not None:
            value = min(value, hi)
        if lo is not None and hi is not None and hi - lo <= 256 and hi > lo:
            return c.slider(label, min_value=lo, max_value=hi, value=value, step=1, key=key, help=help_, bind=BIND)
        return c.number_input(label, min_value=lo, max_value=hi, value=value, step=1, key=key, help=help_,
                              bind=BIND)
    lo, hi = spec["min"], spec["max"]
    value = float(value)
    if lo is not None and hi is not None and hi > lo and not p.log:
        return c.slider(label, min_value=lo, max_value=hi, value=value, key=key, help=help_, bind=BIND)
    return c.number_input(label, min_value=lo, max_value=hi, value=value, key=key, help=help_, format="%g",
                          bind=BIND)


def param_widgets(spec, n: int, d: int, defaults: Mapping[str, Any] | None = None) -> dict:
    """One widget per parameter of ``spec``, four to a row, each bound to ``<variant>.<param>``."""
    params: dict = {}
    if spec.params:
        cols = st.columns(min(4, len(spec.params)))
        for i, p in enumerate(spec.params):
            params[p.name] = param_widget(p, appstate.param_key(spec.name, p.name), n, d,
                                          default=(defaults or {}).get(p.name), container=cols[i % len(cols)])
    return params


def error_text(exc: Exception) -> str:
    """A table cell for a variant that failed: the library's message, or a bug named as one
    (a broken plugin must not take the page down)."""
    if isinstance(exc, XvizError):
        return str(exc)
    return f"internal error in this variant: {type(exc).__name__}: {exc}"


def field_widget(f: appstate.Field, *, container=None, options: Sequence[str] | None = None,
                 high: int | None = None, default: Any = None) -> Any:
    c = container or st
    value = f.default if default is None else default
    if f.kind == "choice":
        opts = list(options if options is not None else f.choices)
        return c.selectbox(f.label, opts, index=opts.index(value) if value in opts else 0, key=f.key, help=f.help,
                           bind=BIND)
    if f.kind == "bool":
        return c.toggle(f.label, value=bool(value), key=f.key, help=f.help, bind=BIND)
    if f.kind == "str":
        return c.text_input(f.label, value=str(value), key=f.key, help=f.help, bind=BIND)
    hi = int(f.high if high is None else high)
    return c.number_input(f.label, min_value=int(f.low), max_value=hi, value=min(int(value), hi), step=1, key=f.key,
                          help=f.help, bind=BIND)


def link_messages(messages: Sequence[str]) -> None:
    for m in messages:
        st.warning(m, icon="🔗")


# ------------------------------------------------------------------------------------- sidebar
def build_sidebar() -> AppContext:
    """The shared sidebar. Returns the context every page reads (also stored in session state)."""
    inputs = inputs_module()
    has = (lambda *names: inputs is not None and all(hasattr(inputs, x) for x in names))  # noqa: E731
    available = {"text": has("from_text", "model_info"),
                 "synthetic": True,  # an iid Gaussian fallback exists without xviz.inputs
                 "sample": has("list_samples", "load_sample"),
                 "upload": has("load_upload")}
    limits = dict(appstate.FALLBACK_LIMITS)
    kinds: tuple[str, ...] = ("gaussian",)
    samples: list[Any] = []
    if inputs is not None:
        limits.update(getattr(inputs, "LIMITS", {}) or {})
    if has("synthetic", "SYNTHETIC_KINDS", "synthetic_params"):
        kinds = tuple(inputs.SYNTHETIC_KINDS)
    if available["sample"]:
        try:
            samples = list(inputs.list_samples())
        except XvizError:
            samples = []
    sample_names = [s.name for s in samples]
    fields = appstate.sidebar_fields(limits, synthetic_kinds=kinds, samples=sample_names)
    raw = st.query_params.to_dict()
    _, messages = appstate.check_query(raw, fields)

    sb = st.sidebar
    sources = [x for x in appstate.SOURCES if available[x]]
    if not all(available.values()):
        sb.warning("xviz.inputs is missing or incomplete: some input sources are unavailable.")
    source = field_widget(fields["source"], container=sb, options=sources,
                          default="text" if available["text"] else "synthetic")
    layer = 0
    model = ""
    load: Callable[[int], SequenceInput] | None
    key: tuple
    seeded = True  # whether the input depends on the seed
    if source == "text":
        text = sb.text_area("Text", value=appstate.DEFAULT_TEXT, key="text", bind=BIND, height=110,
                            help="goes through the model: one layer's Q, K, V per head and its own attention")
        with sb.expander("Model", expanded=False):
            model = field_widget(fields["model"])
        try:
            info = model_info(model)
        except XvizError as exc:
            info = {"layers": 1, "heads": 1}
            messages.append(f"Model: {exc}")
        layer = field_widget(fields["layer"], container=sb, high=max(0, int(info.get("layers", 1)) - 1))
        key = ("text", hashlib.sha1(text.encode()).hexdigest(), model, layer)
        seeded = False
        load = lambda seed: inputs.from_text(text, model=model or None, layer=layer)  # noqa: E731
    elif source == "synthetic":
        kind = field_widget(fields["kind"], container=sb, options=kinds)
        n = field_widget(fields["n"], container=sb)
        d = field_widget(fields["d"], container=sb)
        heads = field_widget(fields["heads"], container=sb)
        knobs = {}
        if has("synthetic_params"):
            try:
                knob_params = tuple(inputs.synthetic_params(kind))
            except XvizError:
                knob_params = ()
            _, knob_msgs = appstate.check_params(raw, appstate.knob_owner(kind), knob_params, n, d)
            messages += knob_msgs
            if knob_params:
                with sb.expander(f"{kind} knobs", expanded=False):
                    for p in knob_params:
                        knobs[p.name] = param_widget(p, appstate.param_key(appstate.knob_owner(kind), p.name), n, d)
        key = ("synthetic", kind, n, d, heads, tuple(sorted(knobs.items())))
        if has("synthetic"):
            load = lambda seed: inputs.synthetic(kind, n=n, d=d, heads=heads, seed=seed, **knobs)  # noqa: E731
        else:
            load = lambda seed: _fallback_gaussian(n, d, heads, seed)  # noqa: E731
    elif source == "sample":
        if not sample_names:
            messages.append("No sample files were found in sample_inputs/.")
            name = ""
        else:
            name = field_widget(fields["sample"], container=sb, options=sample_names, default=sample_names[0])
            desc = {s.name: s.description for s in samples}.get(name, "")
            if desc:
                sb.caption(desc)
        n_max = field_widget(fields["n"], container=sb, default=1024)
        layer = field_widget(fields["layer"], container=sb, high=127)
        key = ("sample", name, n_max, layer)
        load = (lambda seed: inputs.load_sample(name, n_max=n_max, seed=seed, layer=layer)) if name else None
    else:
        up = sb.file_uploader("Q/K/V (.npz .npy .safetensors), text (.txt) or series (.csv)",
                              type=["npz", "npy", "safetensors", "txt", "csv"], key="upload")
        layer = field_widget(fields["layer"], container=sb, high=127)
        sb.caption("An upload stays in this browser session: a link cannot carry it.")
        if up is None:
            key = ("upload", None)
            load = None  # type: ignore[assignment]
        else:
            data = up.getvalue()
            key = ("upload", up.name, up.file_id, len(data), layer)
            load = lambda seed: inputs.load_upload(up.name, data, seed=seed, layer=layer)  # noqa: E731

    sb.divider()
    causal = field_widget(fields["causal"], container=sb)
    cols = sb.columns(2)
    device_choice = field_widget(fields["device"], container=cols[0])
    cuda = torch.cuda.is_available()
    device = "cuda" if (device_choice == "cuda" or (device_choice == "auto" and cuda)) and cuda else "cpu"
    if device_choice == "cuda" and not cuda:
        messages.append("CUDA is not available on this machine: computing on the CPU.")
    dtype = field_widget(fields["dtype"], container=cols[1], options=list(device_dtypes(device)))
    seed = int(field_widget(fields["seed"], container=sb))
    img = field_widget(fields["img"], container=sb)
    sb.caption("Every setting is in the address bar: copy it to share exactly this view.")

    present = bool(st.session_state.get("present", False))
    ctx = AppContext(inp=None, input_key=key + ((seed,) if seeded else ()), device=device, dtype=dtype, causal=bool(causal),
                     seed=int(seed), present=present, img=img, messages=messages)
    if load is None:
        ctx.error = ("Upload a file in the sidebar (or pick another input)." if source == "upload"
                     else "No input: pick another source in the sidebar.")
    else:
        try:
            with st.spinner("Preparing the input…"):
                inp = _load_input_cached(ctx.input_key, lambda: load(seed))
                ctx.inp = _moved_cached(ctx.input_key, device, dtype, inp)
        except XvizError as exc:
            ctx.error = f"Input: {exc}"
    if ctx.inp is not None:
        inp_now = ctx.inp
        sb.download_button("⬇ input Q, K, V (NPZ)", key="dl_input", on_click="ignore",
                           data=lambda: npz_bytes({"q": inp_now.q, "k": inp_now.k, "v": inp_now.v,
                                                   "tokens": np.array(inp_now.tokens, dtype=str),
                                                   "provenance": np.array(inp_now.provenance)}),
                           file_name="xviz_input.npz", mime="application/octet-stream")
    st.session_state[CTX_KEY] = ctx
    return ctx


# ------------------------------------------------------------------------------------- page helpers
def page_header(title: str, ctx: AppContext) -> None:
    st.title(title)
    link_messages(ctx.messages)
    if ctx.inp is not None:
        b, h, n, d = ctx.shape
        st.caption(f"Input: {ctx.inp.provenance} — N = {n}, d = {d}, {h} heads; "
                   f"{'causal' if ctx.causal else 'bidirectional'}; {ctx.device} {ctx.dtype}; seed {ctx.seed}")
        for note in ctx.inp.notices:
            st.info(note)
        if ctx.inp.causal and not ctx.causal:
            st.info("This input comes from a causal model; tick 'causal' in the sidebar to match it.")


def require_input(ctx: AppContext) -> bool:
    if ctx.inp is None:
        if ctx.error and ctx.error.startswith("Upload"):
            st.info(ctx.error)  # waiting for a file is not an error
        else:
            st.error(ctx.error or "No input.")
        return False
    return True


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Library errors become a message in place of the figure; the rest of the page keeps working.
    Anything else is a bug and is shown as one (with its traceback)."""
    try:
        yield
    except XvizError as exc:
        st.error(f"{what}: {exc}")
    except Exception as exc:  # noqa: BLE001
        st.exception(exc)


def controls(label: str = "Controls", ctx: AppContext | None = None):
    """A block of page controls; collapsed in presentation mode."""
    present = ctx.present if ctx is not None else False
    return st.expander(label, expanded=not present)


def show_figure(fig, name: str, ctx: AppContext, *, key: str, on_select: Any = "ignore",
                selection_mode: Any = ("points",)) -> Any:
    event = st.plotly_chart(fig, config=figures.chart_config(ctx.img, name), key=key, on_select=on_select,
                            selection_mode=selection_mode, width="stretch")
    if not ctx.present:
        st.download_button("⬇ HTML", data=lambda: figures.to_html(fig), file_name=f"{name}.html", mime="text/html",
                           key=f"{key}_html", on_click="ignore", help="standalone HTML (opens offline)")
    return event


def npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: figures.to_numpy(v) for k, v in arrays.items()})
    return buf.getvalue()


def download_npz(label: str, arrays: Callable[[], Mapping[str, Any]], name: str, key: str, ctx: AppContext) -> None:
    if not ctx.present:
        st.download_button(label, data=lambda: npz_bytes(arrays()), file_name=f"{name}.npz",
                           mime="application/octet-stream", key=key, on_click="ignore")


def download_csv(label: str, df, name: str, key: str, ctx: AppContext) -> None:
    if not ctx.present:
        st.download_button(label, data=lambda: df.to_csv(index=False).encode(), file_name=f"{name}.csv",
                           mime="text/csv", key=key, on_click="ignore")


# ------------------------------------------------------------------------------------- computation
@st.cache_resource(max_entries=24, show_spinner=False)
def _run_cached(key: tuple, name: str, params: tuple, _inp: SequenceInput, causal: bool, seed: int):
    t0 = time.perf_counter()
    r = xviz.run(name, _inp.q, _inp.k, _inp.v, causal=causal, seed=seed, **dict(params))
    if r.out.device.type == "cuda":
        torch.cuda.synchronize()
    return r, time.perf_counter() - t0


def run_variant(ctx: AppContext, name: str, params: Mapping[str, Any]):
    """(AttentionResult, seconds of the first run) for this variant on the context's input; cached."""
    items = tuple(sorted(params.items()))
    return _run_cached(ctx.key(), name, items, ctx.inp, ctx.causal, ctx.seed)


def exact_cost(ctx: AppContext) -> float:
    b, h, n, d = ctx.shape
    return xviz.get_variant("exact").cost_at(Shape(b, h, n, d, ctx.inp.v.shape[-1], ctx.causal)).flops


@st.cache_resource(max_entries=24, show_spinner=False)
def _metrics_cached(key: tuple, _exact, _approx, k: int):
    from xviz.analysis import metrics

    return metrics.compare(_exact, _approx, k=k)


def compare_metrics(ctx: AppContext, exact, approx, name: str, params: Mapping[str, Any], k: int):
    return _metrics_cached(ctx.key(name, tuple(sorted(params.items())), "metrics"), exact, approx, int(k))


def default_budget(n: int) -> int:
    """Keys per query the pages give every variant by default: a quarter of N, at most 64."""
    return max(2, min(64, (n + 3) // 4))


def variant_cost(ctx: AppContext, spec, params: Mapping[str, Any]) -> float:
    b, h, n, d = ctx.shape
    try:
        resolved = spec.resolve(dict(params), n=n, d=d, heads=h)
        return float(spec.cost(Shape(b, h, n, d, ctx.inp.v.shape[-1], ctx.causal), **resolved).flops)
    except Exception:  # noqa: BLE001  (the run itself reports a bad parameter)
        return 0.0


def budget_defaults(spec, ctx: AppContext, budget: int) -> dict:
    b, h, n, d = ctx.shape
    try:
        return budget_params(spec, n, d, h, keys_per_row=budget, causal=ctx.causal,
                                      dv=ctx.inp.v.shape[-1]).params
    except XvizError:
        return {p.name: p.fit_default(n, d) for p in spec.params}
