"""The linked attention view: a Streamlit Components v2 component (inline JS and CSS, in the page's own
DOM, no iframe). What it draws comes from ``xviz.figures.linked.linked_view_data``; hover and head
switches stay in the browser, a click (a pin) writes the query, key and head back to the page's
URL-bound widgets through the component state."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import streamlit as st

HERE = Path(__file__).resolve().parent
_component = st.components.v2.component(
    "xviz_linked_view", js=(HERE / "linked_view.js").read_text(), css=(HERE / "linked_view.css").read_text())


def pinned(key: str) -> dict | None:
    """The last pin of the component under ``key``: {"query", "key", "head"} or None."""
    state = st.session_state.get(key)
    pin = state.get("pin") if isinstance(state, dict) or hasattr(state, "get") else getattr(state, "pin", None)
    return pin if isinstance(pin, dict) else None


def apply_pin(key: str, targets: tuple[str, str, str]) -> None:
    """Callback (before the script reruns): the pinned query, key and head into their widgets."""
    pin = pinned(key)
    if pin is None:
        return
    for widget, field in zip(targets, ("query", "key", "head")):
        if widget and isinstance(pin.get(field), int):
            st.session_state[widget] = int(pin[field])


def linked_view(data: dict[str, Any], *, key: str = "linked", targets=("query", "qkey", "head")) -> None:
    """Mount the view with ``data`` (a ``linked_view_data`` payload); a pin sets the widgets ``targets``
    (query, key, head) — already drawn in this run, so they take the value on the rerun the pin starts."""
    _component(key=key, data=data, on_pin_change=functools.partial(apply_pin, key, tuple(targets)))
