"""Identities of the survey's memory / recurrence models: Transformer-XL, the Compressive Transformer,
Set Transformer ISAB, ETC global–local and the Image Transformer's 2-D local attention.

The registry suite checks shapes, dtypes, matrix() @ v == out, causality, rows, seeds and the
declared exact limits for every variant; these tests check each mechanism against an independent
naive reference (loops over positions, segments or grid cells) and the limits derived in the
modules' docstrings. Inputs are float64, so "equal" means equal up to summation order: relative
error below 1e-12 unless stated.
"""
import math

import pytest
import torch

import xviz
from xviz.analysis.check import rel_err
from xviz.core.engine import generator
from xviz.kernels.dense import dense_weights
from xviz.kernels.global_tokens import segment_tokens
from xviz.kernels.segments_memory import Relative, memory_part
from xviz.variants.compressive import _SALT as CONV_SALT
from xviz.variants.isab import isab_attention
from xviz.variants.transformer_xl import sinusoid

from .conftest import make_qkv

TOL = 1e-12  # float64, same weights in another summation order


def softmax_rows(logits_rows, values_rows):
    """out for one query from a list of logits and the matching values (the naive reference)."""
    w = torch.softmax(torch.stack(logits_rows), 0)
    return (w[:, None] * torch.stack(values_rows)).sum(0)


# --- Transformer-XL ------------------------------------------------------------------------------

@pytest.mark.parametrize("segment", [1, 5, 16, 48])
@pytest.mark.parametrize("n", [48, 50])
def test_txl_without_memory_is_blocked_local_within_segments(segment, n):
    q, k, v = make_qkv(n=n)
    txl = xviz.run("transformer_xl", q, k, v, segment=min(segment, n), mem=0)
    local = xviz.run("blocked_local", q, k, v, block=min(segment, n), look_back=0, causal=True)
    assert rel_err(txl.out, local.out) < TOL
    assert torch.equal(txl.artifacts["mask"][0, 0], local.artifacts["mask"][0, 0])


def naive_txl(q, k, v, segment, mem, scale, rel=None):
    b, h, n, _ = q.shape
    out = torch.zeros(b, h, n, v.shape[-1], dtype=q.dtype)
    for bi in range(b):
        for hi in range(h):
            for i in range(n):
                first = max(0, (i // segment) * segment - mem)
                logits, values = [], []
                for j in range(first, i + 1):
                    s = q[bi, hi, i] @ k[bi, hi, j]
                    if rel is not None:  # (b) + (d): (q_i + w)·W_R R_{i−j}; (c): u·k_j
                        s = s + (q[bi, hi, i] + rel.w[hi]) @ rel.pos[hi, i - j] + rel.u[hi] @ k[bi, hi, j]
                    logits.append(s * scale)
                    values.append(v[bi, hi, j])
                out[bi, hi, i] = softmax_rows(logits, values)
    return out


@pytest.mark.parametrize("segment,mem", [(4, 0), (4, 3), (5, 9), (7, 20), (20, 20)])
@pytest.mark.parametrize("relative", [False, True])
def test_txl_kernel_matches_a_loop_over_queries(segment, mem, relative):
    q, k, v = make_qkv(b=1, h=2, n=22, d=4)
    g = torch.Generator().manual_seed(1)
    rel = Relative(torch.randn(2, segment + mem, 4, generator=g, dtype=torch.float64),
                   torch.randn(2, 4, generator=g, dtype=torch.float64),
                   torch.randn(2, 4, generator=g, dtype=torch.float64)) if relative else None
    out, _ = memory_part(q, k, v, 0.5, segment, mem, rel)
    assert rel_err(out, naive_txl(q, k, v, segment, mem, 0.5, rel)) < TOL


def test_txl_sinusoid_is_the_transformer_encoding():
    r = sinusoid(7, 6)
    for delta in range(7):
        for i in range(3):
            f = 1 / 10000 ** (2 * i / 6)
            assert math.isclose(r[delta, i], math.sin(delta * f), abs_tol=1e-15)
            assert math.isclose(r[delta, 3 + i], math.cos(delta * f), abs_tol=1e-15)


def test_txl_relative_terms_change_the_output_and_use_the_seed():
    q, k, v = make_qkv(n=40)
    plain = xviz.run("transformer_xl", q, k, v, segment=8, mem=8)
    rel = xviz.run("transformer_xl", q, k, v, segment=8, mem=8, relative="sinusoidal", seed=1)
    rel2 = xviz.run("transformer_xl", q, k, v, segment=8, mem=8, relative="sinusoidal", seed=2)
    assert rel_err(rel.out, plain.out) > 1e-3 and rel_err(rel.out, rel2.out) > 1e-3
    assert rel.artifacts["relative_encoding"].shape == (2, 16, 8)  # (H, mem + L, d)
    assert torch.equal(rel.artifacts["mask"], plain.artifacts["mask"])  # positions change weights, not keys


def test_txl_always_runs_causally():
    q, k, v = make_qkv(n=30)
    asked = xviz.run("transformer_xl", q, k, v, segment=6, mem=6, causal=False)
    assert asked.causal and torch.equal(asked.out, xviz.run("transformer_xl", q, k, v, segment=6, mem=6, causal=True).out)
    span = asked.artifacts["memory_span"]
    assert span.tolist() == [min(6 * (i // 6), 6) for i in range(30)]


# --- Compressive Transformer --------------------------------------------------------------------

@pytest.mark.parametrize("compression", ["mean", "conv", "max"])
@pytest.mark.parametrize("segment,mem", [(6, 0), (6, 4), (8, 13)])
def test_compressive_without_slots_is_transformer_xl(compression, segment, mem):
    q, k, v = make_qkv(n=41)
    comp = xviz.run("compressive", q, k, v, segment=segment, mem=mem, slots=0, rate=3, compression=compression)
    txl = xviz.run("transformer_xl", q, k, v, segment=segment, mem=mem)
    assert rel_err(comp.out, txl.out) < TOL


def naive_compressive(q, k, v, segment, mem, rate, slots, how, taps, scale):
    """The paper's procedure step by step: attend [compressed FIFO ; raw memory ; segment], then
    evict the oldest positions beyond ``mem`` and compress them, rate at a time, counted from the
    start of the evicted chunk (positions before 0 are absent; a short group's taps renormalise)."""
    b, h, n, _ = q.shape
    out = torch.zeros(b, h, n, v.shape[-1], dtype=q.dtype)
    fifo = []  # compressed slots (k, v) or None (a slot made only of positions before 0)
    for s in range(-(-n // segment)):
        lo, hi = s * segment, min(n, (s + 1) * segment)
        held = [x for x in fifo[-slots:] if x is not None] if slots else []
        for i in range(lo, hi):
            keys = [x[0] for x in held] + [k[:, :, j] for j in range(max(0, lo - mem), i + 1)]
            vals = [x[1] for x in held] + [v[:, :, j] for j in range(max(0, lo - mem), i + 1)]
            logits = torch.stack([(q[:, :, i] * kk).sum(-1) * scale for kk in keys], -1)
            out[:, :, i] = (torch.softmax(logits, -1)[..., None] * torch.stack(vals, -2)).sum(-2)
        start = s * segment - mem  # chunk s is evicted after step s
        for g0 in range(start, start + segment, rate):
            group = [j for j in range(g0, min(g0 + rate, start + segment)) if 0 <= j < n]
            if not group:
                fifo.append(None)
                continue
            if how == "max":
                fifo.append((k[:, :, group].amax(2), v[:, :, group].amax(2)))
            else:
                w = torch.stack([taps[j - g0] for j in group])
                w = (w / w.sum())[:, None]
                fifo.append(((k[:, :, group] * w).sum(2), (v[:, :, group] * w).sum(2)))
    return out


@pytest.mark.parametrize("compression", ["mean", "conv", "max"])
@pytest.mark.parametrize("segment,mem,rate,slots", [(6, 4, 2, 3), (6, 0, 4, 2), (5, 7, 3, 10), (8, 8, 8, 1)])
def test_compressive_matches_the_step_by_step_procedure(compression, segment, mem, rate, slots):
    q, k, v = make_qkv(b=1, h=2, n=37, d=4)
    r = xviz.run("compressive", q, k, v, segment=segment, mem=mem, rate=rate, slots=slots, compression=compression,
                 seed=3)
    taps = torch.softmax(torch.randn(rate, generator=generator(3, CONV_SALT), dtype=torch.float64), 0) \
        if compression == "conv" else torch.ones(rate, dtype=torch.float64)
    ref = naive_compressive(q, k, v, segment, mem, rate, slots, compression, taps, 1 / math.sqrt(4))
    assert rel_err(r.out, ref) < TOL


def test_compressive_memory_kind_marks_raw_and_compressed_keys():
    q, k, v = make_qkv(b=1, h=1, n=24)
    r = xviz.run("compressive", q, k, v, segment=8, mem=6, rate=4, slots=2)
    assert r.artifacts["slot_of_token"][:10].tolist() == [1, 1, 2, 2, 2, 2, 3, 3, 3, 3]  # chunk 0 is [−6, 2)
    row = r.artifacts["memory_kind"][20].tolist()
    # slots 2, 3 (tokens 2–9) compressed, tokens 10–15 raw memory, 16–20 own segment, the rest unseen
    assert row == [0, 0] + [3] * 8 + [2] * 6 + [1] * 5 + [0] * 3
    with pytest.raises(xviz.BudgetError, match="no effective attention matrix"):
        xviz.run("compressive", q, k, v, compression="max").matrix()


# --- Set Transformer ISAB ---------------------------------------------------------------------

def test_isab_matrix_has_rank_at_most_m():
    q, k, v = make_qkv(b=1, h=1, n=40)
    for m in (1, 3, 7):
        a = xviz.run("isab", q, k, v, inducing=m).matrix()[0, 0]
        assert torch.linalg.matrix_rank(a).item() <= m


def dual_points(k, alpha, scale):
    """Inducing points with I Kᵀ·scale = α·Id (d ≥ N): the dual basis of the keys, scaled."""
    kk = k[0, 0]
    return (alpha * torch.linalg.solve(kk @ kk.T, kk) / scale)[None, None]


@pytest.mark.parametrize("alpha", [15.0, 20.0, 25.0])
def test_isab_with_identity_like_points_tends_to_exact(alpha):
    """S = softmax(α·Id) = ((e^α − 1)·Id + J)/(e^α + N − 1) exactly, and the output error falls like
    e^{−α} (the off-diagonal weights are e^{−α}-small): once α ≥ 10, where the e^{−2α} terms no longer
    count, the ratio of errors 5 apart is e^{−5} to 1%."""
    n, d = 6, 8
    q, k, v = make_qkv(b=1, h=1, n=n, d=d)
    scale = 1 / math.sqrt(d)
    exact = dense_weights(q, k, scale, False) @ v
    out, _, s = isab_attention(q, k, v, dual_points(k, alpha, scale), scale)
    closed = ((math.exp(alpha) - 1) * torch.eye(n, dtype=q.dtype) + 1) / (math.exp(alpha) + n - 1)
    assert rel_err(s[0, 0], closed) < 1e-12
    worse, _, _ = isab_attention(q, k, v, dual_points(k, alpha - 5, scale), scale)
    ratio = rel_err(out, exact) / rel_err(worse, exact)
    assert abs(ratio / math.exp(-5) - 1) < 0.01


def test_isab_with_a_key_read_twice_is_not_exact():
    """m = N + 1 with the extra point a copy of the first: key 0 is a slot twice, so its weight
    doubles; the error stays O(1) however sharp the points are."""
    q, k, v = make_qkv(b=1, h=1, n=6, d=8)
    scale = 1 / math.sqrt(8)
    pts = dual_points(k, 30.0, scale)
    out, _, _ = isab_attention(q, k, v, torch.cat([pts, pts[:, :, :1]], 2), scale)
    assert rel_err(out, dense_weights(q, k, scale, False) @ v) > 1e-2


def test_isab_kmeans_points_are_centroids_of_the_keys():
    q, k, v = make_qkv(b=2, h=2, n=40)
    r = xviz.run("isab", q, k, v, inducing=4, placement="kmeans")
    pts = r.artifacts["inducing_points"]
    assert pts.shape == (2, 2, 4, 8)
    ids = torch.cdist(k, pts).argmin(-1)  # after Lloyd's iterations, each centroid ≈ its members' mean
    for c in range(4):
        members = ids[0, 0] == c
        if members.any():
            assert torch.allclose(pts[0, 0, c], k[0, 0, members].mean(0), atol=0.2)


# --- ETC -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("g", [1, 5, 16])
def test_etc_full_radius_is_exact_over_keys_and_global_tokens(g):
    q, k, v = make_qkv(n=48)
    r = xviz.run("etc", q, k, v, radius=48, num_global=g)
    kg, vg = segment_tokens(k, g)[0], segment_tokens(v, g)[0]
    assert rel_err(r.out, xviz.run("exact", q, torch.cat([k, kg], -2), torch.cat([v, vg], -2)).out) < TOL


def test_etc_one_global_token_per_position_at_full_radius_is_exact():
    q, k, v = make_qkv(n=30)
    assert rel_err(xviz.run("etc", q, k, v, radius=30, num_global=30).out, xviz.run("exact", q, k, v).out) < TOL


@pytest.mark.parametrize("radius", [0, 3, 12])
def test_etc_without_globals_is_the_sliding_window(radius):
    q, k, v = make_qkv(n=40)
    ref = xviz.run("sliding_window", q, k, v, window=radius).out if radius else v
    assert rel_err(xviz.run("etc", q, k, v, radius=radius, num_global=0).out, ref) < TOL


@pytest.mark.parametrize("radius,g", [(2, 3), (7, 4), (0, 9)])
def test_etc_matches_a_loop_over_queries(radius, g):
    q, k, v = make_qkv(b=1, h=2, n=27)
    r = xviz.run("etc", q, k, v, radius=radius, num_global=g)
    (kg, seg), vg = segment_tokens(k, g), segment_tokens(v, g)[0]
    for t in range(g):  # the global tokens are segment means
        assert torch.allclose(kg[0, 0, t], k[0, 0, seg == t].mean(0), atol=1e-14)
    scale = 1 / math.sqrt(8)
    for hi in range(2):
        for i in range(27):
            js = [j for j in range(27) if abs(i - j) <= radius]
            logits = [q[0, hi, i] @ k[0, hi, j] * scale for j in js] + [q[0, hi, i] @ kg[0, hi, t] * scale for t in range(g)]
            values = [v[0, hi, j] for j in js] + [vg[0, hi, t] for t in range(g)]
            assert rel_err(r.out[0, hi, i], softmax_rows(logits, values)) < TOL
    pieces = r.artifacts["pieces"]
    assert (pieces[:g, :g] == 1).all() and (pieces[:g, g:] == 2).all() and (pieces[g:, :g] == 3).all()
    assert int((pieces[g:, g:] == 4).sum()) == sum(min(26, i + radius) - max(0, i - radius) + 1 for i in range(27))


# --- Image Transformer 2-D local ---------------------------------------------------------------

def naive_grid_mask(n, width, bh, bw, mh, mw, causal):
    rows = -(-n // width)
    bh, bw = min(bh, rows), min(bw, width)
    generated = block_raster(width, bh, bw)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        r, c = divmod(i, width)
        r0, c0 = (r // bh) * bh, (c // bw) * bw
        for j in range(n):
            rj, cj = divmod(j, width)
            inside = r0 - mh <= rj < r0 + bh + (0 if causal else mh) and c0 - mw <= cj < c0 + bw + mw
            mask[i, j] = inside and (not causal or generated(j) <= generated(i))
    return mask


def block_raster(width, bh, bw):
    """The paper's generation order (§3.2): query blocks in raster order of blocks, raster inside one."""
    def generated(p):
        r, c = divmod(p, width)
        return (r // bh, c // bw, r % bh, c % bw)
    return generated


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("width,bh,bw,mh,mw", [(0, 2, 3, 1, 2), (7, 3, 4, 2, 1), (5, 1, 5, 0, 0), (12, 2, 5, 3, 3),
                                               (1, 4, 1, 2, 0)])
def test_image_2d_mask_and_output_match_the_grid_definition(causal, width, bh, bw, mh, mw):
    n = 50
    q, k, v = make_qkv(n=n)
    r = xviz.run("image_local_2d", q, k, v, causal=causal, width=width, block_rows=bh, block_cols=bw,
                 mem_rows=mh, mem_cols=mw)
    w = width or 8  # ⌈√50⌉
    mask = naive_grid_mask(n, w, bh, bw, mh, mw, causal)
    assert torch.equal(r.artifacts["mask"][0, 0], mask)
    logits = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~mask, float("-inf"))
    assert rel_err(r.out, torch.softmax(logits, -1) @ v) < TOL
    assert int(r.artifacts["grid"][:, 1].max()) == w - 1


def test_image_2d_causal_follows_the_block_raster_order_not_the_token_order():
    """Width 4, blocks 2 × 2, one memory row and column: query 4 (block 0, second row) must not see key 2
    (block 1, first row), which raster order would allow; query 2 (block 1) sees key 5 (block 0, second
    row), which raster order would hide."""
    q, k, v = make_qkv(n=8)
    r = xviz.run("image_local_2d", q, k, v, causal=True, width=4, block_rows=2, block_cols=2, mem_rows=1,
                 mem_cols=1)
    mask = r.artifacts["mask"][0, 0]
    assert not mask[4, 2] and not mask[5, 2]
    assert mask[2, 5] and mask[3, 5]
    assert torch.equal(mask, naive_grid_mask(8, 4, 2, 2, 1, 1, True))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [1, 4, 7])
def test_image_2d_on_one_row_is_1d_blocked_local(causal, block):
    q, k, v = make_qkv(n=45)
    r = xviz.run("image_local_2d", q, k, v, causal=causal, width=45, block_rows=1, block_cols=block,
                 mem_rows=0, mem_cols=block)
    ref = xviz.run("blocked_local", q, k, v, causal=causal, block=block, look_back=1, look_forward=1)
    assert rel_err(r.out, ref.out) < TOL
