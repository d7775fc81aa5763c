"""The "Check a variant" page under AppTest: it runs the battery on a built-in variant and on plugins,
shows a verdict per check, and names a failure."""
import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import xviz  # noqa: E402

from .conftest import plain  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


@pytest.fixture
def plugins():
    """The sample plugin and the broken fixtures, registered only for these tests."""
    sys.path.insert(0, str(ROOT / "examples"))
    from tests.plugins import fresh

    fresh("sink_window")
    fresh("tests.plugins.broken_variants")
    yield
    for name in ("sink_window", "broken_leaky_causal", "broken_length_dependent", "broken_unnormalised",
                 "broken_nondeterministic", "broken_quadratic"):
        xviz.unregister_variant(name)
    sys.path.remove(str(ROOT / "examples"))


def run_checks(params: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in {"source": "synthetic", "n": "32", "d": "8", "heads": "1", **params}.items():
        at.query_params[k] = v
    at.switch_page("pages/check.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.info, "before the button, the page says what to do"
    at.button(key="chk_run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def statuses(at: AppTest) -> dict:
    df = at.dataframe[0].value
    return dict(zip(df["check"], df["status"]))


def test_builtin_variant_passes_quick_battery():
    at = run_checks({"chk_variant": "sliding_window", "chk_quick": "true"})
    st = statuses(at)
    assert st["causality (Jacobian)"] == "PASS" and "FAIL" not in st.values()
    assert at.success and not at.error


def test_plugins_are_offered_and_a_broken_one_is_named(plugins):
    at = run_checks({"chk_variant": "broken_unnormalised", "chk_quick": "true"})
    assert statuses(at)["rows are distributions"] == "FAIL"
    assert "rows are distributions" in plain(at.error[0].value)
    at = run_checks({"chk_variant": "sink_window"})  # the full battery: sweeps and complexity drawn
    assert "FAIL" not in statuses(at).values()
    assert len(at.get("plotly_chart")) >= 3
