"""Running the app under Streamlit's AppTest: a page opened by its route name, as a link to it would."""
import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from pages.ui.routes import ROUTES, route

from .conftest import plain

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _warm_model() -> None:
    """AppTest cannot wait for the app's background model load (its fragments do not poll), so the
    bundled model is loaded before the first page: these tests see the app on a warm server. The browser
    suite sees the cold start itself."""
    from xviz import inputs

    inputs.model_info()


_warm_model()
TIMEOUT = 60  # importing torch, loading the model, running variants on a busy 2-core machine


def run_page(name: str, params: dict | None = None, *, timeout: int = TIMEOUT) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    if not route(name).default:
        at.switch_page(route(name).file)  # the first run opens this page, as a link to it would
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> str:
    """Every message of one kind (warning, error, info, caption), as the reader sees it."""
    return " ".join(plain(e.value) for e in getattr(at, kind))


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def heatmap_traces(at: AppTest):
    """(chart index, trace) for every heatmap trace in every plotly chart on the page."""
    return [(i, tr) for i, spec in enumerate(chart_specs(at)) for tr in spec["data"] if tr.get("type") == "heatmap"]


def linked_payloads(at: AppTest) -> list[dict]:
    """The data each linked attention view (a Components v2 element) was given."""
    return [json.loads(el.proto.json) for el in at.get("bidi_component") if el.proto.json]


def z_shape(tr) -> tuple:
    z = tr["z"]
    if isinstance(z, dict):  # plotly's typed-array encoding: dtype, bdata, shape
        assert z["dtype"] in ("f4", "u1", "i1", "u2", "i2"), f"sent as {z['dtype']}, want float32 or smaller"
        return tuple(int(s) for s in str(z["shape"]).split(","))
    return (len(z), len(z[0]) if z and isinstance(z[0], list) else 1)


__all__ = ["ROUTES", "run_page", "texts", "chart_specs", "heatmap_traces", "linked_payloads", "z_shape", "plain"]
