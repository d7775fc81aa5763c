"""The explanation pages (LSH & clustering, Spectra, Sweeps, Real model, Cost & scaling) under Streamlit's
AppTest: defaults and other settings run without an exception or an error message and draw their charts; a
variant without the artifact a view needs gets a sentence instead; the sweep's Stop button stops it; a cell of the
real model opens in the Explorer."""
import json
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 60  # the model loads and the pages run variants; a busy 2-core machine needs headroom
TITLES = {"pages/lsh.py": "LSH & clustering", "pages/spectra.py": "Spectra", "pages/sweeps.py": "Sweeps",
          "pages/real_model.py": "Real model", "pages/cost.py": "Cost & scaling"}
SMALL = {"source": "synthetic", "n": "96", "d": "16", "heads": "2", "seed": "3"}
OTHER = {
    "pages/lsh.py": {**SMALL, "lsh_variant": "routing", "proj": "tsne", "head": "1", "topk": "4", "causal": "true"},
    "pages/spectra.py": {**SMALL, "ey_norm": "spectral", "ey_head": "-1", "ey_seeds": "1", "ey_proj": "pool",
                         "energy_k": "3", "energy_measure": "singular", "dtype": "bfloat16"},
    "pages/sweeps.py": {**SMALL, "sw_axis": "n", "sw_metric": "kl", "sw_seeds": "2", "sw_points": "3",
                        "sw_nmax": "128"},
    "pages/real_model.py": {**SMALL, "rm_variant": "sliding_window", "rm_metric": "topk_recall", "rm_budget": "5",
                            "rm_layer": "2", "rm_head": "3", "rm_text": "Short text for the model."},
    "pages/cost.py": {**SMALL, "cost_variants": "sliding_window", "cost_nmax": "512", "cost_heads": "1",
                      "cost_d": "16", "cost_repeats": "1", "cost_baseline": "fused exact", "causal": "true"},
}


def run_page(page: str, params: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in params.items():
        at.query_params[k] = v
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def heatmap_sides(at: AppTest) -> list[int]:
    sides = []
    for el in at.get("plotly_chart"):
        for tr in json.loads(el.proto.spec)["data"]:
            if tr.get("type") == "heatmap":
                z = tr["z"]
                shape = [int(s) for s in str(z["shape"]).split(",")] if isinstance(z, dict) else \
                    [len(z), len(z[0]) if z and isinstance(z[0], list) else 1]
                sides.append(max(shape))
    return sides


@pytest.mark.parametrize("settings", ["defaults", "other"])
@pytest.mark.parametrize("page", list(TITLES))
def test_page_runs(page, settings):
    at = run_page(page, {} if settings == "defaults" else OTHER[page])
    assert at.title[0].value == TITLES[page]
    assert not at.error, [e.value for e in at.error]
    assert at.get("plotly_chart"), "no chart rendered"
    assert all(s <= 1024 for s in heatmap_sides(at))


def test_lsh_other_settings_applied_and_missing_views_explained():
    at = run_page("pages/lsh.py", OTHER["pages/lsh.py"])
    assert at.selectbox(key="lsh_variant").value == "routing" and at.selectbox(key="proj").value == "tsne"
    infos = " ".join(i.value for i in at.info)
    # Routing clusters but does not hash: the two hashing views say so instead of drawing nothing
    assert "does not hash" in infos and "no rounds and buckets" in infos
    assert any("recall" in c.value for c in at.caption)


def test_lsh_reformer_views():
    at = run_page("pages/lsh.py", {**SMALL, "lsh_variant": "reformer", "reformer.buckets": "4",
                                   "reformer.rounds": "3", "reformer.chunk": "16", "lsh_pairs": "500"})
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    titles = " | ".join(str(s["layout"].get("title", {}).get("text", "")) for s in specs)
    assert "Collision probability" in titles and "Recall of the true top-8" in titles and "sorted by bucket" in titles
    strip = next(s for s in specs if "bucket of every token" in str(s["layout"].get("title", {}).get("text", "")))
    assert len(strip["data"][0]["y"]) == 3  # one row per hashing round
    # theory curves for 1, 3 and 6 rounds, and the measured points with their error bars
    coll = next(s for s in specs if "Collision probability" in str(s["layout"]["title"]["text"]))
    names = [t.get("name", "") for t in coll["data"]]
    assert sum(n.startswith("theory") for n in names) == 3 and any(n.startswith("measured") for n in names)


def test_sweep_stop_button_stops():
    at = run_page("pages/sweeps.py", {**SMALL, "sw_points": "3", "sw_seeds": "1"})
    assert "points" in " ".join(c.value for c in at.caption)
    # a new setting starts a new sweep; Stop in the same run stops it before its first point
    at.number_input(key="sw_points").set_value(5)
    at.button(key="sw_stop").click()
    at.run()
    assert not at.exception
    assert any("Stopped after 0 of" in i.value for i in at.info), [i.value for i in at.info]
    # Resume continues and completes it
    at.button(key="sw_run").click()
    at.run()
    assert not at.exception and not any("Stopped" in i.value for i in at.info)
    assert at.get("plotly_chart")


def test_real_model_cell_opens_in_explorer():
    at = run_page("pages/real_model.py", {"rm_layer": "2", "rm_head": "5"})
    at.button(key="rm_open").click()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == "Explorer"
    assert at.number_input(key="head").value == 5
    # the sidebar is told to read this text at this layer (AppTest reruns a switched page without the router's
    # sidebar, so the state is checked here; the browser suite sees the sidebar itself)
    assert at.session_state["layer"] == 2 and at.session_state["source"] == "text"


def test_cost_lra_table():
    at = run_page("pages/cost.py", OTHER["pages/cost.py"])
    at.button(key="cost_lra").click()
    at.run()
    assert not at.exception and not at.error
    df = at.dataframe[-1].value
    assert "speed-up 4K" in df.columns and "sliding_window" in set(df["variant"])
    assert set(df["variant"]) >= {"naive exact", "fused exact"}
