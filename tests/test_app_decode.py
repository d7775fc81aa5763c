"""The Decoding page under AppTest: on the needle task the page says which policies still find the planted
key; a window shorter than the distance does not, full attention does; bad settings get a sentence."""
import pytest

pytest.importorskip("streamlit")

from .apptest import chart_specs, linked_payloads, run_page, texts  # noqa: E402

NEEDLE = {"source": "synthetic", "kind": "needle", "n": "256", "d": "32", "heads": "2", "dec_prefill": "128",
          "dec_policies": ["full", "window"], "dec_budget": "64"}


def test_needle_found_by_full_attention_not_by_a_short_window():
    at = run_page("decoding", NEEDLE)
    assert not at.error, texts(at, "error")
    info = texts(at, "info")
    # the needle sits at 26, the query at 255: 229 tokens back, beyond a 64-key window
    assert "- **Full cache**: :green[found in 2 of 2 heads]" in info, info  # one line a policy, coloured
    assert "- **Sliding window**: :red[found in 0 of 2 heads]" in info, info
    titles = " | ".join(str(s["layout"].get("title", {}).get("text", "")) for s in chart_specs(at))
    assert "step 255" in titles or at.slider(key="dec_step").value == 255


def test_a_policy_that_cannot_run_at_this_budget_is_named_not_fatal():
    at = run_page("decoding", {**NEEDLE, "dec_policies": ["quest", "window"], "dec_budget": "8"})
    assert "Quest" in texts(at, "warning") and "left out" in texts(at, "warning")
    assert at.get("plotly_chart"), "the other policy still draws"


def test_budget_sweep_runs_on_request():
    at = run_page("decoding", {**NEEDLE, "dec_policies": ["window"]})
    assert not any("budget" in str(s["layout"].get("xaxis", {}).get("title", {}).get("text", "")).lower()
                   for s in chart_specs(at)), "the sweep waits for its button"
    at.button(key="dec_sweep").click().run()
    assert not at.exception and not at.error, texts(at, "error")
    assert at.dataframe[-1].value["budget"].nunique() >= 3


def test_linked_view_shows_every_step_of_the_focused_policy():
    """The linked view's rows are the decoded steps: the policy's map reads at most the budget per row,
    full attention every earlier key; a pin on a row becomes the step (and the head)."""
    from xviz.figures.linked import unpack_f16

    at = run_page("decoding", {**NEEDLE, "dec_focus": "window", "dec_head": "1"})
    (view,) = linked_payloads(at)
    assert (view["r0"], view["n_queries"], view["n_keys"], view["heads"]) == (128, 128, 256, 2)
    assert view["names"][0] == "full cache" and view["names"][1].startswith("Sliding window")
    assert (view["query"], view["head"]) == (255, 1)
    shape = (view["rows"], view["cols"])
    full, policy = (unpack_f16(view["maps"][1][m], shape) for m in ("exact", "approx"))
    assert shape == (128, 256) and view["fr"] == view["fc"] == 1  # drawn cell for cell
    assert (policy > 0).sum(-1).max() <= 64  # a row reads at most the budget's keys
    assert (full[-1] > 0).sum() > 64  # full attention reads beyond it (float16 may flush tiny weights)
    assert ((policy > 0) & (full == 0)).sum() == 0  # never a key after the step
