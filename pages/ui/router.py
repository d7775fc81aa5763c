"""The router: pages run inside ``app.py``'s ``st.navigation``, links between pages go through the URL.

A fresh server's first request for a deep link (say /compare?…) runs the page file alone, through
Streamlit's handling of a folder named ``pages/``. ``ensure_router`` notices (the router marks the
thread while it runs a page), runs ``app.py`` — whose ``st.navigation`` call switches Streamlit to the
routed mode and runs this page inside it — and stops the outer run. Public API only.
"""
from __future__ import annotations

import contextlib
import runpy
import threading
from pathlib import Path
from typing import Any, Iterator

import streamlit as st

from .routes import ROUTES, route

APP = Path(__file__).resolve().parents[2] / "app.py"
_state = threading.local()


@contextlib.contextmanager
def routing() -> Iterator[None]:
    """Mark the script thread while app.py runs the chosen page."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def in_router() -> bool:
    return getattr(_state, "depth", 0) > 0


def ensure_router() -> None:
    if not in_router():
        runpy.run_path(str(APP), run_name="__main__")
        st.stop()


def pages() -> list:
    return [st.Page(r.file, title=r.label, icon=r.icon, url_path=r.name, default=r.default) for r in ROUTES]


def go(name: str, **settings: Any) -> None:
    """Open page ``name`` with ``settings`` in its URL (that page's own keys, e.g. variant=...). The
    sidebar's settings, and any key the current page shares with the target (a budget), are bound to
    the URL already and carry over by themselves: a link, not a write into another page's widgets."""
    st.switch_page(route(name).file, query_params={k: _text(v) for k, v in settings.items()})


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
