"""Every registered variant, tested through the registry: a new variant is covered the moment it registers."""
import inspect
import math
import sys

import pytest
import torch

import xviz
from xviz.analysis.check import rel_err
from xviz.analysis import check
from xviz.core.registry import ARTIFACT_KINDS, FAMILIES, Shape

from .conftest import make_qkv

SPECS = {s.name: s for s in xviz.list_variants()}
ALL = sorted(SPECS)
NOT_CAUSAL = [n for n in ALL if not SPECS[n].causal]
MASKED = [n for n in ALL if "mask" in SPECS[n].artifact_names]
N = 48  # small enough for float64 dense references, large enough that defaults are not all clamped to N


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
    assert (s.fn.__doc__ or sys.modules[s.fn.__module__].__doc__ or "").strip(), "cite the paper in a docstring"
    for p in s.params:
        assert p.help, f"{name}.{p.name} has no help text"
        if p.kind == "choice":
            assert p.default in p.choices
        else:
            assert p.coerce(p.fit_default(1024, 64), 1024, 64) == p.fit_default(1024, 64)
    for causal in (False, True) if s.causal else (False,):
        c = s.cost_at(Shape(1, 8, 1024, 64, 64, causal=causal))
        assert c.flops > 0 and c.bytes > 0
    for a in s.artifacts:
        assert a.kind in ARTIFACT_KINDS and a.help, f"artifact {a.name} needs a kind and a sentence"


@pytest.mark.parametrize("name", ALL)
def test_cost_takes_the_resolved_parameters(name):
    """cost(shape, **params) receives every resolved parameter and keeps no defaults of its own (a
    default there could drift from the Param's, as BigBird's once did)."""
    s = SPECS[name]
    sig = inspect.signature(s.cost)
    own = [p for p in list(sig.parameters.values())[1:] if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert all(p.default is p.empty for p in own), f"{name}'s cost has defaults: {own}"
    if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        assert {p.name for p in own} == {p.name for p in s.params}


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
@pytest.mark.parametrize("name", MASKED)
def test_sparse_variant_is_masked_softmax(name, causal):
    if causal and not SPECS[name].causal:
        pytest.skip("not causal")
    if "branch_masks" in SPECS[name].artifact_names:  # a gated mix of several softmaxes (NSA), tested in its own file
        pytest.skip("a mixture of per-branch softmaxes, not one masked softmax")
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


# The checks users run on their own variants (xviz.check), on every built-in one. Each check states
# its tolerance and why; SKIP means the variant does not claim the property.
QUICK_CHECKS = [label for label, _ in check.battery(SPECS["exact"], quick=True)]


@pytest.mark.parametrize("label", QUICK_CHECKS)
@pytest.mark.parametrize("name", ALL)
def test_quick_check(name, label):
    result = dict(check.battery(SPECS[name], quick=True))[label]()
    assert result.status != check.FAIL, result.line()


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
