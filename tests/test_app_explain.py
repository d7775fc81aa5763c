"""The explanation pages (LSH & clustering, Spectra, Sweeps, Real model, Cost & scaling) under Streamlit's
AppTest: defaults and other settings run without an exception or an error message and draw their charts; a
variant without the artifact a view needs gets a sentence instead; the sweep's Stop button stops it; a cell of the
real model opens in the Explorer."""
import pytest

pytest.importorskip("streamlit")

from .apptest import chart_specs, run_page, texts  # noqa: E402
from .test_app import OTHER  # noqa: E402

SMALL = {"source": "synthetic", "n": "96", "d": "16", "heads": "2", "seed": "3"}


def test_lsh_other_settings_applied_and_missing_views_explained():
    at = run_page("lsh", OTHER["lsh"])
    assert at.selectbox(key="lsh_variant").value == "routing" and at.selectbox(key="proj").value == "tsne"
    infos = texts(at, "info")
    # Routing clusters but does not hash: the two hashing views say so instead of drawing nothing
    assert "does not hash" in infos and "no rounds and buckets" in infos
    assert any("recall" in c.value for c in at.caption)


def test_lsh_reformer_views():
    at = run_page("lsh", {**SMALL, "lsh_variant": "reformer", "reformer.buckets": "4",
                                   "reformer.rounds": "3", "reformer.chunk": "16", "lsh_pairs": "500"})
    specs = chart_specs(at)
    titles = " | ".join(str(s["layout"].get("title", {}).get("text", "")) for s in specs)
    assert "Collision probability" in titles and "Recall of the true top-8" in titles and "sorted by bucket" in titles
    strip = next(s for s in specs if "bucket of every token" in str(s["layout"].get("title", {}).get("text", "")))
    assert len(strip["data"][0]["y"]) == 3  # one row per hashing round
    # theory curves for 1, 3 and 6 rounds, and the measured points with their error bars
    coll = next(s for s in specs if "Collision probability" in str(s["layout"]["title"]["text"]))
    names = [t.get("name", "") for t in coll["data"]]
    assert sum(n.startswith("theory") for n in names) == 3 and any(n.startswith("measured") for n in names)


def test_sweep_stop_shows_only_while_running_and_resume_completes():
    at = run_page("sweeps", {**SMALL, "sw_points": "3", "sw_seeds": "1"})
    assert "points" in " ".join(c.value for c in at.caption)
    keys = lambda: {b.key for b in at.button}  # noqa: E731
    assert "sw_stop" not in keys() and at.button(key="sw_run").label == "↻ Run again"  # finished: no Stop
    # a sweep stopped part-way (a Stop click between two points) offers Resume, which completes it
    job = at.session_state["_sweep_job"]
    for item in job.items[1:]:
        job.results.pop(item)
    job.stopped = True
    at.run()
    assert not at.exception
    assert f"Stopped after 1 of {len(job.items)}" in texts(at, "info"), texts(at, "info")
    at.button(key="sw_run").click()
    at.run()
    assert not at.exception and not any("Stopped" in i.value for i in at.info)
    assert job.done and "sw_stop" not in keys() and at.get("plotly_chart")


def test_real_model_cell_opens_in_explorer():
    at = run_page("real_model", {"rm_layer": "2", "rm_head": "5"})
    at.button(key="rm_open").click()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == "Explorer"
    assert at.number_input(key="head").value == 5
    # the sidebar is told to read this text at this layer (AppTest reruns a switched page without the router's
    # sidebar, so the state is checked here; the browser suite sees the sidebar itself)
    assert at.session_state["layer"] == 2 and at.session_state["source"] == "text"


def test_cost_measures_on_request_and_shares_the_result():
    at = run_page("cost", OTHER["cost"])
    assert not at.get("plotly_chart") and "Press Measure" in texts(at, "info")  # nothing ran on opening
    at.button(key="cost_run").click().run()
    assert not at.exception and not at.error, texts(at, "error")
    assert len(at.get("plotly_chart")) >= 3
    again = run_page("cost", OTHER["cost"])  # another session, same settings: the measurement is shown
    assert len(again.get("plotly_chart")) >= 3


def test_cost_lra_table():
    at = run_page("cost", OTHER["cost"])
    at.button(key="cost_lra").click()
    at.run()
    assert not at.exception and not at.error
    df = at.dataframe[-1].value
    assert "speed-up 4K" in df.columns and "sliding_window" in set(df["variant"])
    assert set(df["variant"]) >= {"naive exact", "fused exact"}
