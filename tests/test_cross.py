"""Cross-attention (N_q ≠ N_k) for the variants that declare it: shapes, the (B, H, N_q, N_k)
matrix, and each one's exact limit with keys and queries of different lengths.

Inputs are float64: "equal" is relative error below 1e-12 (the same weights summed in another
order) unless stated.
"""
import pytest
import torch

import xviz
from xviz.analysis.check import rel_err
from xviz.variants.nystrom import iterative_pinv

from .conftest import make_qkv

CROSS = sorted(s.name for s in xviz.list_variants() if s.cross)
LENGTHS = [(20, 44), (44, 20), (1, 30)]  # fewer queries than keys, more, a single query
TOL = 1e-12


def cross_qkv(nq, nk, **kw):
    q, _, _ = make_qkv(n=nq, seed=1, **kw)
    _, k, v = make_qkv(n=nk, seed=2, **kw)
    return q, k, v


def test_the_low_rank_and_kernel_variants_declare_cross():
    assert {"linformer", "nystrom", "memory_compressed", "clustered", "isab", "performer", "linear", "exact"} <= set(CROSS)
    assert not xviz.get_variant("cosformer").cross  # a locality prior on i − j needs one shared axis


@pytest.mark.parametrize("nq,nk", LENGTHS)
@pytest.mark.parametrize("name", CROSS)
def test_cross_matrix_is_nq_by_nk_and_reproduces_out(name, nq, nk):
    q, k, v = cross_qkv(nq, nk)
    r = xviz.run(name, q, k, v)
    assert r.out.shape == (2, 2, nq, v.shape[-1])
    if r.has_matrix:
        a = r.matrix()
        assert a.shape == (2, 2, nq, nk)
        assert rel_err(a @ v, r.out) < 1e-10  # float64; pseudo-inverses and feature maps add rounding


@pytest.mark.parametrize("nq,nk", LENGTHS)
@pytest.mark.parametrize("name,params", [
    ("linformer", lambda nq, nk: {"projection": "identity", "rank": nk}),
    ("memory_compressed", lambda nq, nk: {"stride": 1}),
    ("clustered", lambda nq, nk: {"topk": nk}),  # improved clustered on every key: exact for any clustering
    ("clustered", lambda nq, nk: {"clusters": nq, "topk": 0}),  # each (distinct) query its own centroid
    ("mla", lambda nq, nk: {"rank": 4 * 8 + 4 * 11}),
])
def test_cross_exact_limits(name, params, nq, nk):
    if name == "clustered" and params(nq, nk).get("clusters", 0) > nk:
        pytest.skip("parameter ranges are against N_k, so at most N_k clusters")
    q, k, v = cross_qkv(nq, nk)
    r = xviz.run(name, q, k, v, **params(nq, nk))
    assert rel_err(r.out, xviz.run("exact", q, k, v).out) < 1e-10  # MLA: a float64 eigendecomposition


@pytest.mark.parametrize("nq,nk", [(20, 44), (30, 30)])
def test_nystrom_cross_with_every_token_a_landmark_is_exact(nq, nk):
    """Query landmarks min(m, N_q) = N_q and key landmarks m = N_k: F = A = B and F A⁺ B = A A⁺ A = A
    (needs N_q ≤ N_k: with more queries than keys the query landmarks pool queries)."""
    q, k, v = cross_qkv(nq, nk)
    r = xviz.run("nystrom", q, k, v, landmarks=nk, pinv="exact")
    assert rel_err(r.out, xviz.run("exact", q, k, v).out) < 1e-8  # pinv of a float64 softmax matrix


@pytest.mark.parametrize("shape", [(6, 9), (9, 6), (7, 7)])
def test_nystrom_iterative_pinv_converges_on_rectangular_softmax_matrices(shape):
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(2, *shape, generator=g, dtype=torch.float64), -1)
    # 30 iterations of the order-7 iteration from the Aᵀ/(‖A‖₁‖A‖∞) start: converged far below 1e-8
    assert rel_err(iterative_pinv(a, 30), torch.linalg.pinv(a)) < 1e-8


def test_linformer_cross_projects_the_keys_length():
    q, k, v = cross_qkv(20, 44)
    r = xviz.run("linformer", q, k, v, rank=8)
    assert r.artifacts["projection"].shape == (2, 8, 44)


def test_isab_cross_reads_the_keys_through_the_points():
    q, k, v = cross_qkv(20, 44)
    r = xviz.run("isab", q, k, v, inducing=5)
    assert r.artifacts["induced_reads"].shape == (2, 2, 5, 44) and r.artifacts["query_reads"].shape == (2, 2, 20, 5)
    assert torch.linalg.matrix_rank(r.matrix()[0, 0]).item() <= 5


@pytest.mark.parametrize("name", CROSS)
def test_cross_with_causal_is_refused(name):
    q, k, v = cross_qkv(20, 44)
    with pytest.raises(xviz.XvizError, match="causal"):
        xviz.run(name, q, k, v, causal=True)


def test_self_attention_only_variants_refuse_cross():
    q, k, v = cross_qkv(20, 44)
    with pytest.raises(xviz.InputError, match="cross-attention"):
        xviz.run("cosformer", q, k, v)
