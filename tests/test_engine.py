"""The engine's contract: input validation, errors that name the problem, the matrix budget, plugins."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import xviz

from .conftest import make_qkv

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("make, match", [
    (lambda q, k, v: (q.int(), k, v), "floating-point"),
    (lambda q, k, v: (q[0], k, v), "shape"),
    (lambda q, k, v: (q, k[..., :-1], v), "same head dimension"),
    (lambda q, k, v: (q, k, v[..., :-1, :]), "same length"),
    (lambda q, k, v: (torch.where(q > 2, float("nan"), q), k, v), "NaN"),
    (lambda q, k, v: (q, k * float("inf"), v), "NaN or Inf"),
    (lambda q, k, v: (q, k, v.float()), "one dtype"),
    (lambda q, k, v: (q.numpy(), k, v), "torch.Tensor"),
])
def test_bad_inputs_are_named(make, match):
    q, k, v = make_qkv()
    with pytest.raises(xviz.InputError, match=match):
        xviz.run("exact", *make(q, k, v))


def test_unknown_variant_lists_the_known_ones():
    q, k, v = make_qkv()
    with pytest.raises(xviz.UnknownVariantError, match="known variants: .*exact"):
        xviz.run("no_such_variant", q, k, v)


def test_bad_seed_and_scale():
    q, k, v = make_qkv()
    with pytest.raises(xviz.ParameterError, match="seed"):
        xviz.run("exact", q, k, v, seed=-1)
    with pytest.raises(xviz.ParameterError, match="scale"):
        xviz.run("exact", q, k, v, scale=0.0)


def test_xviz_errors_share_a_base_class():
    for cls in (xviz.InputError, xviz.ParameterError, xviz.UnknownVariantError, xviz.BudgetError):
        assert issubclass(cls, xviz.XvizError)


def test_matrix_over_budget_raises_before_allocating():
    q, k, v = make_qkv(b=1, h=1, n=64, dtype=torch.float32)
    old = xviz.matrix_budget()
    try:
        xviz.set_matrix_budget(64 * 64 * 4 - 1)  # one byte short of the matrix
        r = xviz.run("exact", q, k, v)
        with pytest.raises(xviz.BudgetError, match="budget"):
            r.matrix()
        xviz.set_matrix_budget(64 * 64 * 4)
        assert r.matrix().shape == (1, 1, 64, 64)
    finally:
        xviz.set_matrix_budget(old)


def test_defaults_fit_short_sequences():
    """A default larger than N (window 64 at N = 10) is clamped, so every variant runs on defaults."""
    q, k, v = make_qkv(n=10)
    r = xviz.run("sliding_window", q, k, v)
    assert r.params["window"] == 10


def test_register_variant_decorator_joins_the_catalog():
    from xviz.kernels.costs import sparse_cost
    from xviz.kernels.sparse import sparse_attention

    @xviz.register_variant(
        name="test_diagonal", display_name="Diagonal (test)", family="fixed pattern", paper="none",
        complexity="O(N·d)", complexity_class="linear",
        cost=lambda s: sparse_cost(s, 1),
        causal=True, row_stochastic=True, artifacts=("mask",), content_based=False,
    )
    def diagonal(q, k, v, ctx):
        """Each token attends only to itself: out = v."""
        return sparse_attention(q, k, v, ctx, lambda rows: (rows[:, None], None), width=1)

    try:
        assert "test_diagonal" in [s.name for s in xviz.list_variants()]
        q, k, v = make_qkv()
        assert torch.allclose(xviz.run("test_diagonal", q, k, v).out, v)
    finally:
        xviz.unregister_variant("test_diagonal")


def test_plugins_load_from_the_environment():
    env = dict(os.environ, XVIZ_PLUGINS="tests.plugins.identity_plugin", PYTHONPATH=str(ROOT))
    code = "import xviz; print([s.name for s in xviz.list_variants() if s.name == 'identity_plugin'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "identity_plugin" in out.stdout


def test_a_broken_plugin_is_named():
    with pytest.raises(xviz.XvizError, match="no_such_module_xyz"):
        xviz.load_plugins(["no_such_module_xyz"])


def test_a_failed_plugin_stays_visible():
    """A plugin that fails to import is reported on every later call, not silently missing."""
    env = dict(os.environ, XVIZ_PLUGINS="no_such_plugin_module_abc", PYTHONPATH=str(ROOT))
    code = ("import xviz; n = len(xviz.list_variants()); e1 = xviz.plugin_errors(); e2 = xviz.plugin_errors(); "
            "print(n > 20, len(e1), e1 == e2, 'no_such_plugin_module_abc' in e1[0])")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "1", "True", "True"]


def test_concurrent_first_callers_see_the_whole_catalog():
    """8 threads asking for the catalog at once on a fresh process all see every variant (the app's
    first sessions arrive together; a partial catalog crashed 7 of 8 before loading was locked)."""
    code = ("import threading, xviz.core.registry as R\n"
            "seen = []\n"
            "go = threading.Barrier(8)\n"
            "def first():\n"
            "    go.wait(); seen.append(len(R.list_variants()))\n"
            "ts = [threading.Thread(target=first) for _ in range(8)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\n"
            "print(sorted(set(seen)), len(seen))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    counts, calls = out.stdout.rsplit(" ", 1)
    assert int(calls) == 8 and len(eval(counts)) == 1 and eval(counts)[0] >= 25, out.stdout


def test_registering_a_taken_name_raises_unless_replace():
    spec = xviz.get_variant("exact")
    with pytest.raises(xviz.XvizError, match="already registered"):
        xviz.register_variant(spec)
    assert xviz.register_variant(spec, replace=True) is spec


def test_cross_attention_exact_equals_sdpa():
    """N_q ≠ N_k: exact attention is SDPA on the rectangle; the matrix is (B, H, N_q, N_k)."""
    q, _, _ = make_qkv(n=17)
    _, k, v = make_qkv(n=40, seed=1)
    r = xviz.run("exact", q, k, v)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert (r.out - ref).abs().max() < 1e-12  # float64, the same kernel
    assert r.matrix().shape == (2, 2, 17, 40)
    assert (r.matrix() @ v - ref).abs().max() < 1e-12


def test_cross_attention_refused_where_it_makes_no_sense():
    q, _, _ = make_qkv(n=17)
    _, k, v = make_qkv(n=40, seed=1)
    with pytest.raises(xviz.InputError, match="does not do cross-attention"):
        xviz.run("reformer", q, k, v)  # shared QK: the keys are the queries
    with pytest.raises(xviz.ParameterError, match="causal attention needs queries and keys of one sequence"):
        xviz.run("exact", q, k, v, causal=True)


@pytest.mark.parametrize("shape", [(0, 2, 8, 4), (1, 0, 8, 4), (1, 2, 0, 4), (1, 2, 8, 0)])
def test_degenerate_shapes_are_refused(shape):
    q = torch.randn(*shape)
    with pytest.raises(xviz.InputError, match="at least 1"):
        xviz.run("exact", q, q, q)


def test_every_seed_in_range_works_and_beyond_is_refused():
    q, k, v = make_qkv(n=16, dtype=torch.float32)
    xviz.run("performer", q, k, v, seed=2**63 - 1)  # the generator mix stays inside 64 bits
    with pytest.raises(xviz.ParameterError, match="seed"):
        xviz.run("performer", q, k, v, seed=2**63)


def test_logits_beyond_float32_are_refused_not_nan():
    q, k, v = make_qkv(n=16, dtype=torch.float32)
    with pytest.raises(xviz.InputError, match="beyond float32's range"):
        xviz.run("exact", q * 1e19, k * 1e19, v)


def test_work_over_budget_is_refused_before_it_starts():
    q, k, v = make_qkv(b=1, h=1, n=2, d=100_000, dtype=torch.float32)
    with pytest.raises(xviz.BudgetError, match="work budget"):
        xviz.run("performer", q, k, v, features=8192)


@pytest.mark.parametrize("returns, match", [
    (lambda q, k, v: v, "not an xviz.Output"),
    (lambda q, k, v: xviz.Output(out=v[..., :-1]), "shape"),
    (lambda q, k, v: xviz.Output(out=v.float()), "float32"),
    (lambda q, k, v: xviz.Output(out=v * float("nan")), "NaN or Inf"),
])
def test_what_a_variant_returns_is_checked_and_named(returns, match):
    from xviz.kernels.costs import sparse_cost

    spec = xviz.VariantSpec(name="test_broken_return", display_name="broken", family="fixed pattern", paper="none",
                            complexity="O(N)", complexity_class="linear", cost=lambda s: sparse_cost(s, 1),
                            fn=lambda q, k, v, ctx: returns(q, k, v))
    xviz.register_variant(spec)
    try:
        q, k, v = make_qkv()
        with pytest.raises(xviz.VariantError, match=match) as info:
            xviz.run("test_broken_return", q, k, v)
        assert "tests.test_engine" in str(info.value)  # the module that defined it is named
    finally:
        xviz.unregister_variant("test_broken_return")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_all_finite_finds_every_kind_of_non_finite_value(dtype):
    from xviz.core.result import all_finite

    x = torch.randn(2, 3, 17, 5).to(dtype)
    assert all_finite(x) and all_finite(x[:, :, :0]) and all_finite(torch.tensor(7))
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[1, 2, 16, 4] = bad
        assert not all_finite(y), bad
        assert not all_finite(y.transpose(1, 2)), bad  # any layout


def test_a_plugin_with_the_earlier_cost_signature_is_named_at_registration():
    """A plugin written for cost(b, h, n, d, dv, causal, **params) failed with a bare TypeError on every run
    and every check line; now its registration says once what xviz calls."""
    def old_cost(b, h, n, d, dv, causal, **params):
        return xviz.Cost(1.0, 1.0)

    spec = xviz.VariantSpec(name="test_old_cost", display_name="old", family="fixed pattern", paper="none",
                            complexity="O(N)", complexity_class="linear", fn=lambda q, k, v, ctx: None, cost=old_cost)
    with pytest.raises(xviz.XvizError, match=r"variant 'test_old_cost' \(tests.test_engine\): its cost function "
                                             r"takes cost\(b, h, n, d, dv, causal.*calls cost\(shape, \*\*params\)"):
        xviz.register_variant(spec)
    with pytest.raises(xviz.UnknownVariantError):
        xviz.get_variant("test_old_cost")  # nothing half-registered


@pytest.mark.parametrize("old, new", [("xviz.result", "xviz.core.result"), ("xviz.sparse", "xviz.kernels.sparse")])
def test_moved_import_paths_still_work_with_a_deprecation_warning(old, new):
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
