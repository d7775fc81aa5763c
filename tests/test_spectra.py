"""Spectra: energy, ranks, the Eckart–Young bound, and the rank-k variants measured against it."""
import math

import numpy as np
import pytest
import torch

from xviz.analysis import spectra
from xviz.core.errors import ParameterError


def _attention(n=64, d=8, heads=2, seed=0, gain=1.0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, heads, n, d, generator=g, dtype=torch.float64) for _ in range(3))
    q = q * gain
    return q, k, v, torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1)


def test_singular_values_match_numpy():
    *_, a = _attention()
    s = spectra.singular_values(a)
    assert s.shape == (2, 64)
    assert np.allclose(s[1], np.linalg.svd(a[0, 1].numpy(), compute_uv=False), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gain", [0.1, 1.0, 4.0])
def test_cumulative_energy_monotone_and_reaches_one(gain):
    *_, a = _attention(gain=gain)
    s = spectra.singular_values(a)
    for squared in (True, False):
        e = spectra.cumulative_energy(s, squared)
        assert np.all(np.diff(e, axis=-1) >= 0)
        assert np.all(e[:, -1] == 1.0)
        assert np.all((e > 0) & (e <= 1))
    # the energy at k is 1 − (relative Eckart–Young error at k)² (float64 rounding only)
    e = spectra.cumulative_energy(s)
    ey = spectra.eckart_young(s, "fro")
    assert np.allclose(e, 1 - ey[:, 1:] ** 2, atol=1e-12)


def test_ranks_and_effective_rank():
    s = np.array([[4.0, 2.0, 1.0, 1.0, 0.0]])
    e = spectra.cumulative_energy(s)
    assert np.allclose(e, [[16 / 22, 20 / 22, 21 / 22, 1.0, 1.0]])
    assert spectra.rank_for_energy(s, 0.90).tolist() == [2]  # 20/22 = 0.909
    assert spectra.rank_for_energy(s, 0.95).tolist() == [3]
    assert spectra.rank_for_energy(s, 0.99).tolist() == [4]
    assert spectra.effective_rank(np.array([[1.0, 0, 0]]))[0] == pytest.approx(1.0)
    assert spectra.effective_rank(np.array([[2.0, 2, 2, 2]]))[0] == pytest.approx(4.0)
    assert spectra.stable_rank(s)[0] == pytest.approx(22 / 16)


def test_eckart_young_is_the_truncated_svd_error():
    *_, a = _attention(n=32)
    m = a[0, 0]
    u, s, vt = torch.linalg.svd(m)
    ey_f = spectra.eckart_young(s.numpy(), "fro", relative=False)
    ey_2 = spectra.eckart_young(s.numpy(), "spectral", relative=False)
    for k in (0, 1, 5, 31, 32):
        ak = (u[:, :k] * s[:k]) @ vt[:k]
        assert torch.linalg.matrix_norm(m - ak).item() == pytest.approx(ey_f[k], abs=1e-10)
        assert torch.linalg.matrix_norm(m - ak, ord=2).item() == pytest.approx(ey_2[k], abs=1e-10)
    with pytest.raises(ParameterError):
        spectra.eckart_young(s.numpy(), "nuclear")


@pytest.mark.parametrize("norm", ["fro", "spectral"])
def test_no_variant_beats_eckart_young(norm):
    """Every rank-k variant's effective matrix has rank ≤ k, so its error is never below the bound. Float64
    throughout; 1e-9 absorbs rounding of the norms. The SVD oracle reaches the bound (same 1e-9), which shows
    the comparison is tight, so the test would catch a variant given a larger rank than k."""
    q, k, v, _ = _attention(n=48, d=8, heads=2, seed=4)
    ks = [1, 3, 8, 20, 48]
    cmp = spectra.lowrank_errors(q, k, v, ks, ("linformer", "nystrom", "performer", "svd"), norm=norm, seeds=(0, 1))
    assert not cmp.messages
    for name, errs in cmp.errors.items():
        assert np.isfinite(errs).all(), name
        assert np.all(errs >= cmp.bound[None] - 1e-9), (name, errs.min(axis=0) - cmp.bound)
    assert np.allclose(cmp.errors["svd"][0], cmp.bound, atol=1e-9)
    # and the check can fail: a matrix of higher rank (the oracle at the next k of the grid) does get below the
    # bound at the current k, on every head
    assert np.all(cmp.errors["svd"][0][:, 1:] < cmp.bound[:, :-1] - 1e-6)
    at_n = spectra.lowrank_errors(q, k, v, [48], ("linformer",), norm=norm,
                                  fixed={"linformer": {"projection": "identity"}})
    assert np.all(at_n.errors["linformer"] < 1e-9)  # k = N, E = F = I: exact


def test_rank_params():
    assert spectra.rank_k_params("nystrom", 7) == {"landmarks": 7}
    assert spectra.rank_k_params("performer", 8, {"kernel": "trig"}) == {"kernel": "trig", "features": 4}
    with pytest.raises(ParameterError, match="rank"):
        spectra.rank_k_params("sliding_window", 4)
    assert spectra.rank_grid(5) == [1, 2, 3, 4, 5]
    g = spectra.rank_grid(512, 10)
    assert g[0] == 1 and g[-1] == 512 and g == sorted(set(g))


def test_layer_head_energy_map():
    mats = [_attention(n=20, heads=3, seed=s, gain=1 + s)[3][0] for s in range(4)]
    z = spectra.layer_head_energy(mats, k=5)
    assert z.shape == (4, 3)
    expect = spectra.cumulative_energy(spectra.singular_values(mats[2]))[:, 4]
    assert np.allclose(z[2], expect)
    assert np.all(spectra.layer_head_energy(mats, k=10**6) == 1.0)  # k capped at N
    assert np.all(spectra.layer_head_energy(mats, k=5) <= spectra.layer_head_energy(mats, k=6) + 1e-15)


def test_model_layers_and_errors():
    pytest.importorskip("transformers")
    from xviz import inputs

    try:
        info = inputs.model_info()
    except Exception as exc:  # noqa: BLE001 — no bundled model on this machine
        pytest.skip(f"no model: {exc}")
    layers = spectra.model_layers("The cat sat on the mat.")
    assert len(layers) == info["layers"]
    a = spectra.attention_of(layers[1])
    assert a.shape[0] == info["heads"] and torch.allclose(a.sum(-1), torch.ones(()).double(), atol=1e-5)
    z, msgs = spectra.layer_head_errors(layers, "sliding_window", {"window": 2})
    assert z.shape == (info["layers"], info["heads"]) and not msgs
    assert np.all(z > 0)
    zero, _ = spectra.layer_head_errors(layers[:2], "sliding_window", {"window": layers[0].n})
    assert np.all(zero < 1e-5)  # window ≥ N is exact (float32 rounding)
