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
    from xviz.sparse import sparse_attention, sparse_cost

    @xviz.register_variant(
        name="test_diagonal", display_name="Diagonal (test)", family="fixed pattern", paper="none",
        complexity="O(N·d)", complexity_class="linear",
        cost=lambda b, h, n, d, dv, causal=False: sparse_cost(b, h, n, d, dv, 1),
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
