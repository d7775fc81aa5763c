"""xviz.figures: pooling, payload size, one colour scale, and every figure builds from plain arrays."""
import json

import numpy as np
import pytest
import torch

from xviz import figures
from xviz.analysis import metrics
from xviz.figures import pool2d


def z_of(trace) -> np.ndarray:
    return np.asarray(trace.z)


def spec_z(fig, i=0) -> dict:
    """The heatmap's z as the browser receives it (plotly's typed-array encoding)."""
    return json.loads(fig.to_json())["data"][i]["z"]


def test_mean_pool_exact_on_even_blocks():
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    p = pool2d(a, max_cells=2, how="mean")
    assert (p.fr, p.fc) == (2, 2)
    np.testing.assert_allclose(p.z, [[2.5, 4.5], [10.5, 12.5]])
    assert p.z.dtype == np.float32


def test_mean_pool_uneven_last_block_uses_real_cells():
    a = np.arange(5, dtype=np.float64)[None].repeat(5, 0)  # a[i, j] = j
    p = pool2d(a, max_cells=2, how="mean")  # factor 3: blocks [0, 3) and [3, 5)
    assert p.z.shape == (2, 2)
    np.testing.assert_allclose(p.z[0], [1.0, 3.5])
    assert list(p.col_starts) == [0, 3]


def test_max_pool_keeps_every_nonzero():
    rng = np.random.default_rng(0)
    n = 3001
    mask = np.zeros((n, n), dtype=bool)
    pts = rng.integers(0, n, size=(20, 2))
    mask[pts[:, 0], pts[:, 1]] = True
    p = pool2d(mask, max_cells=1024, how="max")
    assert max(p.z.shape) <= 1024 and p.z.dtype == np.uint8
    for r, c in pts:
        assert p.z[r // p.fr, c // p.fc] == 1
    assert int(p.z.sum()) <= 20


def test_mean_pool_preserves_total_mass():
    a = torch.softmax(torch.randn(2000, 2000), -1)
    p = pool2d(a, max_cells=512, how="mean")
    assert p.z.shape == (500, 500)
    # mean of block means equals the mean (even blocks): float32 sums of 2000² numbers, 1e-5 relative
    assert float(p.z.mean()) == pytest.approx(float(a.mean()), rel=1e-5)


def test_heatmap_payload_bounded_at_large_n():
    n = 4096
    a = torch.rand(n, n)
    fig = figures.heatmap(a, [f"t{i}" for i in range(n)])
    z = spec_z(fig)
    assert z["dtype"] == "f4"
    shape = tuple(int(s) for s in str(z["shape"]).split(","))
    assert max(shape) <= 1024
    assert figures.payload_bytes(fig) < 8 * 2**20


def test_compare_heatmaps_scales_and_small_payload():
    n = 2000
    ex = torch.softmax(torch.randn(n, n), -1)
    ap = torch.softmax(torch.randn(n, n), -1)
    fig = figures.compare_heatmaps(ex, ap, None)
    assert len(fig.data) == 3
    # weights share one sequential scale from 0; the difference has its own, diverging and symmetric
    assert [t.coloraxis for t in fig.data] == ["coloraxis", "coloraxis", "coloraxis2"]
    w, dscale = fig.layout.coloraxis, fig.layout.coloraxis2
    assert w.cmin == 0 and dscale.cmin == -dscale.cmax
    assert max(float(z_of(t).max()) for t in fig.data[:2]) <= w.cmax + 1e-6  # every weight drawn is covered
    assert float(np.abs(z_of(fig.data[2])).max()) <= dscale.cmax + 1e-6
    signed = figures.compare_heatmaps(ex, ap - 2 * ap.mean(), None)  # implicit weights with a sign
    # signed: exact keeps its own sequential scale (not washed out by the signed range), the approximation a
    # diverging scale of other colours than the difference's
    assert [t.coloraxis for t in signed.data] == ["coloraxis", "coloraxis3", "coloraxis2"]
    e, a, d = signed.layout.coloraxis, signed.layout.coloraxis3, signed.layout.coloraxis2
    assert e.cmin == 0 and e.cmax == pytest.approx(float(z_of(signed.data[0]).max()), rel=1e-6)
    assert a.cmin == -a.cmax and d.cmin == -d.cmax
    assert len({str(e.colorscale), str(a.colorscale), str(d.colorscale)}) == 3
    assert all(max(z_of(t).shape) <= figures.SIDE_BY_SIDE_CELLS for t in fig.data)
    # the third panel is the difference of the (mean-pooled) first two
    np.testing.assert_allclose(z_of(fig.data[2]), z_of(fig.data[1]) - z_of(fig.data[0]), atol=1e-6)
    assert figures.payload_bytes(fig) < 6 * 2**20


def test_zoom_window_is_full_resolution():
    n = 3000
    a = torch.rand(n, n)
    fig = figures.heatmap(a, None, window=(1000, 1300, 2000, 2300))
    z = z_of(fig.data[0])
    assert z.shape == (300, 300)
    np.testing.assert_allclose(z, a[1000:1300, 2000:2300].numpy(), rtol=1e-6)
    assert fig.data[0].y[0].startswith("1000") and fig.data[0].x[0].startswith("2000")


def test_labels_are_unique_and_name_tokens():
    toks = ["the", "cat", "the", "mat"]
    labels = figures.labels(toks, np.arange(4), 1, 4)
    assert len(set(labels)) == 4 and labels[2] == "2 the"
    pooled = figures.labels(toks, np.array([0, 2]), 2, 4)
    assert pooled == ["0–1 the…", "2–3 the…"]


def test_mask_figure_panels_per_head_only_when_heads_differ():
    n = 64
    same = torch.eye(n, dtype=torch.bool).expand(4, n, n)
    assert len(figures.mask_figure(same).data) == 1
    differ = torch.stack([torch.eye(n, dtype=torch.bool), torch.ones(n, n, dtype=torch.bool)])
    fig = figures.mask_figure(differ)
    assert len(fig.data) == 2
    assert spec_z(fig)["dtype"] == "u1"


def test_artifact_figures_by_name_and_shape():
    n = 40
    arts = {
        "mask": torch.rand(1, 2, n, n) > 0.5,
        "buckets": torch.randint(0, 4, (1, 2, 3, n)),
        "keys_per_row": torch.randint(1, 9, (1, 1, n)),
        "projection": torch.randn(8, n),
        "features": (torch.rand(1, 2, n, 6), torch.rand(1, 2, n, 6)),
        "singular_values": torch.linspace(1, 0.01, n),
        "centroids": {"queries": torch.randn(1, 2, 5, 8)},
    }
    for name, value in arts.items():
        figs = figures.artifact_figures(name, value, [str(i) for i in range(n)], head=1)
        assert figs, name
        for f in figs:
            f.to_json()  # serialisable
    strip = figures.artifact_figures("buckets", arts["buckets"], None, head=1)[0]
    assert z_of(strip.data[0]).shape == (3, n)  # the rounds of head 1
    np.testing.assert_array_equal(z_of(strip.data[0]), arts["buckets"][0, 1].numpy())
    assert len(figures.artifact_figures("features", arts["features"], None)) == 2


def test_query_lines_two_traces():
    fig = figures.query_lines(torch.rand(10), torch.rand(10), list("abcdefghij"), query=3)
    assert [t.name for t in fig.data] == ["exact", "approx"] and len(fig.data[0].x) == 10


def test_error_cost_scatter_customdata_and_skips_missing():
    rows = [dict(name="a", display_name="A", family="kernel", flops=1e6, rel_out=0.1),
            dict(name="b", display_name="B", family="low rank", flops=2e6, rel_out=float("nan")),
            dict(name="c", display_name="C", family="kernel", flops=3e6, rel_out=0.3)]
    fig = figures.error_cost_scatter(rows)
    names = [n for t in fig.data for n in t.customdata]
    assert sorted(names) == ["a", "c"]
    assert fig.layout.xaxis.type == "log"


def test_reachability_and_mass_figures():
    n = 32
    i = torch.arange(n)
    band = (i[:, None] - i[None, :]).abs() <= 2
    r = metrics.reachability(band, layers=20)
    maps, line = figures.reachability_figures(r, None, max_panels=5)
    assert len(maps.data) == 5 and len(line.data[0].y) == len(r.fraction)
    fig = figures.mass_inside_figure(torch.rand(1, 3, n))
    assert z_of(fig.data[0]).shape == (3, n)


def test_chart_config_and_html():
    cfg = figures.chart_config("svg", "x")
    assert cfg["toImageButtonOptions"] == {"format": "svg", "scale": 3, "filename": "x"}
    html = figures.to_html(figures.heatmap(torch.rand(5, 5))).decode()
    # standalone: plotly.js inlined, no script fetched from the network
    assert "<html" in html and "Plotly.newPlot" in html and '<script src="http' not in html
    assert len(html) > 1_000_000


def test_compare_heatmaps_quantile_cap():
    a = torch.full((100, 100), 0.01)
    a[0, 0] = 1.0  # one outlier
    full = figures.compare_heatmaps(a, a, None)
    capped = figures.compare_heatmaps(a, a, None, cap=0.99)
    assert full.layout.coloraxis.cmax == pytest.approx(1.0)
    assert capped.layout.coloraxis.cmax == pytest.approx(0.01)
    assert z_of(capped.data[0]).max() == pytest.approx(1.0)  # the data is untouched: hover shows it


def test_linked_view_payload_pools_every_head_and_names_its_blocks():
    from xviz.figures.linked import clamp_view, linked_view_data, unpack_f16
    g = torch.Generator().manual_seed(0)
    exact = torch.softmax(torch.randn(1, 3, 600, 600, generator=g, dtype=torch.float64), -1)
    approx = torch.softmax(torch.randn(1, 3, 600, 600, generator=g, dtype=torch.float64), -1)
    d = linked_view_data(exact, approx, [f"t{i}" for i in range(600)], window=(100, 600, 50, 600))
    assert (d["n_queries"], d["n_keys"], d["r0"], d["c0"], d["heads"]) == (500, 550, 100, 50, 3)
    assert (d["fr"], d["fc"]) == (2, 3) and (d["rows"], d["cols"]) == (250, 184)  # ≤ 256 a side
    assert d["tokens"][0] == "t100" and d["key_tokens"][0] == "t50" and not d["cross"]
    # cell (i, j) of head h is the mean of queries 100 + 2i.., keys 50 + 3j..; the last key block is
    # shorter (550 = 183·3 + 1). float16 keeps 11 significant bits: relative 2⁻¹¹ plus its subnormal step.
    for h in range(3):
        e = unpack_f16(d["maps"][h]["exact"], (250, 184))
        a = unpack_f16(d["maps"][h]["approx"], (250, 184))
        df = unpack_f16(d["maps"][h]["diff"], (250, 184))
        ref_e = exact[0, h, 100 + 2 * 7:100 + 2 * 8, 50 + 3 * 183:].mean().item()
        np.testing.assert_allclose(e[7, 183], ref_e, rtol=2 ** -11, atol=6e-8)
        ref_d = (approx[0, h, 100:102, 50:53] - exact[0, h, 100:102, 50:53]).mean().item()
        np.testing.assert_allclose(df[0, 0], ref_d, rtol=2 ** -11, atol=6e-8)
        assert a.shape == e.shape and d["maps"][h]["top"] >= float(np.abs(e).max()) * (1 - 2 ** -11)
    assert clamp_view(d, 5, 9999, 7) == {"query": 100, "key": 599, "head": 2}  # the pin kept inside the window


def test_linked_view_payload_for_cross_attention_ships_the_keys_labels():
    from xviz.figures.linked import linked_view_data
    d = linked_view_data(np.full((4, 6), 1 / 6), np.full((4, 6), 1 / 6), ["a", "b", "c", "d"],
                         key_tokens=list("uvwxyz"))
    assert d["cross"] and d["key_tokens"] == list("uvwxyz") and (d["n_queries"], d["n_keys"]) == (4, 6)
    with pytest.raises(ValueError, match="differ in shape"):
        linked_view_data(np.zeros((4, 6)), np.zeros((4, 5)))


def test_error_cost_scatter_keeps_outliers_from_owning_the_axes():
    rows = [dict(name=f"v{i}", family="kernel", flops=1e8 * (1 + i / 10), rel_out=0.5 + i / 20) for i in range(12)]
    rows.append(dict(name="wild", family="low rank", flops=1.2e8, rel_out=300.0))
    fig = figures.error_cost_scatter(rows, reference=1e9)
    lo, hi = fig.layout.yaxis.range  # log10 units
    assert hi < np.log10(300.0) and lo < np.log10(0.5)  # the axis keeps the bulk; the outlier sits on its edge
    wild = next(t for t in fig.data if t.name == "low rank")  # its only point: beyond the axis
    assert wild.marker.symbol[0] == "triangle-up" and np.isclose(np.log10(wild.y[0]), hi)
    assert "300" in next(a.text for a in fig.layout.annotations if a.text.startswith("wild"))
    labels = {a.text for a in fig.layout.annotations}
    assert {f"v{i}" for i in range(12)} <= labels  # every point is named
    assert {"exact attention's cost", "beyond the axis (value in brackets)"} <= {t.name for t in fig.data}


def test_linked_view_gives_signed_weights_their_own_scales():
    """As compare_heatmaps: with signed approximate weights the exact map keeps its own range (etop) and the
    approximation is scaled by its own |max| (atop), never the difference's range."""
    from xviz.figures.linked import linked_view_data

    exact = torch.softmax(torch.randn(1, 1, 40, 40, generator=torch.Generator().manual_seed(0)), -1)
    approx = 5 * (exact - 2 * exact.mean())  # signed, and a range far larger than exact's
    d = linked_view_data(exact, approx)
    m = d["maps"][0]
    assert d["signed"]
    assert m["etop"] == pytest.approx(float(exact.max()), rel=1e-6)
    assert m["atop"] == pytest.approx(float(approx.abs().max()), rel=1e-6)
    assert m["etop"] < m["atop"] and m["dtop"] != m["atop"]
