"""LSH & clustering analysis: collision theory against measurement, missed top-k keys, recall, projections."""
import math

import numpy as np
import pytest
import torch

import xviz
from xviz.analysis import lsh as L
from xviz.core.errors import ParameterError


def test_two_buckets_is_one_minus_angle_over_pi():
    th = np.linspace(0, math.pi, 9)
    assert np.allclose(L.collision_probability(th, 2), 1 - th / math.pi, atol=1e-12)


@pytest.mark.parametrize("buckets", [4, 8, 32])
def test_theory_exact_values(buckets):
    # Orthogonal vectors hash independently: p = 1/b exactly. The numeric integral on a 241² grid is
    # accurate to ~1e-4, so 1e-3 leaves room without hiding a wrong formula (1/b differs by ≥ 0.03 here).
    assert L.collision_probability(math.pi / 2, buckets) == pytest.approx(1 / buckets, abs=1e-3)
    assert L.collision_probability(0.0, buckets) == 1.0
    assert L.collision_probability(math.pi, buckets) == 0.0
    p = L.collision_probability(np.linspace(0, math.pi, 25), buckets)
    assert np.all(np.diff(p) <= 1e-9), "collision probability must fall with the angle"


def test_more_buckets_collide_less():
    th = np.array([0.3, 0.8, 1.4])
    p = [L.collision_probability(th, b) for b in (2, 4, 8, 16)]
    assert all(np.all(a > b) for a, b in zip(p, p[1:]))


@pytest.mark.parametrize("buckets, d", [(2, 16), (4, 32), (8, 64), (16, 8)])
def test_measured_collisions_within_sampling_error(buckets, d):
    """Hashing with the Reformer variant's own lsh_buckets: each measured rate lies within 4 binomial standard
    errors (of the theoretical p, 3000 independent pairs) plus 2e-3 for the numeric integral. With 9 angles × 4
    cases a 4σ band fails by chance with probability < 0.3 %; a wrong theory (e.g. b = 2's 1 − θ/π used for
    b = 8, off by > 0.2 at 60°) fails by many σ."""
    th = np.linspace(0.1, math.pi - 0.1, 9)
    pairs = 3000
    c = L.measure_collisions(th, buckets, d=d, pairs=pairs, seed=7)
    sigma = np.sqrt(c.theory * (1 - c.theory) / pairs)
    assert np.all(np.abs(c.measured - c.theory) <= 4 * sigma + 2e-3), np.c_[c.measured, c.theory, sigma]
    # and the test can fail: the 2-bucket curve is far from the measured 8-bucket rates
    if buckets == 8:
        wrong = 1 - th / math.pi
        assert np.any(np.abs(c.measured - wrong) > 10 * sigma + 2e-3)


def test_miss_probability_over_rounds():
    th = np.array([0.5, 1.0])
    p = L.collision_probability(th, 8)
    assert np.allclose(L.miss_probability(th, 8, 3), (1 - p) ** 3)


def test_bad_bucket_count():
    with pytest.raises(ParameterError, match="buckets"):
        L.collision_probability(1.0, 3)


def test_collisions_on_input_matches_buckets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 8, generator=g, dtype=torch.float64)
    bk = torch.randint(0, 4, (2, 40), generator=g)
    res = L.collisions_on_input(x, bk, bins=6)
    iu = torch.triu_indices(40, 40, 1)
    same = (bk[:, iu[0]] == bk[:, iu[1]]).double().mean()
    # the count-weighted mean of the binned rates is the overall collision rate (exact up to rounding)
    ok = res.count > 0
    assert float((res.rate[ok] * res.count[ok]).sum() / res.count.sum()) == pytest.approx(float(same), abs=1e-12)
    assert res.count.sum() == 40 * 39 / 2


def test_missed_topk_mask_and_weights():
    ref = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True], [False, False, True, True]])
    m = L.missed_topk(ref, mask, 2)
    assert m.top.tolist() == [[0, 1], [3, 2]]
    assert m.hit.tolist() == [[True, False], [True, True]]
    assert m.recall.tolist() == [0.5, 1.0]
    # weights: kept when ranked in the approximation's own top-2
    approx = torch.tensor([[0.1, 0.6, 0.3, 0.0], [0.4, 0.3, 0.2, 0.1]], dtype=torch.float64)
    w = L.missed_topk(ref, approx, 2)
    assert w.hit.tolist() == [[False, True], [False, False]]
    # a row with fewer positive keys than k counts only those (causal rows)
    c = L.missed_topk(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[True, False, False]]), 2)
    assert c.counted.tolist() == [[True, False]] and c.recall.tolist() == [1.0]


def test_missed_topk_agrees_with_metrics_recall():
    from xviz.analysis.metrics import topk_recall_rows

    g = torch.Generator().manual_seed(1)
    a = torch.softmax(torch.randn(2, 30, 30, generator=g, dtype=torch.float64), -1)
    b = torch.softmax(torch.randn(2, 30, 30, generator=g, dtype=torch.float64), -1)
    assert torch.allclose(L.missed_topk(a, b, 5).recall, topk_recall_rows(a, b, 5))


def test_shared_qk_reference_is_what_reformer_approximates():
    """Reformer with one bucket and one chunk covering N attends every other key: its matrix equals the
    shared-QK reference (float64: agreement to 1e-10 is rounding)."""
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 2, 24, 8, generator=g, dtype=torch.float64)
    v = torch.randn(1, 2, 24, 8, generator=g, dtype=torch.float64)
    spec = xviz.get_variant("reformer")
    assert spec.shared_qk and not xviz.get_variant("routing").shared_qk
    for causal in (False, True):
        r = xviz.run("reformer", q, q, v, buckets=1, chunk=24, rounds=1, causal=causal)
        ref = L.reference_weights(spec, q, q, 8 ** -0.5, causal)
        assert torch.allclose(r.matrix(), ref, atol=1e-10)
        assert L.missed_topk(ref, r.artifacts["mask"], 5).mean_recall == 1.0


def test_recall_grid_rises_with_rounds():
    """With one head, the first r rounds' rotations are the same draws whatever the number of rounds, and a query
    sees the union of its rounds' keys: more rounds can only add keys, so recall is non-decreasing along rounds
    for every bucket count (exactly, no tolerance beyond rounding); one bucket with one chunk is perfect."""
    from xviz import inputs

    inp = inputs.synthetic("clustered", n=128, d=16, heads=1, seed=0)
    q, k, v = inp.q.double(), inp.k.double(), inp.v.double()
    grid = L.recall_grid("reformer", q, k, v, rows=(1, 2, 4), cols=(1, 4, 16), topk=8, fixed={"chunk": 128})
    assert not grid.errors
    assert np.all(np.diff(grid.recall, axis=0) >= -1e-12), grid.recall
    assert grid.recall[:, 0] == pytest.approx(1.0)
    assert grid.recall[0, 2] < 1.0  # 16 buckets, one round: some true keys are missed
    bad = L.recall_grid("reformer", q, k, v, rows=(1,), cols=(3,), topk=4)
    assert np.isnan(bad.recall[0, 0]) and "buckets" in bad.errors[(1, 3)]


def test_group_order_and_sizes():
    ids = torch.tensor([2, 0, 2, 1, 0])
    assert L.group_order(ids).tolist() == [1, 4, 3, 0, 2]
    assert L.cluster_sizes(ids, 4).tolist() == [2, 1, 2, 0]


def test_projection_pca_and_tsne():
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(3, 10, generator=g) * 10
    x = torch.cat([c + torch.randn(15, 10, generator=g) for c in centres])
    for method in ("pca", "tsne"):
        xy = L.project_2d(x, method, seed=0)
        assert xy.shape == (45, 2) and np.isfinite(xy).all()
        # well-separated clusters stay separated: each point's nearest neighbour is in its own cluster
        dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(45) * 1e9
        assert np.all(dist.argmin(1) // 15 == np.arange(45) // 15)
    with pytest.raises(ParameterError):
        L.project_2d(x, "umap")
