"""Messages, figures and downloads. Every text that may carry a user's value (a link setting, a file
name, an error about either) goes through ``say``: markdown is escaped, so a URL or a file name can put
no link, image or formatting into the page, and long values are cut."""
from __future__ import annotations

import contextlib
import functools
import io
import re
import threading
import traceback
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import streamlit as st

from xviz import figures
from xviz.core.errors import XvizError

MAX_MESSAGE = 600  # characters of one message; echoed values are cut shorter by the library
_MARKUP = re.compile(r"([\\`*_{}\[\]<>#!|:~$])")
# GitHub-flavoured markdown turns bare URLs, www. names and e-mail addresses into links whatever the
# escapes: a word joiner (U+2060, invisible) after the scheme, "www" or "@" breaks the pattern.
_AUTOLINK = re.compile(r"(?i)(https?|ftp|file|mailto|www|@)(?=[:.\w])")


def escape(text: Any, limit: int = MAX_MESSAGE) -> str:
    """``text`` as literal markdown: the marks that make links, images, emphasis, code, directives such as
    :red[…] or :material/…:, HTML and LaTeX are backslash-escaped (CommonMark then renders them as
    themselves), newlines become spaces (no list or heading can start), at most ``limit`` characters."""
    s = " ".join(str(text).split("\n"))
    if len(s) > limit:
        s = s[:limit] + "…"
    return _MARKUP.sub(r"\\\1", _AUTOLINK.sub("\\1\u2060", s))


def say(kind: str, text: Any, icon: str | None = None) -> None:
    """st.error / warning / info / success / caption with the text escaped."""
    fn = getattr(st, kind)
    if kind == "caption":
        fn(escape(text))
    else:
        fn(escape(text), icon=icon)


def link_messages(messages) -> None:
    for m in messages:
        notice(m)


_box = threading.local()


def start_run() -> None:
    """A new script run: no message place yet (messages found before the page's title wait for it)."""
    _box.box, _box.pending = None, []


def notice_box() -> None:
    """Open the place under the page's title where link messages go, even those found later by the page's
    own widgets (``notice``), and show the ones found before it."""
    _box.box = st.container()
    for message in getattr(_box, "pending", []):
        notice(message)
    _box.pending = []


def notice(message: str) -> None:
    box = getattr(_box, "box", None)
    if box is None:
        _box.pending = getattr(_box, "pending", []) + [message]
    else:
        box.warning(escape(message), icon="🔗")


def bug(what: str, exc: BaseException) -> None:
    """An exception that is not a user's mistake: named as a bug, its traceback one click away."""
    say("error", f"{what}: internal error ({type(exc).__name__}: {exc}). This is a bug in xviz or a plugin; "
                 "the rest of the page works.")
    with st.expander("Traceback", expanded=False):
        st.code("".join(traceback.format_exception(exc))[-8000:], language=None)


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Library errors become a message in place of the figure; the rest of the page keeps working."""
    try:
        yield
    except XvizError as exc:
        say("error", f"{what}: {exc}")
    except Exception as exc:  # noqa: BLE001  (st.stop/rerun are not Exceptions: they pass through)
        bug(what, exc)


def section(what: str) -> Callable:
    """A page section whose own widgets rerun it alone (``st.fragment``), with ``guard``'s messages inside:
    a fragment's rerun runs outside the page's guards."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with guard(what):
                return fn(*args, **kwargs)
        return st.fragment(run)
    return wrap


def show_figure(fig, name: str, ctx, *, key: str, on_select: Any = "ignore", selection_mode: Any = ("points",)) -> Any:
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


def download_npz(label: str, arrays: Callable[[], Mapping[str, Any]], name: str, key: str, ctx) -> None:
    if not ctx.present:
        st.download_button(label, data=lambda: npz_bytes(arrays()), file_name=f"{name}.npz",
                           mime="application/octet-stream", key=key, on_click="ignore")


def download_csv(label: str, df, name: str, key: str, ctx) -> None:
    if not ctx.present:
        st.download_button(label, data=lambda: df.to_csv(index=False).encode(), file_name=f"{name}.csv",
                           mime="text/csv", key=key, on_click="ignore")


def page_header(title: str, ctx) -> None:
    st.title(title)
    notice_box()
    link_messages(ctx.messages)
    for err in ctx.plugin_errors:
        say("error", f"Plugin not loaded: {err}")
    if ctx.inp is not None:
        b, h, n, d = ctx.shape
        nk = ctx.inp.k.shape[-2]
        keys = f" (keys: N_k = {nk})" if ctx.inp.cross else ""
        say("caption", f"Input: {ctx.inp.provenance} — N = {n}{keys}, d = {d}, {h} heads; "
                       f"{'causal' if ctx.causal else 'bidirectional'}; {ctx.device} {ctx.dtype}; seed {ctx.seed}")
        for note in ctx.inp.notices:
            say("info", note)
        if ctx.inp.causal and not ctx.causal:
            st.info("This input comes from a causal model; tick 'causal' in the sidebar to match it.")


def require_input(ctx) -> bool:
    if ctx.inp is None:
        if ctx.error and ctx.error.startswith(("Upload", "Loading the model")):
            say("info", ctx.error)  # waiting for a file is not an error
        else:
            say("error", ctx.error or "No input.")
        return False
    return True


@contextlib.contextmanager
def controls(label: str, ctx) -> Iterator[None]:
    """A block of page controls; hidden in presentation mode (app.py's style: the widgets still run)."""
    with st.container(key="xviz_controls_" + re.sub(r"\W+", "_", label)), st.expander(label, expanded=not ctx.present):
        yield
