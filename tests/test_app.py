"""The app under Streamlit's AppTest: every page, with defaults and with other settings, must run
without an exception; figures are read back from their plotly specs (shape, pooling, dtype)."""
import json

import pytest

pytest.importorskip("streamlit")

from .apptest import ROUTES, heatmap_traces, linked_payloads, run_page, texts, z_shape  # noqa: E402

SMALL = {"source": "synthetic", "n": "96", "d": "16", "heads": "2", "seed": "3"}
# Other settings per page: a link with the page's own keys set (small synthetic inputs keep pages fast).
OTHER = {
    "explorer": {**SMALL, "causal": "true", "budget": "12", "variant": "sliding_window", "img": "svg",
                 "dtype": "bfloat16"},
    "patterns": {**SMALL, "causal": "true", "budget": "12", "pattern": "sliding_window", "dtype": "bfloat16"},
    "compare": {**SMALL, "causal": "true", "budget": "12", "metric": "kl", "xaxis": "seconds", "img": "svg"},
    "lsh": {**SMALL, "lsh_variant": "routing", "proj": "tsne", "head": "1", "topk": "4", "causal": "true"},
    "spectra": {**SMALL, "ey_norm": "spectral", "ey_head": "-1", "ey_seeds": "1", "ey_proj": "pool",
                "energy_k": "3", "energy_measure": "singular", "dtype": "bfloat16"},
    "sweeps": {**SMALL, "sw_axis": "n", "sw_metric": "kl", "sw_seeds": "2", "sw_points": "3", "sw_nmax": "128"},
    "decoding": {**SMALL, "dec_policies": "window", "dec_budget": "16", "dec_prefill": "40", "dec_head": "1",
                 "dec_step": "70"},
    "real_model": {**SMALL, "rm_variant": "sliding_window", "rm_metric": "topk_recall", "rm_budget": "5",
                   "rm_layer": "2", "rm_head": "3", "rm_text": "Short text for the model."},
    "cost": {**SMALL, "cost_variants": "sliding_window", "cost_nmax": "512", "cost_heads": "1", "cost_d": "16",
             "cost_repeats": "1", "cost_baseline": "fused exact", "causal": "true"},
    "check": {**SMALL, "chk_variant": "sliding_window", "chk_quick": "true"},
}
PRESENT = {"source": "synthetic", "n": "64", "d": "8", "heads": "2", "present": "true"}
CHARTLESS = {"check", "cost"}  # pages whose work (and charts) waits for a button


def test_every_route_has_settings_here():
    assert {r.name for r in ROUTES} == set(OTHER)


def check_figures(at, max_side: int = 1024) -> int:
    traces = heatmap_traces(at)
    for _, tr in traces:
        assert max(z_shape(tr)) <= max_side
    return len(traces)


@pytest.mark.parametrize("settings", ["defaults", "other", "present"])
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_page_runs(route, settings):
    params = {"defaults": {}, "other": OTHER[route.name], "present": PRESENT}[settings]
    if settings == "present" and route.name == "explorer":
        params = {**PRESENT, "variant": "exact"}  # another page's link with it would be told it is not read there
    at = run_page(route.name, params)
    assert at.title[0].value == route.title
    assert not at.error, texts(at, "error")
    assert not at.warning, texts(at, "warning")  # a link the app wrote itself is never refused
    if route.name not in CHARTLESS:
        assert at.get("plotly_chart") or linked_payloads(at), "no chart rendered"
    check_figures(at)
    if settings == "other" and route.name in ("patterns", "compare"):
        # the link's page settings were applied, not just the sidebar's
        assert at.number_input(key="budget").value == 12
    if route.name == "compare" and settings == "other":
        assert at.selectbox(key="metric").value == "kl" and at.selectbox(key="xaxis").value == "seconds"
    if route.name == "explorer":
        # the linked view got every head's maps, at full resolution at small N
        (view,) = linked_payloads(at)
        assert view["heads"] == len(view["maps"]) and set(view["maps"][0]) >= {"exact", "approx", "diff"}
        n = {"other": 96, "present": 64}.get(settings)
        if n is not None:
            assert (view["n_queries"], view["rows"], view["fr"], view["heads"]) == (n, n, 1, 2)


def test_explorer_pools_large_n():
    at = run_page("explorer", {"source": "synthetic", "n": "1500", "d": "8", "heads": "1",
                                        "variant": "sliding_window", "sliding_window.window": "40"})
    (view,) = linked_payloads(at)
    # mean-pooled to ≤ 256 a side (blocks of 6 queries × 6 keys), every panel alike
    assert (view["n_queries"], view["fr"], view["fc"], view["rows"], view["cols"]) == (1500, 6, 6, 250, 250)
    # the mask artifact (the open tab) is max-pooled to ≤ 512 a side (blocks of 3), the other tab not drawn
    (mask,) = [t for i, t in heatmap_traces(at) if max(z_shape(t)) > 1]
    assert z_shape(mask) == (500, 500)
    assert len(at.get("plotly_chart")) == 1


def test_explorer_draws_only_the_open_artifact_tab_and_names_a_bad_one():
    at = run_page("explorer", {**SMALL, "variant": "sliding_window", "artifact": "keys_per_row"})
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    assert [s["layout"]["title"]["text"].split(" ")[0] for s in specs] == ["keys_per_row"]
    at = run_page("explorer", {**SMALL, "variant": "sliding_window", "artifact": "buckets"})
    assert "artifact = 'buckets' is not one of: mask, keys_per_row" in texts(at, "warning"), texts(at, "warning")


def test_explorer_measures_the_shown_head_as_every_head_would():
    """The error panel measures the head box's head first; "every head" lists the same numbers for it."""
    params = {**SMALL, "heads": "3", "variant": "sliding_window", "budget": "12", "head": "2"}
    one = run_page("explorer", params)
    shown = {m.label: m.value for m in one.metric}
    assert "Head 2 of 3 (the head box)" in texts(one, "caption") and not one.dataframe
    every = run_page("explorer", {**params, "measure": "every head"})
    table = every.dataframe[0].value
    row = table[table["head"] == 2].iloc[0]
    compared = 0
    for label, value in shown.items():
        name = label.split(" (k=")[0]
        if name in table.columns and value != "—":
            # float32 sums over the same rows of one head: equal to the shown 3 significant digits
            assert f"{row[name]:.3g}" == value or f"{row[name]:.1%}" == value, (label, value, row[name])
            compared += 1
    assert compared >= 6


def test_explorer_zoom_full_resolution():
    at = run_page("explorer", {"source": "synthetic", "n": "1500", "d": "8", "heads": "1",
                                        "variant": "sliding_window", "zs": "200", "zr": "300", "zc": "250"})
    (view,) = linked_payloads(at)
    assert (view["n_queries"], view["n_keys"], view["r0"], view["c0"], view["fr"]) == (200, 200, 300, 250, 1)
    assert view["rows"] == view["cols"] == 200  # drawn cell for cell


def test_deep_link_reproduces_settings():
    params = {"source": "synthetic", "n": "80", "d": "16", "heads": "3", "seed": "11", "causal": "true",
              "variant": "sliding_window", "sliding_window.window": "5", "head": "2", "query": "17"}
    at = run_page("explorer", params)
    assert at.selectbox(key="variant").value == "sliding_window"
    assert at.slider(key="sliding_window.window").value == 5
    assert at.number_input(key="n").value == 80
    assert at.number_input(key="seed").value == 11
    assert at.toggle(key="causal").value is True
    assert at.number_input(key="head").value == 2
    assert "causal" in at.caption[0].value and "N = 80" in at.caption[0].value


@pytest.mark.parametrize("params, needle", [
    ({"variant": "no_such_variant"}, "unknown variant 'no_such_variant'"),
    ({"source": "synthetic", "n": "64", "variant": "sliding_window", "window": "abc"},
     "window = 'abc' is not a setting of this page; did you mean sliding_window.window?"),
    ({"source": "text", "layer": "99"}, "layer = 99 is outside its valid range [0, 5]. Using 0."),
    ({"source": "synthetic", "n": "64", "variant": "sliding_window", "sliding_window.window": "-3"}, "window"),
    ({"source": "synthetic", "n": "1000000000"}, "n = 1000000000"),
    ({"source": "synthetic", "n": "64", "seed": "abc", "causal": "maybe"}, "seed"),
])
def test_bad_url_settings_show_a_message(params, needle):
    at = run_page("explorer", params)
    warnings = texts(at, "warning")
    assert needle in warnings, warnings
    assert at.get("plotly_chart")  # the page still works, on the defaults


def test_library_error_shows_message_not_traceback():
    # Linformer-like variants cannot be causal; the engine raises, the page shows a message.
    import xviz

    noncausal = next((s.name for s in xviz.list_variants() if not s.causal), None)
    if noncausal is None:
        pytest.skip("every registered variant is causal")
    at = run_page("explorer", {"source": "synthetic", "n": "64", "d": "8", "heads": "1", "causal": "true",
                                        "variant": noncausal})
    assert "causal" in texts(at, "error"), texts(at, "error")


def test_compare_click_through_opens_explorer():
    at = run_page("compare", {"source": "synthetic", "n": "48", "d": "8", "heads": "1", "budget": "6"})
    at.selectbox(key="open_variant").set_value("sliding_window")
    at.button(key="open_button").click()
    at.run()
    assert not at.exception
    assert at.title[0].value == "Explorer"
    assert at.selectbox(key="variant").value == "sliding_window"
    # the input and the budget carry over, so the Explorer shows the parameters the table used
    assert "N = 48" in at.caption[0].value
    assert at.number_input(key="budget").value == 6


def _sample_names():
    try:
        from xviz import inputs

        return [s.name for s in inputs.list_samples()]
    except Exception:  # xviz.inputs not there yet: nothing to parametrise
        return []


@pytest.mark.parametrize("sample", _sample_names())
def test_sample_inputs(sample):
    at = run_page("explorer", {"source": "sample", "sample": sample, "n": "96", "variant": "sliding_window"})
    assert not at.error, texts(at, "error")
    assert "sample" in at.caption[0].value
    check_figures(at)


def test_budget_moves_the_parameters_but_a_link_wins_first():
    at = run_page("explorer", {"source": "synthetic", "n": "128", "d": "8", "heads": "1",
                                        "variant": "sliding_window", "sliding_window.window": "7"})
    assert at.slider(key="sliding_window.window").value == 7  # the link's value, not the budget's
    at.number_input(key="budget").set_value(41).run()
    assert at.slider(key="sliding_window.window").value == 20  # 2·20 + 1 = 41 keys per query
    at.slider(key="sliding_window.window").set_value(3).run()
    assert at.slider(key="sliding_window.window").value == 3  # a hand-set value stays
    assert "window=3" in at.caption[1].value


@pytest.mark.parametrize("params, kind, needle", [
    ({"model": "/nonexistent/model"}, "error", "/nonexistent/model"),
    ({"text": "   "}, "error", "empty"),
    ({"source": "upload"}, "info", "Upload a file"),
    ({"source": "sample", "sample": "no such sample"}, "warning", "no such sample"),
])
def test_bad_inputs_show_a_message(params, kind, needle):
    at = run_page("explorer", params)
    found = texts(at, kind)
    assert needle in found, found


@pytest.mark.parametrize("route_name, params, needle", [
    ("explorer", {"head": "99"}, "head = 99"),
    ("explorer", {"query": "-4"}, "query = -4"),
    ("explorer", {"topk": "abc"}, "topk = 'abc'"),
    ("explorer", {"present": "maybe"}, "present = 'maybe'"),
    ("patterns", {"layers": "1000"}, "layers = 1000"),
    ("compare", {"budget": "0"}, "budget = 0"),
    ("lsh", {"topk": "0"}, "topk = 0"),
    ("sweeps", {"sw_variants": "nope"}, "sw_variants = 'nope'"),
    ("cost", {"cost_variants": "nope"}, "cost_variants = 'nope'"),
    ("decoding", {"dec_budget": "0"}, "dec_budget = 0"),
    ("real_model", {"rm_head": "77"}, "rm_head = 77"),
    ("check", {"chk_quick": "perhaps"}, "chk_quick = 'perhaps'"),
])
def test_a_bad_page_setting_in_a_link_is_named(route_name, params, needle):
    at = run_page(route_name, {**SMALL, **params})
    assert needle in texts(at, "warning"), texts(at, "warning")


def test_a_session_keeps_only_the_matrices_of_the_input_it_shows():
    """Memory across reruns: after ten seeds the session holds the current input's matrices (exact and
    the variant), not ten inputs' worth (which it did, up to its 1.25 GiB budget, before)."""
    at = run_page("explorer", {**SMALL, "variant": "sliding_window"})
    for seed in range(10, 20):
        at.query_params["seed"] = str(seed)
        at.sidebar.number_input(key="seed").set_value(seed)
        at.run()
        assert not at.exception, [e.message for e in at.exception]
    kept = at.session_state["_matrices"]
    assert 1 <= len(kept) <= 2, list(kept)
    assert all(key[4] == 19 for key in kept), [key[4] for key in kept]  # ctx.key(): (input, device, dtype, causal, seed)


def test_reruns_leave_no_page_run_behind():
    """A page run's globals (its matrices and figures) go when the next run replaces them. A click callback
    defined in a page kept each run's globals alive through Streamlit's widget metadata, ≈ 11 MB a rerun
    at N = 512; the callbacks are module functions now (pages/ui/selection.py)."""
    import gc

    def alive(page: str) -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects()
                   if type(o) is dict and str(o.get("__file__") or "").endswith(page) and "__name__" in o)

    for page, params, seed_key in (("explorer.py", {}, "seed"), ("real_model.py", {}, "seed")):
        at = run_page(page.removesuffix(".py"), {**SMALL, **params})
        for seed in range(10, 16):
            at.sidebar.number_input(key=seed_key).set_value(seed)
            at.run()
            assert not at.exception, [e.message for e in at.exception]
        assert alive(page) <= 2, (page, alive(page))  # this run's, and at most one being replaced
        del at


def test_a_csv_upload_names_the_column_it_reads_and_its_nan():
    at = run_page("explorer", {"source": "upload"})
    at.file_uploader[0].set_value(("s.csv", b"time,a,b,c\n0,1,nan,0.5\n1,,2,0.7\n2,nan,3,0.9\n3,4,5,1.1\n", "text/csv"))
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert ("s.csv: the series is the last of 4 columns, column 4 ('c'); column 1 ('time') labels its tokens; "
            "column 2 ('a') and column 3 ('b') are not read (the 3 NaN or empty cells there included).") \
        in texts(at, "info"), texts(at, "info")
