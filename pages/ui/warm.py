"""The model's background load (this module imports nothing heavy): the sidebar starts it when a page
needs the model and draws the page meanwhile, polling ``model_ready``; the page fills in once it is ready.
(Started earlier, beside the first run's imports, it only competed with them for the interpreter.)"""
from __future__ import annotations

import threading

_LOADING: dict[str, threading.Thread] = {}  # model -> the thread loading it (one per model per process)


def _load(model: str) -> None:
    from xviz import inputs
    from xviz.core.errors import XvizError

    try:
        inputs.model_info(model or None)
    except XvizError:  # the page's own call says why
        pass


def start(model: str) -> threading.Thread:
    """Load ``model`` ("" : the bundled one) in the background, once per process."""
    thread = _LOADING.get(model)
    if thread is None:
        thread = threading.Thread(target=_load, args=(model,), name="xviz-model-load", daemon=True)
        _LOADING[model] = thread
        thread.start()
    return thread


def model_ready(model: str) -> bool:
    """Whether the model is loaded (or its load finished without one: the page's own call says why);
    if no load has started, one starts."""
    from xviz.inputs import model as model_lib

    return model_lib.is_loaded(model or None) or not start(model).is_alive()
