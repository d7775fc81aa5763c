"""xviz.metrics on small cases whose answers are known by hand."""
import math

import pytest
import torch

import xviz
from xviz.analysis import metrics
from xviz.analysis.metrics import EPS, compare, mass_inside, reachability

# float64 hand-computed cases are compared at 1e-12 (a few roundings of numbers near 1);
# float32 engine outputs at 1e-5 (float32 softmax and matmul rounding at N ≤ 64).
TIGHT = 1e-12
F32 = 1e-5


def test_identical_is_zero_error():
    a = torch.softmax(torch.randn(2, 3, 16, 16, dtype=torch.float64), -1)
    m = compare(a, a.clone(), v=torch.randn(2, 3, 16, 4, dtype=torch.float64), k=4)
    for name in ("rel_fro", "rel_out", "kl", "tv", "max_abs"):
        assert getattr(m, name) == pytest.approx(0.0, abs=TIGHT), name
    assert m.topk_recall == 1.0
    assert len(m.per_head["rel_fro"]) == 3


def test_known_two_by_two():
    a = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    b = torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=torch.float64)
    v = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    m = compare(a, b, v=v, k=1)
    assert m.rel_fro == pytest.approx(math.sqrt(0.5) / math.sqrt(1.5), abs=TIGHT)
    # outputs: a v = [1, 2], b v = [2, 2] -> |[-1, 0]| / |[1, 2]|
    assert m.rel_out == pytest.approx(1 / math.sqrt(5), abs=TIGHT)
    assert m.kl == pytest.approx(math.log(2) / 2, abs=TIGHT)  # row 0: log(1/0.5); row 1: 0
    assert m.tv == pytest.approx(0.25, abs=TIGHT)
    assert m.max_abs == pytest.approx(0.5, abs=TIGHT)
    assert m.topk_recall == 1.0  # ties in the approximation count in its favour


def test_kl_clamps_zero_approx_weights():
    a = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    m = compare(a, b, k=1)
    expected = 0.5 * math.log(0.5 / 1.0) + 0.5 * math.log(0.5 / EPS)
    assert m.kl == pytest.approx(expected, rel=1e-12)


def test_kl_ignores_zero_exact_weights():
    a = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.8, 0.0, 0.2]], dtype=torch.float64)
    assert compare(a, b, k=1).kl == pytest.approx(math.log(1 / 0.8), rel=1e-12)


@pytest.mark.parametrize("b", [[[0.8, -0.1, 0.3]],  # Nyström-like negative weight
                               [[1.5, 0.7, 0.2]]])  # an unnormalised mixer's row (sums to 2.4)
def test_kl_and_tv_are_undefined_for_matrices_that_are_not_distributions(b):
    a = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    m = compare(a, torch.tensor(b, dtype=torch.float64), k=1)
    assert math.isnan(m.kl) and math.isnan(m.tv)
    assert math.isfinite(m.corr) and math.isfinite(m.rel_fro)


def test_scaled_output_error_and_correlation_forgive_a_scale():
    """3·A is A up to a scale: the scaled output error is 0 and the weights correlate perfectly, while the
    plain output error is 2 (values known by hand: ‖3O − O‖ = 2‖O‖)."""
    a = torch.softmax(torch.randn(1, 2, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), -1)
    v = torch.randn(1, 2, 12, 3, dtype=torch.float64)
    m = compare(a, 3 * a, v=v)
    assert m.rel_out == pytest.approx(2.0, rel=TIGHT)
    assert m.rel_out_scaled == pytest.approx(0.0, abs=1e-7)  # sqrt of a cancellation at 1e-16 relative
    assert m.corr == pytest.approx(1.0, rel=TIGHT)
    assert math.isnan(m.kl)  # rows sum to 3


@pytest.mark.parametrize("name", ["retnet", "mamba2", "linformer", "nystrom", "deltanet", "performer"])
def test_no_variant_gets_a_negative_kl_or_a_total_variation_above_one(name):
    q, k, v = (torch.randn(1, 2, 64, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(s)) for s in range(3))
    causal = xviz.get_variant(name).causal_only
    m = compare(xviz.run("exact", q, k, v, causal=causal), xviz.run(name, q, k, v))
    assert math.isnan(m.kl) or m.kl >= 0
    assert math.isnan(m.tv) or m.tv <= 1
    assert -1 <= m.corr <= 1 and m.rel_out_scaled <= m.rel_out + 1e-12


def test_topk_recall_counts_missed_keys():
    a = torch.tensor([[0.4, 0.3, 0.2, 0.1]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.5, 0.3, 0.2]], dtype=torch.float64)  # drops the true top key
    assert compare(a, b, k=2).topk_recall == pytest.approx(0.5)  # true {0, 1}; approx top-2 {1, 2}
    assert compare(a, b, k=1).topk_recall == 0.0
    assert compare(a, b, k=4).topk_recall == pytest.approx(0.75)  # key 0 has zero approx weight


def test_topk_recall_causal_rows_count_only_attendable_keys():
    a = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    m = compare(a, a.clone(), k=3)
    assert m.topk_recall == 1.0  # row 0 has one key, row 1 two: both fully recalled


def test_per_head_matches_separate_heads():
    g = torch.Generator().manual_seed(1)
    a = torch.softmax(torch.randn(1, 3, 12, 12, generator=g, dtype=torch.float64), -1)
    b = torch.softmax(torch.randn(1, 3, 12, 12, generator=g, dtype=torch.float64), -1)
    m = compare(a, b, k=3)
    for h in range(3):
        mh = compare(a[:, h:h + 1], b[:, h:h + 1], k=3)
        for name in ("rel_fro", "kl", "tv", "max_abs", "topk_recall"):
            assert m.per_head[name][h] == pytest.approx(getattr(mh, name), rel=1e-12, abs=TIGHT), name
    assert m.kl == pytest.approx(sum(m.per_head["kl"]) / 3, rel=1e-12)


def test_engine_results_window_covering_everything_is_exact():
    q, k, v = torch.randn(3, 1, 2, 24, 8).unbind(0)
    ex = xviz.run("exact", q, k, v)
    sw = xviz.run("sliding_window", q, k, v, window=24)
    m = compare(ex, sw, k=5)
    assert m.rel_fro < F32 and m.rel_out < F32 and m.max_abs < F32 and m.tv < F32
    assert m.topk_recall == 1.0
    narrow = compare(ex, xviz.run("sliding_window", q, k, v, window=1), k=5)
    assert narrow.rel_fro > 0.1 and narrow.kl > 1.0 and narrow.topk_recall < 1.0


def test_output_only_mode():
    q, k, v = torch.randn(3, 1, 2, 24, 8).unbind(0)
    ex = xviz.run("exact", q, k, v)
    sw = xviz.run("sliding_window", q, k, v, window=2)
    m = compare(ex, sw, with_matrix=False)
    full = compare(ex, sw)
    assert m.rel_out == pytest.approx(full.rel_out, rel=1e-12)
    assert math.isnan(m.rel_fro) and math.isnan(m.kl)


def test_mass_inside():
    a = torch.tensor([[[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]]], dtype=torch.float64)
    diag = torch.eye(3, dtype=torch.bool)
    got = mass_inside(diag, a)
    assert got.shape == (1, 1, 3)
    assert torch.allclose(got[0, 0], torch.tensor([0.7, 0.8, 0.4], dtype=torch.float64), atol=TIGHT)
    assert torch.allclose(mass_inside(torch.ones(3, 3, dtype=torch.bool), a), torch.ones(1, 1, 3, dtype=torch.float64))
    # per-head mask broadcast against shared exact weights
    masks = torch.stack([diag, ~diag])[None]
    both = mass_inside(masks, a.expand(1, 2, 3, 3))
    assert torch.allclose(both.sum(1), torch.ones(1, 3, dtype=torch.float64), atol=TIGHT)


def band(n, w, causal=False):
    i = torch.arange(n)
    d = i[:, None] - i[None, :]
    m = d.abs() <= w
    return m & (d >= 0) if causal else m


def test_reachability_band_needs_n_over_w_layers():
    r = reachability(band(9, 1), layers=20)
    assert r.layers_to_full == 8  # the farthest pair is 8 apart, one step per layer
    assert r.fraction == sorted(r.fraction) and r.fraction[-1] == 1.0
    assert reachability(band(9, 2), layers=20).layers_to_full == 4
    rc = reachability(band(9, 1, causal=True), layers=20)
    assert rc.causal and rc.layers_to_full == 8
    assert not bool(torch.triu(rc.steps[-1], 1).any())  # causal reach never looks ahead


def test_reachability_global_token_and_blocks():
    n = 10
    star = torch.zeros(n, n, dtype=torch.bool)
    star[0, :] = True
    star[:, 0] = True
    assert reachability(star, layers=5).layers_to_full == 2  # through the global token
    assert reachability(torch.ones(n, n, dtype=torch.bool)).layers_to_full == 1
    blocks = torch.block_diag(torch.ones(5, 5), torch.ones(5, 5)).bool()
    r = reachability(blocks, layers=6)
    assert r.layers_to_full is None and r.saturated and r.fraction[-1] == pytest.approx(0.5)


def test_reachability_stops_at_layer_limit():
    r = reachability(band(20, 1), layers=3)
    assert r.layers_to_full is None and not r.saturated and len(r.steps) == 3


def test_metric_names_complete():
    assert set(metrics.METRIC_LABELS) == set(metrics.METRIC_NAMES)


def test_kl_of_a_matrix_with_itself_is_not_negative():
    """Rounding gave KL(A ‖ A) = −6.9e-10 on Compare's exact row: KL is never negative."""
    a = torch.softmax(torch.randn(1, 12, 29, 29, generator=torch.Generator().manual_seed(3)) * 4, -1)
    m = compare(a, a.clone())
    assert m.kl >= 0 and min(m.per_head["kl"]) >= 0
