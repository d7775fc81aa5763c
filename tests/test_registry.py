"""Every registered variant, tested through the registry: a new variant is covered the moment it registers."""
import math

import pytest
import torch

import xviz
from xviz.registry import FAMILIES
from xviz.variants.exact import dense_weights

from .conftest import make_qkv

SPECS = {s.name: s for s in xviz.list_variants()}
ALL = sorted(SPECS)
WITH_MATRIX = [n for n in ALL if SPECS[n].has_matrix]
CAUSAL = [n for n in ALL if SPECS[n].causal]
NOT_CAUSAL = [n for n in ALL if not SPECS[n].causal]
MASKED = [n for n in ALL if "mask" in SPECS[n].artifacts]
LIMITS = [n for n in ALL if SPECS[n].exact_when is not None]
ROW_STOCHASTIC = [n for n in ALL if SPECS[n].row_stochastic]
N = 48  # small enough for float64 dense references, large enough that defaults are not all clamped to N


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def test_catalog_has_the_required_variants():
    required = {
        "exact", "sliding_window", "blocked_local", "dilated_window", "longformer", "sparse_strided",
        "sparse_fixed", "bigbird", "random_pattern", "axial", "topk", "reformer", "routing", "clustered",
        "sinkhorn", "linformer", "nystrom", "svd", "performer", "linear", "cosformer", "memory_compressed",
        "synthesizer", "prior", "grouped_query",
    }
    assert required <= set(ALL), f"missing: {sorted(required - set(ALL))}"


@pytest.mark.parametrize("name", ALL)
def test_spec_is_complete(name):
    s = SPECS[name]
    assert s.family in FAMILIES and s.paper and s.complexity and s.display_name
    assert s.fn.__module__ and (s.fn.__doc__ or __import__(s.fn.__module__).__doc__ is not None)
    for p in s.params:
        assert p.help, f"{name}.{p.name} has no help text"
        if p.kind == "choice":
            assert p.default in p.choices
        else:
            assert p.coerce(p.fit_default(1024, 64), 1024, 64) == p.fit_default(1024, 64)
    c = s.cost(1, 8, 1024, 64, 64, causal=False, **s.defaults())
    assert c.flops > 0 and c.bytes > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", ALL)
def test_shapes_and_dtypes(name, dtype):
    q, k, v = make_qkv(n=N, dv=11, dtype=dtype)
    r = xviz.run(name, q, k, v)
    assert r.out.shape == (2, 2, N, 11)
    assert r.out.dtype == dtype
    assert torch.isfinite(r.out.float()).all()


@pytest.mark.parametrize("name", ALL)
def test_two_dimensional_inputs(name):
    q, k, v = make_qkv(b=1, h=1, n=N, dtype=torch.float32)
    r = xviz.run(name, q[0, 0], k[0, 0], v[0, 0])
    assert r.out.shape == (N, v.shape[-1])
    if r.has_matrix:
        assert r.matrix().shape == (N, N)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", WITH_MATRIX)
def test_matrix_times_v_is_out(name, causal):
    if causal and not SPECS[name].causal:
        pytest.skip("not causal")
    q, k, v = make_qkv(n=N)
    r = xviz.run(name, q, k, v, causal=causal)
    # float64: two summation orders of the same weights agree to ~1e-13; 1e-9 leaves room for
    # iterative parts (Newton–Schulz pinv) that are applied to v before, and to I after.
    assert rel_err(r.matrix() @ v, r.out) < 1e-9


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", MASKED)
def test_sparse_variant_is_masked_softmax(name, causal):
    if causal and not SPECS[name].causal:
        pytest.skip("not causal")
    q, k, v = make_qkv(n=N, unit=True)
    q, k = 2 * q, 2 * k  # sharper than unit logits, so a wrong mask shows
    r = xviz.run(name, q, k, v, causal=causal)
    mask = r.artifacts["mask"]
    scale = 1 / math.sqrt(q.shape[-1])
    if name == "reformer":  # shared-QK: keys are the unit-normalised queries
        k = q / q.norm(dim=-1, keepdim=True)
    logits = (q @ k.transpose(-1, -2) * scale).masked_fill(~mask, float("-inf"))
    ref = torch.nan_to_num(torch.softmax(logits, -1), nan=0.0) @ v  # an empty row gives 0, as the engine does
    assert rel_err(r.out, ref) < 1e-10  # float64, same weights, different summation order
    if causal:
        assert not mask.triu(1).any(), "a causal mask must not reach the future"


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", LIMITS)
def test_limit_equals_exact(name, causal):
    if causal and not SPECS[name].causal:
        pytest.skip("not causal")
    q, k, v = make_qkv(n=N)
    params = SPECS[name].exact_when(N, q.shape[-1], q.shape[1])
    r = xviz.run(name, q, k, v, causal=causal, **params)
    e = xviz.run("exact", q, k, v, causal=causal)
    # float64; the limits are algebraic identities, 1e-6 covers a pseudo-inverse of a dense softmax matrix.
    assert rel_err(r.out, e.out) < 1e-6


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_jacobian(name):
    """∂out_i/∂(q_j, k_j, v_j) = 0 for j > i: catches leaks an orthogonal-input test misses."""
    n = 12
    q, k, v = (t.requires_grad_() for t in make_qkv(b=1, h=2, n=n, d=4, seed=3))
    params = {}
    if name == "reformer":
        params = {"buckets": 2, "chunk": 4}
    r = xviz.run(name, q, k, v, causal=True, **params)
    w = torch.randn(r.out.shape, dtype=r.out.dtype, generator=torch.Generator().manual_seed(1))
    for t in range(n - 1):
        grads = torch.autograd.grad((r.out[..., : t + 1, :] * w[..., : t + 1, :]).sum(), (q, k, v),
                                    retain_graph=True, allow_unused=True)
        for which, g in zip("qkv", grads):
            if g is not None:
                # exactly zero in exact arithmetic: masked terms are exp(-inf) = 0 or never enter the graph
                assert g[..., t + 1:, :].abs().max().item() < 1e-12, f"output {t} depends on future {which}"


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", ROW_STOCHASTIC)
def test_rows_are_distributions(name, causal):
    if causal and not SPECS[name].causal:
        pytest.skip("not causal")
    q, k, v = make_qkv(n=N)
    a = xviz.run(name, q, k, v, causal=causal).matrix()
    assert a.min().item() >= -1e-12
    assert (a.sum(-1) - 1).abs().max().item() < 1e-9  # float64 sums of N terms


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_result(name):
    q, k, v = make_qkv(n=N, dtype=torch.float32)
    a = xviz.run(name, q, k, v, seed=5).out
    assert torch.equal(a, xviz.run(name, q, k, v, seed=5).out)
    if SPECS[name].stochastic:
        assert not torch.equal(a, xviz.run(name, q, k, v, seed=6).out), "declared stochastic but ignores the seed"


@pytest.mark.parametrize("name", ALL)
def test_declared_content_based_matches_behaviour(name):
    """Permuting keys and values together leaves content-based variants unchanged; positional ones change."""
    n = 512  # beyond every default window/block, so a positional pattern is not the whole matrix
    q, k, v = make_qkv(b=1, h=2, n=n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    a = xviz.run(name, q, k, v).out
    b = xviz.run(name, q, k[:, :, perm], v[:, :, perm]).out
    same = rel_err(b, a) < 1e-8
    assert same == SPECS[name].content_based, f"{name}: content_based={SPECS[name].content_based} but invariant={same}"


@pytest.mark.parametrize("name", NOT_CAUSAL)
def test_causal_refused_when_unsupported(name):
    q, k, v = make_qkv(n=N)
    with pytest.raises(xviz.ParameterError, match="cannot be causal"):
        xviz.run(name, q, k, v, causal=True)


@pytest.mark.parametrize("name", ALL)
def test_parameters_out_of_range_are_refused(name):
    q, k, v = make_qkv(n=N, dtype=torch.float32)
    with pytest.raises(xviz.ParameterError, match="no parameter"):
        xviz.run(name, q, k, v, not_a_parameter=1)
    for p in SPECS[name].params:
        low, high = p.bounds(N, q.shape[-1])
        bad = []
        if p.kind in ("int", "float") and low is not None:
            bad.append(low - 1)
        if p.kind in ("int", "float") and high is not None:
            bad.append(high + 1)
        if p.kind == "choice":
            bad.append("no-such-choice")
        for value in bad:
            with pytest.raises(xviz.ParameterError, match=p.name):
                xviz.run(name, q, k, v, **{p.name: value})
