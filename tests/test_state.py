"""State analysis (xviz/analysis/state.py) and its figures (xviz/figures/state.py).

Known cases are derived, not recorded: a decay γ on uniform logits gives weights c·γ^(i−j), so
query i reads back exactly min(i, ⌊log τ / log γ⌋) tokens; the delta rule with one repeated unit
key has weights β(α(1 − β))^(i−j)·(q·k) (kᵀ(I − βkkᵀ) = (1 − β)kᵀ), the same case with γ = α(1 − β).
Float64 unless stated; the norms and states are compared with the token loop at 1e-10 (seen ~1e-15).
"""
import json
import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
import torch.nn.functional as F

import xviz
from xviz.analysis import state
from xviz.analysis.check import rel_err
from xviz.figures import state as figs
from xviz.figures.base import DIVERGING
from xviz.kernels import recurrent as R, recurrent_naive as naive

from .conftest import make_qkv

RECURRENCES = ["retnet", "decayed_linear", "deltanet", "gated_deltanet", "mamba2"]
TOL = 1e-10


def uniform_inputs(n=80, h=2, d=4):
    """Every q and k the same positive vector: every logit q·k is the same positive number."""
    q = torch.ones(1, h, n, d, dtype=torch.float64)
    v = torch.randn(1, h, n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return q, q.clone(), v


def predicted_reach(gamma, n, threshold=0.01):
    # γ values below are chosen with log τ / log γ at least 0.03 away from an integer
    return np.minimum(np.arange(n), math.floor(math.log(threshold) / math.log(gamma)))


# --- read_back ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["retnet", "decayed_linear"])
@pytest.mark.parametrize("gamma", [0.9, 0.8, 0.63])
def test_read_back_of_a_decay_on_uniform_logits(name, gamma):
    q, k, v = uniform_inputs()
    s = state.summary(name, q, k, v, decay=gamma)
    assert np.array_equal(s.read_back, np.stack([predicted_reach(gamma, 80)] * 2))
    assert np.allclose(s.decay, gamma, rtol=0, atol=1e-12)
    assert np.allclose(s.decay_reach, math.log(0.01) / math.log(gamma), rtol=1e-12)


@pytest.mark.parametrize("alpha, beta", [(1.0, 0.5), (1.0, 0.2), (0.9, 0.3), (1.0, 1.0)])
def test_read_back_of_the_delta_rule_with_one_repeated_key(alpha, beta):
    q, k, v = uniform_inputs()
    s = state.summary("gated_deltanet", q, k, v, decay=alpha, beta=beta)
    gamma = alpha * (1 - beta)
    expected = np.zeros(80, dtype=int) if gamma == 0 else predicted_reach(gamma, 80)
    assert np.array_equal(s.read_back[0], expected)  # β = 1 overwrites: each query reads only itself


def test_read_back_of_softmax_on_uniform_logits_is_everything():
    q, k, v = uniform_inputs()
    s = state.summary("exact", q, k, v)
    assert not s.recurrent and s.state is None and s.decay is None
    assert np.array_equal(s.read_back, np.stack([np.arange(80)] * 2))


def test_read_back_against_a_row_by_row_definition(monkeypatch):
    a = torch.randn(2, 3, 50, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).tril()
    a = a * torch.logspace(0, -4, 50, dtype=torch.float64)  # weights fading with the key index
    a[0, 0, 7] = 0  # an all-zero row
    monkeypatch.setattr(state, "_ROWS", 7)  # several row blocks, one cut mid-way
    got = state.read_back(a, threshold=0.05)
    for b, h, i in [(0, 0, 0), (0, 0, 7), (0, 1, 13), (1, 2, 49), (1, 0, 30)]:
        row = a[b, h, i, : i + 1].abs()
        kept = torch.nonzero(row >= 0.05 * row.max()).flatten() if row.max() > 0 else []
        expected = i - int(kept[0]) if len(kept) else -1
        assert got[b, h, i].item() == expected


def test_read_back_refuses_bad_arguments():
    with pytest.raises(xviz.ParameterError, match="threshold"):
        state.read_back(torch.eye(4), threshold=1.5)
    with pytest.raises(xviz.ParameterError, match="square"):
        state.read_back(torch.ones(3, 4))


# --- decays, states and their norms ---------------------------------------------------------------

def test_effective_decay_of_the_per_head_defaults():
    q, k, v = make_qkv(b=1, h=4, n=30)
    expected = np.array([1 - 2.0 ** (-5 - h) for h in range(4)])
    for name, params in [("retnet", {}), ("decayed_linear", {}), ("gated_deltanet", {}), ("mamba2", {"gate": "fixed"})]:
        assert np.allclose(state.summary(name, q, k, v, **params).decay, expected, rtol=0, atol=1e-12), name
    s = state.summary("deltanet", q, k, v)
    assert np.all(s.decay == 1) and np.all(np.isinf(s.decay_reach))  # DeltaNet never decays; it overwrites
    sel = state.summary("mamba2", q, k, v)
    # the geometric mean of per-step decays: inside their range, and exp(mean log a_t)
    assert np.all(sel.decay_steps.min(-1) < sel.decay) and np.all(sel.decay < sel.decay_steps.max(-1))
    assert np.allclose(sel.decay, np.exp(np.log(sel.decay_steps).mean(-1)), rtol=1e-12)


@pytest.mark.parametrize("chunk", [1, 5, 64])
@pytest.mark.parametrize("delta", [False, True])
def test_state_norms_equal_the_loop_states(delta, chunk):
    q, k, v = make_qkv(n=40)
    k = F.normalize(k, dim=-1)
    g = torch.Generator().manual_seed(2)
    log_decay, beta = -0.5 * torch.rand(2, 2, 40, generator=g, dtype=torch.float64), torch.rand(2, 2, 40, generator=g,
                                                                                                  dtype=torch.float64)
    if delta:
        _, states = naive.delta_loop(q, k, v, beta, log_decay)
    else:
        _, states = naive.decay_loop(q, k, v, log_decay)
    s = R.scan(k, v, log_decay, beta if delta else None, chunk)
    assert rel_err(R.scan_state_norms(s), states.flatten(-2).norm(dim=-1)) < TOL


@pytest.mark.parametrize("name", RECURRENCES)
def test_state_artifacts_agree_with_prefix_states(name):
    """The state after token t (a prefix run) has the norm the full run reports at t."""
    q, k, v = make_qkv(n=40)
    r = xviz.run(name, q, k, v, seed=3)
    norms = r.artifacts["state_norm"]
    assert norms.shape == (2, 2, 40) and r.artifacts["state"].shape == (2, 2, 8, 11)
    assert rel_err(r.artifacts["state"].flatten(-2).norm(dim=-1), norms[..., -1]) < TOL
    for t in (0, 17, 39):
        st = state.state_at(name, q, k, v, t, seed=3)
        assert rel_err(st.flatten(-2).norm(dim=-1), norms[..., t]) < TOL


def test_state_at_is_the_fast_weight_matrix():
    q, k, v = make_qkv(n=40)
    log_decay = torch.log(R.head_decays(2, 0))[None, :, None].expand(2, 2, 40)
    _, states = naive.decay_loop(q, k / math.sqrt(8), v, log_decay)  # RetNet: k scaled by d^−1/2
    assert rel_err(state.state_at("retnet", q, k, v, 25), states[:, :, 25]) < TOL


# --- summary --------------------------------------------------------------------------------------

def test_summary_of_a_result_reuses_its_parameters():
    q, k, v = make_qkv(n=40)
    r = xviz.run("gated_deltanet", q, k, v, decay=0.8, beta=0.9)
    s = state.summary(r, q, k, v, step=10, batch=1)
    assert s.step == 10 and s.state.shape == (2, 8, 11) and s.state_norm.shape == (2, 40)
    direct = state.state_at("gated_deltanet", q, k, v, 10, decay=0.8, beta=0.9)[1]
    assert np.allclose(s.state, direct.numpy(), rtol=0, atol=1e-12)
    assert np.allclose(s.decay, 0.8, rtol=0, atol=1e-12)
    assert s.read_back.shape == (2, 40) and s.read_back.dtype.kind == "i"


def test_summary_refuses_what_it_cannot_read():
    q, k, v = make_qkv(n=40)
    with pytest.raises(xviz.ParameterError, match="step"):
        state.summary("retnet", q, k, v, step=40)
    with pytest.raises(xviz.ParameterError, match="causal"):
        state.summary("linformer", q, k, v)  # no causal form
    with pytest.raises(xviz.ParameterError, match="causal"):
        state.summary(xviz.run("exact", q, k, v), q, k, v)
    with pytest.raises(xviz.ParameterError, match="state"):
        state.state_at("exact", q, k, v, 3)


def test_summary_without_the_matrix_says_why():
    q, k, v = make_qkv(n=40)
    old = xviz.matrix_budget()
    try:
        xviz.set_matrix_budget(1024)  # far below 2·2·40·40 float64
        s = state.summary("retnet", q, k, v)
    finally:
        xviz.set_matrix_budget(old)
    assert s.read_back is None and "budget" in s.note and s.state_norm is not None


# --- figures --------------------------------------------------------------------------------------

def test_state_figure_is_diverging_and_centred_at_zero():
    st = np.array([[1.0, -3.0], [0.5, 2.0]])
    fig = figs.state_figure(st[None], head=0, step=4)
    hm = fig.data[0]
    assert hm.zmid == 0 and hm.zmin == -3 and hm.zmax == 3
    assert "after token 4" in fig.layout.title.text
    assert hm.colorscale == go.Heatmap(colorscale=DIVERGING).colorscale


def test_summary_figures_draw_every_part():
    q, k, v = make_qkv(b=1, h=3, n=40)
    s = state.summary("mamba2", q, k, v, step=20)
    drawn = figs.summary_figures(s)
    titles = [f.layout.title.text for f in drawn]
    assert len(drawn) == 5  # state, norm, effective decay, per-token decay (selective), read-back
    assert any("after token 20" in t for t in titles)
    assert all(len(f.data) == 3 for f in drawn[1:2])  # one norm line per head
    for f in drawn:
        json.loads(f.to_json())  # serialisable as the app sends it
    fixed = figs.summary_figures(state.summary("retnet", q, k, v))
    assert len(fixed) == 4  # fixed decays: no per-token decay figure
    exact = figs.summary_figures(state.summary("exact", q, k, v))
    assert len(exact) == 1


def test_read_back_figure_marks_finite_predictions():
    fig = figs.read_back_figure(np.array([[0, 1, 2, 3], [0, 1, 1, 1]]), reach=np.array([math.inf, 1.5]))
    assert len(fig.data) == 2
    dashed = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert len(dashed) == 1 and dashed[0].y0 == 1  # ⌊1.5⌋; the infinite reach draws no line
