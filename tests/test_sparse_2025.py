"""Identities of the 2023–2026 sparse attention: attention sinks, NSA, MoBA — and MLA's latent KV.

Each fast path (gather-free blocks, block dispatch, one-pass compressed scores) is held to a naive
reference written from the paper's definition: loops over queries and blocks, dense masks. Inputs
are float64, so "equal" means equal up to summation order (relative error below 1e-12) unless
stated; random float64 inputs have no ties, so a top-k choice is the same in both.
"""
import math
import sys
from pathlib import Path

import pytest
import torch

import xviz
from xviz.analysis.check import rel_err
from xviz.variants.mla import stacked

from .conftest import make_qkv
from .plugins import fresh

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-12  # float64, same weights in another summation order


def masked(q, k, v, mask):
    logits = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
    return torch.nan_to_num(torch.softmax(logits, -1), nan=0.0) @ v


# --- attention sinks ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sink_plugin():
    sys.path.insert(0, str(ROOT / "examples"))
    fresh("sink_window")
    yield
    xviz.unregister_variant("sink_window")
    sys.path.remove(str(ROOT / "examples"))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("sinks,window", [(0, 1), (4, 3), (10, 5), (3, 47), (48, 2)])
def test_sinks_builtin_equals_the_plugin(sink_plugin, causal, sinks, window):
    q, k, v = make_qkv(n=48)
    mine = xviz.run("sinks", q, k, v, causal=causal, sinks=sinks, window=window)
    plugin = xviz.run("sink_window", q, k, v, causal=causal, sinks=sinks, window=window)
    assert rel_err(mine.out, plugin.out) < TOL
    assert torch.equal(mine.artifacts["mask"], plugin.artifacts["mask"])
    assert rel_err(mine.matrix(), plugin.matrix()) < TOL


# --- MoBA -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [1, 5, 16, 48])
def test_moba_with_every_block_is_exact(causal, block):
    q, k, v = make_qkv(n=48)
    r = xviz.run("moba", q, k, v, causal=causal, block=block, top_k=48)
    assert rel_err(r.out, xviz.run("exact", q, k, v, causal=causal).out) < TOL


def naive_moba_blocks(q, k, block, top_k, causal):
    """Per query: gate = q · mean key of each block; causal: own block first, later blocks out."""
    n = q.shape[0]
    nb = -(-n // block)
    means = [k[..., j * block:(j + 1) * block, :].mean(-2) for j in range(nb)]
    chosen = []
    for i in range(n):
        own = i // block
        scores = {j: float(q[i] @ means[j]) for j in range(nb) if not causal or j <= own}
        if causal:
            scores[own] = float("inf")
        chosen.append(set(sorted(scores, key=scores.get, reverse=True)[:top_k]))
    return chosen


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block,top_k", [(4, 2), (7, 3), (10, 1), (3, 6)])
def test_moba_routes_like_the_paper(causal, block, top_k):
    q, k, v = make_qkv(b=1, h=2, n=41)
    r = xviz.run("moba", q, k, v, causal=causal, block=block, top_k=top_k)
    sel = r.artifacts["selected_blocks"]
    for hi in range(2):
        ref = naive_moba_blocks(q[0, hi], k[0, hi], block, top_k, causal)
        assert [set(row) - {-1} for row in sel[0, hi].tolist()] == ref
    assert rel_err(r.out, masked(q, k, v, r.artifacts["mask"])) < TOL
    if causal:
        assert not r.artifacts["mask"].triu(1).any()


# --- NSA -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("select_block", [1, 6, 48])
def test_nsa_selecting_every_block_with_only_that_gate_is_exact(causal, select_block):
    q, k, v = make_qkv(n=48)
    r = xviz.run("nsa", q, k, v, causal=causal, select_block=select_block, top_n=48, gate_compressed=0.0,
                 gate_window=0.0)
    assert rel_err(r.out, xviz.run("exact", q, k, v, causal=causal).out) < TOL


def block_means_naive(x, l, stride):
    n = x.shape[-2]
    starts = [0] + list(range(stride, n, stride))
    out, spans = [], []
    for s in starts:
        out.append(x[..., s:min(n, s + l), :].mean(-2))
        spans.append((s, min(n, s + l)))
        if s + l >= n:
            break
    return torch.stack(out, -2), spans


def naive_nsa_selection(q, k, l, stride, ls, top_n, causal, scale):
    """Compressed scores p_cmp, then importance_j = Σ_b p_cmp[b]·|block_b ∩ [j·l′, (j+1)·l′)|, the
    initial, previous and own blocks forced (own first), causal: no later block."""
    n = q.shape[-2]
    kc, spans = block_means_naive(k, l, stride)
    nsel = -(-n // ls)
    chosen = []
    for i in range(n):
        ok = [not causal or e - 1 <= i for (_, e) in spans]
        logits = torch.tensor([float(q[i] @ kc[b]) * scale if ok[b] else -math.inf for b in range(len(spans))])
        p = torch.softmax(logits, 0) if any(ok) else torch.zeros(len(spans))
        own = i // ls
        imp = {}
        for j in range(nsel):
            if causal and j > own:
                continue
            imp[j] = sum(float(p[b]) * max(0, min(e, (j + 1) * ls) - max(s, j * ls)) for b, (s, e) in enumerate(spans))
        imp[0], imp[max(own - 1, 0)], imp[own] = 1e30, 2e30, math.inf
        chosen.append(set(sorted(imp, key=imp.get, reverse=True)[:top_n]))
    return chosen


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("l,stride,ls,top_n", [(8, 4, 8, 3), (6, 3, 4, 4), (5, 5, 7, 2), (9, 2, 3, 5)])
def test_nsa_selects_blocks_by_the_compressed_scores(causal, l, stride, ls, top_n):
    q, k, v = make_qkv(b=1, h=2, n=37)
    r = xviz.run("nsa", q, k, v, causal=causal, compress_block=l, compress_stride=stride, select_block=ls, top_n=top_n)
    sel = r.artifacts["selected_blocks"]
    for hi in range(2):
        ref = naive_nsa_selection(q[0, hi], k[0, hi], l, stride, ls, top_n, causal, 1 / math.sqrt(8))
        assert [set(row) - {-1} for row in sel[0, hi].tolist()] == ref


@pytest.mark.parametrize("causal", [False, True])
def test_nsa_is_the_gated_mix_of_its_three_branches(causal):
    """Each branch alone (its gate on, the others 0) against its own reference, then the mix with
    gates (1, 0.5, 0.25): out = Σ g_c·o_c / Σ g_c, the compressed branch left out of rows before
    its first block completes (causal)."""
    n, l, stride, ls, w = 40, 8, 4, 6, 5
    q, k, v = make_qkv(n=n)
    kw = dict(causal=causal, compress_block=l, compress_stride=stride, select_block=ls, top_n=2, window=w)
    only = lambda c, s, g: xviz.run("nsa", q, k, v, gate_compressed=c, gate_selected=s, gate_window=g, **kw)  # noqa: E731
    o_cmp, o_slc, o_win = only(1.0, 0.0, 0.0), only(0.0, 1.0, 0.0), only(0.0, 0.0, 1.0)
    kc, spans = block_means_naive(k, l, stride)
    vc, _ = block_means_naive(v, l, stride)
    ends = torch.tensor([e - 1 for _, e in spans])
    keep = (ends[None, :] <= torch.arange(n)[:, None]) if causal else torch.ones(n, len(spans), dtype=torch.bool)
    assert rel_err(o_cmp.out, masked(q, kc, vc, keep)) < TOL
    assert rel_err(o_slc.out, masked(q, k, v, o_slc.artifacts["branch_masks"][1])) < TOL
    j = torch.arange(n)
    win = ((j[:, None] - j[None, :]).abs() <= w) & ((j[None, :] <= j[:, None]) | (not causal))
    assert rel_err(o_win.out, masked(q, k, v, win)) < TOL
    mix = only(1.0, 0.5, 0.25)
    has_cmp = keep.any(-1).to(q.dtype)[:, None]
    ref = (has_cmp * o_cmp.out + 0.5 * o_slc.out + 0.25 * o_win.out) / (has_cmp + 0.75)
    assert rel_err(mix.out, ref) < TOL
    assert rel_err(mix.matrix() @ v, mix.out) < TOL


def test_nsa_causal_reads_complete_compression_blocks_only():
    """Eq. 7: query t reads compressed block i once i·δ + l ≤ t + 1. At N = 5 with blocks of 2 (stride 2),
    the block [4, 6) is cut by the end of the sequence: row 4 must not read key 4 as a one-token block."""
    q, k, v = make_qkv(n=5)
    params = dict(compress_block=2, compress_stride=2, select_block=2, top_n=1, window=0)
    r = xviz.run("nsa", q, k, v, causal=True, **params)
    compressed = r.artifacts["branch_masks"][0]  # (B, H, N, N): the keys the compressed branch covers
    assert compressed[..., 4, :4].all() and not compressed[..., 4, 4].any()
    assert not compressed[..., 0, :].any()  # no block is complete before t = 1
    # appending a token completes the block; row 4 is unchanged, row 5 reads it
    q6, k6, v6 = make_qkv(n=6)
    r6 = xviz.run("nsa", q6, k6, v6, causal=True, **params)
    assert rel_err(r6.out[:, :, :5], xviz.run("nsa", q6[:, :, :5], k6[:, :, :5], v6[:, :, :5], causal=True,
                                               **params).out) < 1e-12  # float64, the same sums
    assert r6.artifacts["branch_masks"][0][..., 5, 4:6].all()


def test_nsa_refuses_all_gates_off():
    q, k, v = make_qkv(n=20)
    with pytest.raises(xviz.ParameterError, match="gate"):
        xviz.run("nsa", q, k, v, gate_compressed=0.0, gate_selected=0.0, gate_window=0.0)


# --- MLA -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,d,dv", [(1, 8, 8), (3, 4, 6), (4, 8, 2)])
def test_mla_at_full_rank_is_exact(h, d, dv):
    q, k, v = make_qkv(h=h, n=40, d=d, dv=dv)
    r = xviz.run("mla", q, k, v, rank=h * (d + dv))
    # float64 eigendecomposition of the Gram matrix: the reconstruction is exact to ~cond·1e-16
    assert rel_err(r.out, xviz.run("exact", q, k, v).out) < 1e-10
    assert int(r.artifacts["latent_dim"]) == h * (d + dv)


@pytest.mark.parametrize("rank", [1, 5, 20])
def test_mla_latent_is_the_best_rank_r_reconstruction(rank):
    """Eckart–Young: ‖X − X̂‖² = Σ_{i>r} σᵢ², the energy the top r directions miss."""
    q, k, v = make_qkv(b=1, h=2, n=40)
    r = xviz.run("mla", q, k, v, rank=rank)
    x = stacked(k, v)[0]
    sv = torch.linalg.svdvals(x)
    latent = r.artifacts["latent"][0]  # (N, r): coordinates in an orthonormal basis
    kept = (latent ** 2).sum()
    assert abs(kept / (sv[:rank] ** 2).sum() - 1) < 1e-10
    assert abs(r.artifacts["energy"][0, rank - 1] - (sv[:rank] ** 2).sum() / (sv ** 2).sum()) < 1e-10


def test_mla_mixes_heads_and_reports_kv_bytes():
    q, k, v = make_qkv(b=1, h=4, n=40)
    r = xviz.run("mla", q, k, v, rank=6)
    k2 = k.clone()
    k2[:, 1] += 1.0
    assert rel_err(xviz.run("mla", q, k2, v, rank=6).out[:, 0], r.out[:, 0]) > 1e-6  # one latent for all heads
    mha, gqa, mqa, mla = r.artifacts["kv_bytes_per_token"].tolist()
    assert (mha, gqa, mqa, mla) == (8 * 4 * 19, 8 * 1 * 19, 8 * 19, 8 * 6)  # float64: 8 bytes; d + dv = 19
