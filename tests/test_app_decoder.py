"""The app with the bundled decoder: SmolLM2 from the sidebar's model picker, the Decoding page's generation
mode (behind its button), and the Real model page's 30 × 9 grid and per-head plan."""
import json

import pytest

pytest.importorskip("streamlit")

from xviz.figures.linked import unpack_f16  # noqa: E402

from .apptest import chart_specs, linked_payloads, run_page, texts  # noqa: E402

TEXT = "The cat sat on the mat."


def test_model_picker_switches_to_smollm2(smollm2):
    at = run_page("explorer")
    at.selectbox(key="model").set_value("smollm2-135m").run()
    assert not at.exception and at.session_state["model"] == "smollm2-135m"
    assert "SmolLM2" in texts(at, "caption") and not at.error


def test_generation_mode_runs_behind_its_button(smollm2):
    at = run_page("decoding", {"dec_mode": "generate", "gen_prompt": "The capital of France is Paris. The capital "
                               "of Germany is", "gen_policies": "window", "gen_budget": "6", "gen_tokens": "3"})
    assert not at.error and not at.get("plotly_chart")  # nothing heavy before the click
    at.button(key="gen_run").click().run()
    assert not at.exception and not at.error, texts(at, "error")
    page = " ".join(m.value for m in at.markdown)
    assert "Full cache" in page and "Sliding window" in page and "Berlin" in page
    titles = [spec["layout"]["title"]["text"] for spec in chart_specs(at)]
    assert any("KL" in t or "full cache" in t for t in titles) and any("keys read" in t for t in titles)
    kept = next(spec for spec in chart_specs(at) if "keys read" in spec["layout"]["title"]["text"])
    assert len(kept["data"][0]["y"]) == 30 * 3  # every layer and key/value head


def test_real_model_page_with_smollm2_and_its_plan(smollm2):
    at = run_page("real_model", {"model": "smollm2-135m", "text": TEXT, "rm_variant": "sliding_window"})
    assert not at.exception and not at.error, texts(at, "error")
    assert "30 layers × 9 heads" in texts(at, "caption")
    thumbs = next(spec for spec in chart_specs(at) if "every layer and head" in spec["layout"]["title"]["text"])
    assert len(thumbs["data"][1]["x"]) == 270  # one clickable marker per layer and head of the mosaic
    at.button(key="plan_run").click().run()
    assert not at.exception and not at.error, texts(at, "error")
    plan = next(spec for spec in chart_specs(at) if "Per-head plan" in spec["layout"]["title"]["text"])
    markers = plan["data"][1]
    assert len(markers["customdata"]) == 270 if isinstance(markers["customdata"], list) else \
        json.dumps(markers["customdata"]["shape"]) in ('"270, 2"', '"270,2"')


def test_explorer_shows_the_sink_of_smollm2(smollm2):
    at = run_page("explorer", {"model": "smollm2-135m", "layer": "5", "text": TEXT, "causal": "true"})
    assert not at.exception and not at.error, texts(at, "error")
    assert "SmolLM2" in texts(at, "caption") and "layer 5 of 30" in texts(at, "caption")
    # the linked view carries the model's exact attention of every head: the sink is token 0's column
    (view,) = linked_payloads(at)
    sink = [unpack_f16(m["exact"], (view["rows"], view["cols"]))[2:, 0].mean() for m in view["maps"]]
    assert len(sink) == 9 and max(sink) > 0.5, sink  # later queries give most of their weight to token 0
