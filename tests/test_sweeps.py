"""Sweeps: points stream as they are computed, mean/std over seeds, a stop request stops, resume skips."""
import math
import threading

import numpy as np
import pytest
import torch

import xviz
from xviz.analysis import sweeps
from xviz.core.errors import ParameterError

MAKE = sweeps.gaussian_input(d=8, heads=2, dtype=torch.float64)


def test_param_sweep_streams_points_in_order():
    series = [sweeps.Series("sliding_window", param="window"), sweeps.Series("performer", param="features")]
    vals = {"sliding_window: window": [1, 4, 16, 64], "performer: features": [4, 16, 64]}
    it = sweeps.sweep(series, "param", vals, MAKE, n=64, seeds=(0, 1))
    first = next(it)  # a generator: the first point arrives before the rest is computed
    assert (first.series, first.x, first.index, first.total) == ("sliding_window: window", 1.0, 1, 7)
    pts = [first] + list(it)
    assert [p.series[:4] for p in pts] == ["slid", "perf", "slid", "perf", "slid", "perf", "slid"]
    assert [p.index for p in pts] == list(range(1, 8))
    win = sweeps.collect(pts)["sliding_window: window"]
    # window = N is exact attention: error 0 up to float64 rounding; a wider window never hurts here
    assert win[-1].mean < 1e-12
    assert all(a.mean >= b.mean - 1e-12 for a, b in zip(win, win[1:]))


def test_mean_and_std_over_seeds_match_direct_runs():
    """Each point's values are the per-seed errors of independent runs (input and variant redrawn per seed):
    recomputed directly they agree to float64 rounding."""
    pts = list(sweeps.sweep([sweeps.Series("performer", param="features")], "param", [16], MAKE, n=32,
                            seeds=(3, 5, 9)))
    assert len(pts) == 1 and len(pts[0].values) == 3
    direct = []
    for s in (3, 5, 9):
        q, k, v = MAKE(32, s)
        ex = xviz.run("exact", q, k, v)
        ap = xviz.run("performer", q, k, v, seed=s, features=16)
        direct.append(float(torch.linalg.vector_norm(ap.out - ex.out) / torch.linalg.vector_norm(ex.out)))
    assert np.allclose(pts[0].values, direct, rtol=1e-12)
    assert pts[0].mean == pytest.approx(np.mean(direct)) and pts[0].std == pytest.approx(np.std(direct))
    assert pts[0].std > 0  # three different seeds give different errors


def test_n_and_scale_axes():
    pts = list(sweeps.sweep([sweeps.Series("sliding_window", (("window", 4),))], "n", [16, 32, 64], MAKE,
                            seeds=(0,)))
    assert [p.x for p in pts] == [16, 32, 64] and all(p.mean > 0 for p in pts)
    # logit scale → 0: every variant returns mean(V), so the error vanishes (catalog identity 12)
    sc = list(sweeps.sweep([sweeps.Series("performer")], "scale", [1e-6, 1.0, 4.0], MAKE, n=48, seeds=(0, 1)))
    # (the random-feature error shrinks like the square root of the scale: 1e-6 leaves ~1e-4, 1000× below scale 1)
    assert sc[0].mean < 1e-2 * sc[1].mean and sc[1].mean < sc[2].mean  # Performer degrades as the logits grow


def test_stop_request_stops():
    """A stop requested after the first point: the generator yields nothing more and ends (a threading.Event
    and a plain callable both work), long before the 12 points of the whole sweep."""
    series = [sweeps.Series("sliding_window", param="window")]
    ev = threading.Event()
    got = []
    for p in sweeps.sweep(series, "param", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], MAKE, n=32, stop=ev):
        got.append(p)
        ev.set()
    assert len(got) == 1 and got[0].total == 12
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 4  # stop during the second point (3 seeds per point)

    got = list(sweeps.sweep(series, "param", list(range(1, 13)), MAKE, n=32, stop=stop))
    assert len(got) == 1
    # without a stop request the same sweep runs to the end
    assert len(list(sweeps.sweep(series, "param", list(range(1, 13)), MAKE, n=32))) == 12


def test_resume_skips_computed_points():
    series = [sweeps.Series("sliding_window", param="window")]
    pts = list(sweeps.sweep(series, "param", [1, 2, 3], MAKE, n=32, seeds=(0,),
                            skip=[("sliding_window: window", 1.0), ("sliding_window: window", 2.0)]))
    assert [p.x for p in pts] == [3.0] and pts[0].index == 3


def test_bad_values_become_point_errors_not_exceptions():
    pts = list(sweeps.sweep([sweeps.Series("reformer", param="buckets")], "param", [3, 4], MAKE, n=32, seeds=(0,)))
    assert "buckets" in pts[0].error and math.isnan(pts[0].mean)
    assert not pts[1].error and pts[1].mean > 0
    # a causal request for a variant without a causal form, and an N longer than a fixed input
    pts = list(sweeps.sweep([sweeps.Series("linformer")], "scale", [1.0], MAKE, n=16, causal=True, seeds=(0,)))
    assert "causal" in pts[0].error
    q, k, v = MAKE(20, 0)
    with pytest.raises(ParameterError):
        list(sweeps.sweep([sweeps.Series("exact")], "n", [40], sweeps.fixed_input(q, k, v)))
    with pytest.raises(ParameterError):
        list(sweeps.sweep([sweeps.Series("exact")], "param", [1], MAKE, n=16))


def test_matrix_metric_needs_a_matrix():
    pts = list(sweeps.sweep([sweeps.Series("sliding_window", param="window")], "param", [2], MAKE, n=24,
                            metric="kl", seeds=(0,)))
    assert pts[0].mean > 0


def test_param_values():
    spec = xviz.get_variant("reformer")
    vals = sweeps.param_values(spec, "buckets", 256, 64)
    assert all(v == 1 or v % 2 == 0 for v in vals) and max(vals) <= 256
    win = sweeps.param_values(xviz.get_variant("sliding_window"), "window", 100, 16, count=5)
    assert win[0] >= 1 and win[-1] == 100 and win == sorted(set(win))
    assert sweeps.default_param(xviz.get_variant("performer")) == "features"
    assert sweeps.default_param(xviz.get_variant("exact")) is None
    with pytest.raises(ParameterError):
        sweeps.param_values(xviz.get_variant("performer"), "kernel", 64, 8)
