"""Linear recurrences drawn as attention (xviz/kernels/recurrent*.py and the recurrence variants).

The chunked kernels are held to the plain references (token loops, dense forms) in
``recurrent_naive``; each variant to its paper's forms. Inputs are float64 unless stated, so "equal"
means equal up to summation order: relative errors of ~1e-15 are seen, 1e-10 is the bar. The
registry suite already checks shapes, dtypes, matrix() @ v == out, causality, seeds and costs.
"""
import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

import xviz
from xviz.analysis.check import rel_err
from xviz.core.registry import Shape
from xviz.kernels import recurrent as R, recurrent_naive as naive

from .conftest import make_qkv

RECURRENCES = ["retnet", "decayed_linear", "deltanet", "gated_deltanet", "mamba2"]
N = 40
CHUNKS = [1, 3, 16, N, N + 5]  # one token a chunk, uneven chunks, one chunk, a chunk longer than N
TOL = 1e-10  # float64, the same sums in another order (seen: ~1e-15)


def gates(q, seed=1):
    """Random per-step log-decays in [−0.7, 0] (a_t ∈ [0.5, 1]) and write strengths in [0.1, 1]."""
    g = torch.Generator().manual_seed(seed)
    b, h, n = q.shape[:3]
    log_decay = -0.7 * torch.rand(b, h, n, generator=g, dtype=q.dtype)
    beta = 0.1 + 0.9 * torch.rand(b, h, n, generator=g, dtype=q.dtype)
    return log_decay, beta


def retnet_gammas(h):
    return torch.tensor([1 - 2.0 ** (-5 - i) for i in range(h)], dtype=torch.float64)


# --- the kernels against their references ---------------------------------------------------------

@pytest.mark.parametrize("chunk", CHUNKS)
def test_decay_attention_chunked_equals_loop_and_parallel(chunk):
    q, k, v = make_qkv(n=N)
    log_decay, _ = gates(q)
    loop, states = naive.decay_loop(q, k, v, log_decay)
    parallel, a = naive.decay_parallel(q, k, v, log_decay)
    s = R.scan(k, v, log_decay, None, chunk)
    assert rel_err(parallel, loop) < TOL
    assert rel_err(R.scan_output(q, s), loop) < TOL
    assert rel_err(s.final, states[:, :, -1]) < TOL
    assert rel_err(R.decay_matrix(q, k, log_decay), a) < TOL


@pytest.mark.parametrize("chunk", CHUNKS)
def test_delta_rule_chunked_equals_loop(chunk):
    q, k, v = make_qkv(n=N)
    k = F.normalize(k, dim=-1)
    log_decay, beta = gates(q)
    loop, states = naive.delta_loop(q, k, v, beta, log_decay)
    s = R.scan(k, v, log_decay, beta, chunk)
    assert rel_err(R.scan_output(q, s), loop) < TOL
    assert rel_err(s.final, states[:, :, -1]) < TOL
    # the implicit matrix, chunked (identity values) against the unrolled token-by-token form
    a = naive.delta_matrix_loop(q, k, beta, log_decay)
    assert rel_err(a @ v, loop) < TOL
    assert rel_err(R.delta_rule_matrix(q, k, beta, log_decay, chunk), a) < TOL


def test_chunked_gradients_equal_loop_gradients():
    """The chunked delta rule (triangular solve, masked exps) differentiates like the token loop."""
    q, k, v = make_qkv(b=1, h=2, n=20, d=4, dv=3)
    log_decay, beta = gates(q)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, log_decay, beta)]
    w = torch.randn(1, 2, 20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def grads(fn):
        qq, kk, vv, ld, bb = leaves
        out = fn(qq, F.normalize(kk, dim=-1), vv, bb, ld)
        return torch.autograd.grad((out * w).sum(), leaves)

    chunked = grads(lambda *a: R.delta_rule(*a, chunk=6))
    loop = grads(lambda *a: naive.delta_loop(*a)[0])
    for g1, g2 in zip(chunked, loop):
        assert rel_err(g1, g2) < 1e-9  # float64 gradients through a solve: ~1e-14 seen


# --- RetNet ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_retnet_parallel_recurrent_and_chunkwise_agree(decay):
    q, k, v = make_qkv(n=N)
    r = xviz.run("retnet", q, k, v, decay=decay)
    gam = retnet_gammas(2) if decay == 0 else torch.full((2,), decay, dtype=torch.float64)
    ks = k / math.sqrt(q.shape[-1])  # the paper's k·d^−1/2 (the default logit scale)
    i = torch.arange(N, dtype=torch.float64)
    dist = i[:, None] - i[None, :]
    d = torch.where(dist >= 0, gam[:, None, None] ** dist.clamp_min(0), torch.zeros(()))  # γ^(n−m), n ≥ m
    parallel = ((q @ ks.mT) * d) @ v
    recurrent, _ = naive.decay_loop(q, ks, v, gam.log()[None, :, None].expand(2, 2, N))
    assert rel_err(parallel, recurrent) < TOL
    assert rel_err(r.out, parallel) < TOL
    assert rel_err(r.matrix(), (q @ ks.mT) * d) < TOL
    assert r.causal


def test_recurrences_run_causally_whatever_is_asked():
    q, k, v = make_qkv(n=N)
    for name in RECURRENCES:
        a, b = xviz.run(name, q, k, v, causal=False), xviz.run(name, q, k, v, causal=True)
        assert a.causal and torch.equal(a.out, b.out), name


# --- decayed linear attention ---------------------------------------------------------------------

def test_decayed_linear_without_decay_is_causal_linear_attention():
    q, k, v = make_qkv(n=N)
    mine, linear = xviz.run("decayed_linear", q, k, v, decay=1.0), xviz.run("linear", q, k, v, causal=True)
    assert rel_err(mine.out, linear.out) < TOL
    assert rel_err(mine.matrix(), linear.matrix()) < TOL


def test_decayed_linear_is_the_normalised_decayed_loop():
    q, k, v = make_qkv(n=N)
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    log_decay = retnet_gammas(2).log()[None, :, None].expand(2, 2, N)
    num, _ = naive.decay_loop(phi_q, phi_k, v, log_decay)
    den, _ = naive.decay_loop(phi_q, phi_k, torch.ones_like(v[..., :1]), log_decay)
    r = xviz.run("decayed_linear", q, k, v)
    assert rel_err(r.out, num / den) < TOL
    a = r.matrix()
    assert a.min() >= 0 and (a.sum(-1) - 1).abs().max() < 1e-12  # a distribution per row


# --- DeltaNet and Gated DeltaNet ------------------------------------------------------------------

def test_deltanet_is_the_delta_rule_on_normalised_inputs():
    q, k, v = make_qkv(n=N)
    qn, kn = F.normalize(q, dim=-1) / math.sqrt(q.shape[-1]), F.normalize(k, dim=-1)
    beta = torch.full((2, 2, N), 0.7, dtype=torch.float64)
    loop, _ = naive.delta_loop(qn, kn, v, beta, torch.zeros_like(beta))
    assert rel_err(xviz.run("deltanet", q, k, v, beta=0.7).out, loop) < TOL
    gated, _ = naive.delta_loop(qn, kn, v, beta, retnet_gammas(2).log()[None, :, None].expand(2, 2, N))
    assert rel_err(xviz.run("gated_deltanet", q, k, v, beta=0.7).out, gated) < TOL


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_gated_deltanet_without_decay_is_deltanet(beta):
    q, k, v = make_qkv(n=N)
    gated, plain = xviz.run("gated_deltanet", q, k, v, decay=1.0, beta=beta), xviz.run("deltanet", q, k, v, beta=beta)
    assert rel_err(gated.out, plain.out) < 1e-14  # the same kernel with log-decay 0: equal up to rounding
    assert rel_err(gated.matrix(), plain.matrix()) < 1e-14
    assert not torch.equal(xviz.run("gated_deltanet", q, k, v, decay=0.9, beta=beta).out, plain.out)


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
def test_delta_rule_matrix_is_signed_lower_triangular_and_reproduces_out(name):
    q, k, v = make_qkv(n=N)
    r = xviz.run(name, q, k, v)
    a = r.matrix()
    assert a.triu(1).abs().max() == 0  # reads only the past
    # a generic input erases part of earlier writes: some weights are negative, clearly (not rounding)
    assert a.min() < -1e-3 * a.abs().max()
    assert rel_err(a @ v, r.out) < TOL


# --- Mamba-2 (SSD) --------------------------------------------------------------------------------

def below_diagonal_ranks(m, tol=1e-9):
    """Numerical rank of every block M[r:, :r] (rows from r on, columns before r), per head."""
    ranks = []
    for r in range(1, m.shape[-1]):
        s = torch.linalg.svdvals(m[..., r:, :r])
        ranks.append(int((s > tol * s[..., :1]).sum(-1).max()))
    return ranks


@pytest.mark.parametrize("gate", ["selective", "fixed"])
def test_mamba2_matrix_is_lower_triangular_and_semiseparable(gate):
    state_size = 4
    q, k, v = make_qkv(n=32, d=state_size)
    m = xviz.run("mamba2", q, k, v, gate=gate, seed=3).matrix()
    assert m.triu(1).abs().max() == 0
    # rank ≤ the state size (1e-9 of the block's largest singular value: float64 SVD rounding ~1e-15)
    assert max(below_diagonal_ranks(m)) <= state_size
    # the test can fail: the softmax matrix of the same inputs is not semiseparable at that rank
    assert max(below_diagonal_ranks(xviz.run("exact", q, k, v, causal=True).matrix())) > state_size


def test_mamba2_selective_decay_is_the_recurrence_of_its_own_decays():
    q, k, v = make_qkv(n=N)
    r = xviz.run("mamba2", q, k, v, seed=7)
    decay = r.artifacts["decay"]
    assert decay.min() > 0 and decay.max() < 1 and decay.std(-1).min() > 0  # selective: varies per step
    step = r.artifacts["step"]
    assert torch.allclose(decay, torch.exp(-step), rtol=1e-14)  # a_t = exp(−Δ_t·A), A = 1
    loop, _ = naive.decay_loop(q / math.sqrt(q.shape[-1]), k * step[..., None], v, decay.log())
    assert rel_err(r.out, loop) < TOL
    assert not torch.equal(r.out, xviz.run("mamba2", q, k, v, seed=8).out)  # the seed draws the projection


def test_mamba2_with_fixed_decays_is_retnet_times_its_step():
    q, k, v = make_qkv(n=N)
    step = -torch.log(retnet_gammas(q.shape[1]))[:, None, None]  # Δ_h = −log γ_h scales each head's input
    assert rel_err(xviz.run("mamba2", q, k, v, gate="fixed").out, step * xviz.run("retnet", q, k, v).out) < TOL


@contextlib.contextmanager
def float64_kept():
    """transformers' torch scan casts to float32 with ``.float()``; keep float64 tensors float64 so the
    outside reference runs at float64 (nothing else changes in its arithmetic)."""
    original = torch.Tensor.float
    torch.Tensor.float = lambda self, *a, **kw: self if self.dtype == torch.float64 else original(self, *a, **kw)
    try:
        yield
    finally:
        torch.Tensor.float = original


@pytest.mark.parametrize("gate", ["selective", "fixed"])
@pytest.mark.parametrize("n", [37, 130])  # one partial chunk; several chunks of the reference's 64
def test_mamba2_is_transformers_mamba2_scan(gate, n):
    """The outside reference: transformers' Mamba-2 torch path (``mamba2_chunk_scan``: x·Δ, A·Δ, the
    SSD chunks), with C = q·scale, B = k, x = v, A = −1 and xviz's own Δ_t (the ``step`` artifact)."""
    from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan

    q, k, v = make_qkv(b=2, h=3, n=n, d=6, dv=5)
    r = xviz.run("mamba2", q, k, v, gate=gate, seed=4)
    dt = r.artifacts["step"]  # (B, H, N)
    with float64_kept():
        ref = mamba2_chunk_scan(v.transpose(1, 2), dt.transpose(1, 2), -torch.ones(3, dtype=torch.float64),
                                k.transpose(1, 2), (q / math.sqrt(6)).transpose(1, 2), chunk_size=64)
    assert ref.dtype == torch.float64
    assert rel_err(r.out, ref.transpose(1, 2)) < TOL
    # the test can fail: the input not scaled by Δ (the earlier form) is far from the reference
    unscaled = xviz.run("decayed_linear", q, k, v, decay=0.5)  # any other recurrence
    assert rel_err(unscaled.out, ref.transpose(1, 2)) > 0.1
    # Δ enters as the input's weight: a token with a vanishing step is not written
    assert rel_err(r.matrix() @ v, r.out) < TOL


# --- precision, parameters, cost ------------------------------------------------------------------

@pytest.mark.parametrize("name", RECURRENCES)
def test_bfloat16_inputs_give_finite_outputs_close_to_float32(name):
    q, k, v = make_qkv(b=1, h=2, n=300, d=16, dtype=torch.float32)  # several chunks
    r16 = xviz.run(name, q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert r16.out.dtype == torch.bfloat16 and torch.isfinite(r16.out.float()).all()
    # bf16 keeps 8 bits: inputs and output rounded at ~0.4 % each, computed in float32 in between.
    assert rel_err(r16.out, xviz.run(name, q, k, v).out) < 5e-2


@pytest.mark.parametrize("name, params", [("deltanet", {"beta": 0.0}), ("gated_deltanet", {"beta": 0.0}),
                                          ("retnet", {"decay": 1.5}), ("gated_deltanet", {"decay": -0.1}),
                                          ("mamba2", {"gate": "learned"})])
def test_bad_parameters_are_refused_by_name(name, params):
    q, k, v = make_qkv(n=8)
    with pytest.raises(xviz.ParameterError, match=next(iter(params))):
        xviz.run(name, q, k, v, **params)


@pytest.mark.parametrize("name", RECURRENCES)
def test_cost_is_linear_in_n(name):
    spec = xviz.get_variant(name)
    small, large = (spec.cost_at(Shape(1, 4, n, 64, 64, causal=True)) for n in (4096, 8192))
    # linear time and memory: doubling N doubles both (the per-chunk states are a fixed share)
    assert 1.9 < large.flops / small.flops < 2.1 and 1.9 < large.bytes / small.bytes < 2.1


def test_kernel_refuses_a_chunk_below_one():
    q, k, v = make_qkv(n=8)
    with pytest.raises(ValueError, match="chunk"):
        R.decay_attention(q, k, v, torch.zeros(2, 2, 8, dtype=torch.float64), chunk=0)


def test_implicit_matrices_built_in_blocks_equal_the_references(monkeypatch):
    monkeypatch.setattr(R, "MATRIX_BLOCK", 7)  # several row / column blocks, the last one short
    q, k, v = make_qkv(n=N)
    kn = F.normalize(k, dim=-1)
    log_decay, beta = gates(q)
    assert rel_err(R.decay_matrix(q, k, log_decay), naive.decay_parallel(q, k, v, log_decay)[1]) < TOL
    assert rel_err(R.delta_rule_matrix(q, kn, beta, log_decay), naive.delta_matrix_loop(q, kn, beta, log_decay)) < TOL
