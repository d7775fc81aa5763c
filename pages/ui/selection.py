"""Callbacks for clicks on charts and buttons, as module functions (bound with functools.partial).

A callback defined in a page script keeps that run's globals alive (its matrices, its figures): Streamlit
(1.67) keeps the metadata of every chart widget a session has drawn, callbacks included, and a chart's
widget id changes with its figure, so each rerun left one more run's globals behind (≈ 11 MB a rerun
at N = 512 with 4 heads). Module functions hold only their small bound arguments.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from .sidebar import open_text

OPEN_CELL = "_rm_open"  # a cell to open in the Explorer on the next run: {"head": ..., "variant": ...}


def clicked_point(key: str) -> dict[str, Any] | None:
    """The first selected point of the chart under ``key`` (its selection event), or None."""
    ev = st.session_state.get(key)
    pts = getattr(getattr(ev, "selection", None), "points", None) or (
        ev.get("selection", {}).get("points") if isinstance(ev, dict) else None)
    return pts[0] if pts else None


def select_cell(key: str, layer_key: str, head_key: str) -> None:
    """A click on a layer × head chart (customdata (layer, head)): that layer and head in this page's widgets."""
    pt = clicked_point(key)
    cd = pt.get("customdata") if pt else None
    if isinstance(cd, (list, tuple)) and len(cd) == 2:
        st.session_state[layer_key], st.session_state[head_key] = int(cd[0]), int(cd[1])


def open_cell(text: str, model: str, layer: int, head: int, variant: str | None) -> None:
    """Open (on the next run) this text, layer and head in the Explorer: the sidebar switches to the text and
    layer now, before its widgets run; the page then opens the Explorer through the URL."""
    open_text(text, model, layer)
    st.session_state[OPEN_CELL] = {"head": int(head), **({"variant": variant} if variant else {})}


def open_selected(text: str, model: str, variant: str | None, key: str) -> None:
    """A click on a layer × head chart (customdata (layer, head)): open that cell."""
    pt = clicked_point(key)
    cd = pt.get("customdata") if pt else None
    if isinstance(cd, (list, tuple)) and len(cd) == 2:
        open_cell(text, model, int(cd[0]), int(cd[1]), variant)
