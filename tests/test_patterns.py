"""Fixed and combined sparse patterns (xviz/patterns.py) and their variants.

Four kinds of test:
* structure: each pattern's dense mask (derived from its block table and predicate) against a
  brute-force formula on the (i, j) grid, counts per row, per-head differences, causal
  lower-triangularity;
* the fast paths: the tiles (and FlexAttention's mask) against the gather reference on the same
  pattern's key lists and against softmax(QKᵀ·scale, −∞ outside the dense mask)·V, for every
  pattern, causal and not, at odd N, and for cross-attention through the rule c(i);
* the variants: ``out``, ``matrix()`` and the mask artifact agree;
* scale: each subquadratic variant at N = 65,536, d = 64, B = H = 1, spot-checked on a few rows.
"""
import math

import pytest
import torch

import xviz
from xviz.analysis.check import rel_err
from xviz.kernels import blocks as B, flex as F, patterns as P, tiles as T

from .conftest import make_qkv


def grid(n):
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    return i, j


def masked_reference(q, k, v, mask, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = (q @ k.transpose(-1, -2) * scale).masked_fill(~mask, float("-inf"))
    return torch.nan_to_num(torch.softmax(logits, -1), nan=0.0) @ v


# ------------------------------------------------------------------ structure


@pytest.mark.parametrize("causal", [False, True])
def test_blocked_local_is_a_block_band(causal):
    n, b, back, fwd = 50, 7, 2, 1
    m = P.dense_mask(P.blocked_local(n, block=b, look_back=back, look_forward=fwd, causal=causal))[0, 0]
    i, j = grid(n)
    delta = j // b - i // b
    expect = (delta >= -back) & (delta <= fwd)
    if causal:
        expect &= j <= i
    assert torch.equal(m, expect)
    if not causal:  # a chunk away from the edges sees (back + fwd + 1)·b keys
        assert m[3 * b].sum().item() == (back + fwd + 1) * b


@pytest.mark.parametrize("causal", [False, True])
def test_dilated_window_keeps_every_delta_th_key(causal):
    n, w, dil = 60, 4, 3
    m = P.dense_mask(P.dilated_window(n, window=w, dilation=dil, causal=causal))[0, 0]
    i, j = grid(n)
    expect = ((i - j).abs() <= dil * w) & ((i - j) % dil == 0)
    if causal:
        expect &= j <= i
    assert torch.equal(m, expect)
    assert m[30].sum().item() == (w + 1 if causal else 2 * w + 1)


def test_dilated_window_per_head_dilations_differ():
    n, w, dil, heads = 60, 3, 3, 4
    m = P.dense_mask(P.dilated_window(n, window=w, dilation=dil, per_head=True, heads=heads), heads=heads)[0]
    assert m.shape[0] == heads
    i, j = grid(n)
    for h in range(heads):
        d_h = 1 + h % dil  # Longformer-style: head 0 undilated, then 2, 3, 1, …
        assert torch.equal(m[h], ((i - j).abs() <= d_h * w) & ((i - j) % d_h == 0))
    assert not torch.equal(m[0], m[1]) and not torch.equal(m[1], m[2])
    assert torch.equal(m[0], m[3])  # 1 + (3 mod 3) = 1


@pytest.mark.parametrize("causal", [False, True])
def test_longformer_band_plus_global_rows_and_columns(causal):
    n, w, g = 40, 3, 2
    m = P.dense_mask(P.longformer(n, window=w, num_global=g, causal=causal))[0, 0]
    i, j = grid(n)
    expect = ((i - j).abs() <= w) | (j < g) | (i < g)
    if causal:
        expect &= j <= i
    assert torch.equal(m, expect)
    if not causal:
        assert m[:g].all() and m[:, :g].all()  # global rows and columns are dense
        assert m[20].sum().item() == 2 * w + 1 + g  # band plus the global columns, none shared


def test_sparse_strided_alternates_heads_and_unites():
    n, l = 45, 6
    alt = P.dense_mask(P.sparse_strided(n, stride=l, heads_mode="alternate", heads=4), heads=4)[0]
    uni = P.dense_mask(P.sparse_strided(n, stride=l, heads_mode="union", heads=4), heads=4)[0, 0]
    i, j = grid(n)
    local, strided = (i - j).abs() < l, (i - j) % l == 0
    assert torch.equal(alt[0], local) and torch.equal(alt[2], local)
    assert torch.equal(alt[1], strided) and torch.equal(alt[3], strided)
    assert torch.equal(uni, local | strided)
    # nonzeros per row: 2l − 1 local + the other same-residue keys, the diagonal counted once
    row = 22
    assert uni[row].sum().item() == (2 * l - 1) + len(range(row % l, n, l)) - 1


@pytest.mark.parametrize("causal", [False, True])
def test_sparse_fixed_blocks_and_summary_columns(causal):
    n, l, c = 50, 8, 2
    m = P.dense_mask(P.sparse_fixed(n, stride=l, summary=c, causal=causal))[0, 0]
    i, j = grid(n)
    expect = (i // l == j // l) | (j % l >= l - c)
    if causal:
        expect &= j <= i
    assert torch.equal(m, expect)
    if not causal:
        summary_cols = [j for j in range(n) if j % l >= l - c]
        assert m[:, summary_cols].all()  # every row reads every summary column
        row = 20  # own block (l keys) plus the summary cells of the other blocks
        others = sum(1 for j in summary_cols if j // l != row // l)
        assert m[row].sum().item() == l + others


def test_sparse_fixed_distinct_heads_use_distinct_summary_cells():
    n, l, c, heads = 48, 8, 2, 3
    m = P.dense_mask(P.sparse_fixed(n, stride=l, summary=c, distinct_heads=True, heads=heads), heads=heads)[0]
    res = P.fixed_summary_residues(l, c, heads, True)
    assert res.tolist() == [[6, 7], [4, 5], [2, 3]]
    i, j = grid(n)
    for h in range(heads):
        cols = torch.isin(j % l, res[h])
        assert torch.equal(m[h], (i // l == j // l) | cols)
    assert not torch.equal(m[0], m[1])


@pytest.mark.parametrize("causal", [False, True])
def test_axial_is_grid_row_union_grid_column(causal):
    n, w = 42, 6  # 7 full grid rows
    m = P.dense_mask(P.axial(n, grid_width=w, causal=causal))[0, 0]
    i, j = grid(n)
    expect = (i // w == j // w) | (i % w == j % w)
    if causal:
        expect &= j <= i
    assert torch.equal(m, expect)
    if not causal:
        assert (m.sum(-1) == w + math.ceil(n / w) - 1).all()
    assert P.axial_grid(n, w)[13].tolist() == [2, 1]


def test_axial_partial_last_grid_row():
    n, w = 40, 6  # last grid row has 4 cells: columns 4 and 5 are one shorter
    m = P.dense_mask(P.axial(n, grid_width=w))[0, 0]
    assert m[4].sum().item() == w + 6 - 1 and m[0].sum().item() == w + 7 - 1


def bigbird_draw(n=96, block=8, wb=3, g=1, r=2, heads=3, seed=0, causal=False):
    rnd = P.bigbird_random_blocks(n, block=block, window_blocks=wb, global_blocks=g, random_blocks=r,
                                  heads=heads, generator=torch.Generator().manual_seed(seed), causal=causal)
    return rnd


@pytest.mark.parametrize("causal", [False, True])
def test_bigbird_random_blocks_are_distinct_and_outside_window_and_globals(causal):
    n, block, wb, g, r, heads = 160, 8, 3, 2, 3, 4
    nb = n // block
    rnd = bigbird_draw(n, block, wb, g, r, heads, causal=causal)
    assert rnd.shape == (heads, nb, r)
    for h in range(heads):
        for qb in range(nb):
            picked = [x for x in rnd[h, qb].tolist() if x >= 0]
            cand = [x for x in range(g, nb) if abs(x - qb) > wb // 2 and (not causal or x <= qb)]
            assert len(picked) == len(set(picked)) == min(r, len(cand))
            assert set(picked) <= set(cand)
    assert not torch.equal(rnd[0], rnd[1]), "heads draw differently"
    assert not torch.equal(rnd, bigbird_draw(n, block, wb, g, r, heads, seed=1, causal=causal))


def test_bigbird_random_blocks_are_uniform():
    # query block 5 of 10, window {4, 5, 6}, global {0}: candidates {1, 2, 3, 7, 8, 9}, 2 drawn:
    # each candidate has probability 1/3. 3,000 independent draws (heads): std ≈ 0.0086; 0.04 ≈ 4.6σ.
    rnd = bigbird_draw(n=80, block=8, wb=3, g=1, r=2, heads=3000, seed=7)[:, 5]
    freq = torch.stack([(rnd == b).any(-1).float().mean() for b in range(10)])
    assert freq[[0, 4, 5, 6]].sum() == 0
    assert (freq[[1, 2, 3, 7, 8, 9]] - 1 / 3).abs().max() < 0.04


@pytest.mark.parametrize("causal", [False, True])
def test_bigbird_mask_structure(causal):
    n, block, wb, g, r, heads = 96, 8, 3, 1, 2, 3
    rnd = bigbird_draw(n, block, wb, g, r, heads, causal=causal)
    m = P.dense_mask(P.bigbird(n, block=block, window_blocks=wb, global_blocks=g, random=rnd, causal=causal),
                     heads=heads)[0]
    i, j = grid(n)
    full = (j <= i)[: g * block] if causal else torch.ones(g * block, n, dtype=torch.bool)
    assert torch.equal(m[:, : g * block], full.expand(heads, -1, -1))  # global rows: every (allowed) key
    cols = (j <= i)[:, : g * block] if causal else torch.ones(n, g * block, dtype=torch.bool)
    assert torch.equal(m[:, :, : g * block], cols.expand(heads, -1, -1))  # global columns: every row
    for h in range(heads):
        qb, kb = i // block, j // block
        expect = ((kb - qb).abs() <= wb // 2) | (kb < g) | (i < g * block)
        for q_block in range(n // block):
            for x in rnd[h, q_block].tolist():
                if x >= 0:
                    expect[q_block * block:(q_block + 1) * block, x * block:(x + 1) * block] = True
        if causal:
            expect &= j <= i
        assert torch.equal(m[h], expect)
        if not causal:  # rows outside the global block: (window + global + random) blocks of b keys
            counts = m[h, g * block:].sum(-1)
            assert (counts % block == 0).all()
            assert counts[5 * block].item() == (wb + g + r) * block
    assert not torch.equal(m[0], m[1])
    if causal:
        assert not m.triu(1).any()


@pytest.mark.parametrize("causal", [False, True])
def test_random_keys_rows(causal):
    n, r, heads = 64, 5, 3
    table = P.random_table(n, keys_per_row=r, heads=heads, generator=torch.Generator().manual_seed(0), causal=causal)
    m = P.dense_mask(P.random_keys(n, table=table, causal=causal), heads=heads)[0]
    counts = m.sum(-1)
    assert (counts >= 1).all() and (counts <= r + 1).all()
    assert m.diagonal(dim1=-2, dim2=-1).all(), "every row attends itself"
    if causal:
        assert not m.triu(1).any() and (table <= torch.arange(n)[None, :, None]).all()
    assert not torch.equal(m[0], m[1])
    # draws are uniform over [0, n): with 3·64·5 = 960 draws the mean is (n − 1)/2 ± ~0.6 (σ ≈ 0.6)
    if not causal:
        assert abs(table.double().mean().item() - (n - 1) / 2) < 3.0


def test_topk_keeps_the_largest_logits():
    q, k, v = make_qkv(b=1, h=2, n=40, d=8)
    keep, scale = 6, 1 / math.sqrt(8)
    m = P.dense_mask(P.topk, 40, q=q, k=k, keep=keep, scale=scale)
    assert m.shape == (1, 2, 40, 40) and (m.sum(-1) == keep).all()
    logits = q @ k.transpose(-1, -2) * scale
    kept_min = logits.masked_fill(~m, float("inf")).min(-1).values
    dropped_max = logits.masked_fill(m, float("-inf")).max(-1).values
    assert (kept_min > dropped_max).all()
    mc = P.dense_mask(P.topk, 40, causal=True, q=q, k=k, keep=keep, scale=scale)
    assert not mc.triu(1).any()
    assert (mc.sum(-1) == torch.arange(1, 41).clamp(max=keep)).all()


@pytest.mark.parametrize("name", ["blocked_local", "dilated_window", "longformer", "sparse_strided", "sparse_fixed",
                                  "bigbird", "random_pattern", "axial", "topk"])
def test_causal_masks_are_lower_triangular(name):
    q, k, v = make_qkv(b=1, h=3, n=64)
    mask = xviz.run(name, q, k, v, causal=True).artifacts["mask"]
    assert not mask.triu(1).any()
    assert (mask.sum(-1) >= 1).all()  # never an empty row
    if name != "topk":  # the fixed patterns always contain the query itself; top-k need not
        assert mask.diagonal(dim1=-2, dim2=-1).all()


# ------------------------------------------------------------------ fast paths against the gather reference

def patterns_at(n, heads, causal):
    """One of every block pattern at odd n (no block, stride or grid divides 53), with parameters the
    registry-wide suite does not reach (per-head patterns, overlapping unions, one-block limits)."""
    g = torch.Generator().manual_seed(3)
    rnd = P.bigbird_random_blocks(n, block=4, window_blocks=3, global_blocks=2, random_blocks=3, heads=heads,
                                  generator=g, causal=causal)
    table = P.random_table(n, keys_per_row=6, heads=heads, generator=g, causal=causal)
    return {
        "window": P.window(n, back=5, forward=5, causal=causal),
        "window-wide": P.window(n, back=70, forward=70, causal=causal),  # reach beyond N: exact
        "blocked": P.blocked_local(n, block=7, look_back=2, look_forward=1, causal=causal),
        "blocked-one": P.blocked_local(n, block=n, look_back=0, look_forward=0, causal=causal),
        "dilated": P.dilated_window(n, window=3, dilation=4, causal=causal),
        "dilated-heads": P.dilated_window(n, window=5, dilation=3, per_head=True, heads=heads, causal=causal),
        "longformer": P.longformer(n, window=4, num_global=3, causal=causal),
        "longformer-wide-global": P.longformer(n, window=1, num_global=20, causal=causal),
        "strided-alternate": P.sparse_strided(n, stride=6, heads_mode="alternate", heads=heads, causal=causal),
        "strided-union": P.sparse_strided(n, stride=7, heads_mode="union", heads=heads, causal=causal),
        "fixed": P.sparse_fixed(n, stride=8, summary=3, causal=causal),
        "fixed-heads": P.sparse_fixed(n, stride=9, summary=2, distinct_heads=True, heads=heads, causal=causal),
        "bigbird": P.bigbird(n, block=4, window_blocks=3, global_blocks=2, random=rnd, causal=causal),
        "bigbird-plain": P.bigbird(n, block=5, window_blocks=1, global_blocks=0, causal=causal),
        "random": P.random_keys(n, table=table, causal=causal),
        "axial": P.axial(n, grid_width=7, causal=causal),
        "axial-column": P.axial(n, grid_width=1, causal=causal),
    }


PATTERN_NAMES = sorted(patterns_at(53, 4, False))


def ctx_for(causal, scale=0.35):
    return xviz.core.engine.Context(causal=causal, scale=scale, seed=0)


@pytest.mark.parametrize("causal,nq", [(False, 53), (True, 53), (False, 40), (False, 70)],
                         ids=["self", "causal", "cross-shorter", "cross-longer"])  # causal is self-attention
@pytest.mark.parametrize("name", PATTERN_NAMES)
def test_tiles_equal_the_gather_reference(name, causal, nq):
    n, heads = 53, 4
    pattern = patterns_at(n, heads, causal)[name]
    q, _, _ = make_qkv(b=2, h=heads, n=nq, d=8, dv=5, seed=1)
    _, k, v = make_qkv(b=2, h=heads, n=n, d=8, dv=5, seed=2)
    fast = T.execute_tiles(q, k, v, 0.35, pattern)
    ref = B.pattern_views(q, k, v, ctx_for(causal), pattern, compute_out=True).out  # gather + softmax per row
    mask = P.dense_mask(pattern, heads=heads, nq=nq)
    # float64: the tiles merge partial softmaxes (log-sum-exp) and sum in another order than the
    # reference; identical weights agree to ~1e-15, 1e-10 leaves room for the N = 53 sums.
    assert rel_err(fast, ref) < 1e-10
    assert rel_err(fast, masked_reference(q, k, v, mask, 0.35)) < 1e-10
    if causal:
        assert not mask.triu(1).any()


FLEX_CASES = [("dilated-heads", False, 53), ("strided-union", False, 53), ("fixed-heads", False, 53),
              ("random", False, 53), ("longformer", True, 53), ("bigbird", True, 53),
              ("fixed", False, 70), ("blocked", False, 40)]


@pytest.mark.filterwarnings("ignore:.*flex_attention.*")
@pytest.mark.parametrize("name,causal,nq", FLEX_CASES, ids=[f"{n}-{c}-{q}" for n, c, q in FLEX_CASES])
def test_flex_mask_mod_equals_the_tiles(name, causal, nq):
    """FlexAttention's mask_mod (run here by its eager reference, which evaluates it on every (i, j);
    the compiled kernel runs on CUDA) is the same pattern as the tiles: every feature (layouts,
    per-head tables and columns, merged parts, global rows, causal, cross) in one case or another."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    n, heads = 53, 2
    q, _, _ = make_qkv(b=1, h=heads, n=nq, d=8, dv=5, seed=1)
    _, k, v = make_qkv(b=1, h=heads, n=n, d=8, dv=5, seed=2)
    pattern = patterns_at(n, heads, causal)[name]
    fast = F.execute(q, k, v, 0.35, pattern)
    assert rel_err(fast, T.execute_tiles(q, k, v, 0.35, pattern)) < 1e-10  # float64, as above


@pytest.mark.parametrize("name", ["window", "dilated", "longformer", "fixed-heads", "bigbird", "axial"])
def test_flex_block_mask_covers_every_allowed_key(name):
    """Every (query, key) the mask_mod allows lies in a 128 × 128 block the BlockMask visits."""
    flex_attention = pytest.importorskip("torch.nn.attention.flex_attention")
    n, heads = 700, 2
    q, k, v = make_qkv(b=1, h=heads, n=n, d=4, dtype=torch.float32)
    pattern = {**patterns_at(n, heads, False), "window": P.window(n, back=40, forward=40),
               "dilated": P.dilated_window(n, window=20, dilation=3)}[name]
    for part in pattern.parts:
        qh, kh, vh = (x[:, part.heads] if part.heads is not None else x for x in (q, k, v))
        bm, qp, kl, _, _ = F.prepare(qh, kh, vh, part, pattern)
        allowed = flex_attention.create_mask(bm.mask_mod, 1, qh.shape[1], qp.shape[-2], kl.shape[-2])
        visited = bm.to_dense().repeat_interleave(F.BLOCK, -2).repeat_interleave(F.BLOCK, -1)
        visited = visited[..., :qp.shape[-2], :kl.shape[-2]]
        assert allowed.any() and not (allowed & ~visited).any()
        if name != "bigbird":  # (4-position random blocks land everywhere)
            assert visited.float().mean() < 0.9  # and the mask is block-sparse


def test_cross_rule_places_each_query_at_a_key_position():
    assert B.centres(5, 5).tolist() == [0, 1, 2, 3, 4]  # self-attention: c(i) = i
    assert B.centres(4, 8).tolist() == [1, 3, 5, 7]  # ⌊(i + ½)·2⌋
    assert B.centres(8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    n, nq, heads = 53, 31, 4
    for name, pattern in patterns_at(n, heads, False).items():
        cross = P.dense_mask(pattern, heads=heads, nq=nq)
        own = P.dense_mask(pattern, heads=heads)
        assert torch.equal(cross, own[:, :, B.centres(nq, n)]), name  # row i is the pattern's row c(i)


@pytest.mark.parametrize("causal", [False, True])
def test_tiles_split_a_huge_block_by_rows(monkeypatch, causal):
    """A block as long as N (an exact limit) must not need a block×span logit tensor at once."""
    monkeypatch.setattr(T, "TILE_ELEMENTS", 4096)
    q, k, v = make_qkv(b=1, h=2, n=100, d=4)
    ref = xviz.run("exact", q, k, v, causal=causal, scale=0.5).out
    one_block = P.blocked_local(100, block=100, look_back=0, look_forward=0, causal=causal)
    one_class = P.sparse_strided(100, stride=1, heads_mode="alternate", heads=2, causal=causal)  # head 1: j ≡ i mod 1
    # float64; both are exact attention here (the strided pattern in its odd head)
    assert rel_err(T.execute_tiles(q, k, v, 0.5, one_block), ref) < 1e-12
    assert rel_err(T.execute_tiles(q, k, v, 0.5, one_class)[:, 1], ref[:, 1]) < 1e-12
    assert rel_err(T.dense_rows(q * 0.5, k, v, 1.0, causal, torch.arange(100)), ref) < 1e-12


def test_merge_of_disjoint_parts_is_the_softmax_of_their_union():
    q, k, v = make_qkv(b=1, h=2, n=30, d=6)
    i, j = grid(30)
    own = P.blocked_local(30, block=5, look_back=0, look_forward=0)
    cols = torch.tensor([0, 9, 17, 29])
    with_cols = B.BlockPattern(30, [B.BlockPart(own.parts[0].table, 5, 5, columns=cols[None])])
    union = (i // 5 == j // 5) | torch.isin(j, cols)
    assert rel_err(T.execute_tiles(q, k, v, 0.4, with_cols), masked_reference(q, k, v, union, 0.4)) < 1e-12
    # each part's lse is the log of its partition function
    _, lse = T.part_tiles(q * 0.4, k, v, own.parts[0], own)
    logits = q @ k.transpose(-1, -2) * 0.4
    expect = torch.logsumexp(logits.masked_fill(~(i // 5 == j // 5), float("-inf")), -1)
    assert (lse - expect).abs().max().item() < 1e-12  # float64


# ------------------------------------------------------------------ the variants against the dense mask

CASES = [
    ("sliding_window", {"window": 6}),
    ("blocked_local", {"block": 7, "look_back": 2, "look_forward": 1}),
    ("dilated_window", {"window": 5, "dilation": 3, "per_head": True}),
    ("longformer", {"window": 4, "num_global": 3}),
    ("sparse_strided", {"stride": 6, "heads": "alternate"}),
    ("sparse_strided", {"stride": 7, "heads": "union"}),
    ("sparse_fixed", {"stride": 9, "summary": 2, "distinct_heads": True}),
    ("bigbird", {"block": 4, "window_blocks": 3, "global_blocks": 2, "random_blocks": 3}),
    ("random_pattern", {"keys_per_row": 6}),
    ("axial", {"grid_width": 7}),
    ("topk", {"top_k": 5}),
]


@pytest.mark.parametrize("causal,nq", [(False, 53), (True, 53), (False, 37)], ids=["self", "causal", "cross"])
@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_variant_out_is_softmax_over_its_mask(name, params, causal, nq):
    n, heads = 53, 4
    q, _, _ = make_qkv(b=2, h=heads, n=nq, d=8, dv=5, seed=1)
    _, k, v = make_qkv(b=2, h=heads, n=n, d=8, dv=5, seed=2)
    r = xviz.run(name, q, k, v, causal=causal, **params)
    mask = r.artifacts["mask"].expand(2, heads, nq, n)
    assert torch.equal(r.artifacts["keys_per_row"].expand(2, heads, nq), mask.sum(-1).int())
    # float64: same weights, another summation order (see above)
    assert rel_err(r.out, masked_reference(q, k, v, mask)) < 1e-10
    assert rel_err(r.matrix() @ v, r.out) < 1e-10
    if name == "topk":  # the mask is each row's top-k logits
        assert torch.equal(mask, P.dense_mask(P.topk, n, nq=nq, causal=causal, q=q, k=k, keep=5,
                                              scale=1 / math.sqrt(8)).expand_as(mask))


def test_fixed_summary_must_fit_in_the_block():
    q, k, v = make_qkv(n=32)
    with pytest.raises(xviz.ParameterError, match="summary"):
        xviz.run("sparse_fixed", q, k, v, stride=4, summary=5)


def test_bigbird_window_must_be_odd():
    q, k, v = make_qkv(n=64)
    with pytest.raises(xviz.ParameterError, match="window_blocks"):
        xviz.run("bigbird", q, k, v, block=8, window_blocks=4)
    xviz.run("bigbird", q, k, v, block=8, window_blocks=16)  # even but covering all 8 blocks: allowed


def test_topk_and_bigbird_limits_and_seed():
    q, k, v = make_qkv(n=256)
    a = xviz.run("bigbird", q, k, v, seed=1).artifacts["random_blocks"]
    assert not torch.equal(a, xviz.run("bigbird", q, k, v, seed=2).artifacts["random_blocks"])
    assert torch.equal(a, xviz.run("bigbird", q, k, v, seed=1).artifacts["random_blocks"])


def test_global_rows_equal_the_exact_rows():
    q, k, v = make_qkv(n=64)
    e = xviz.run("exact", q, k, v).out
    for name, params, g in (("longformer", {"num_global": 3}, 3), ("bigbird", {"block": 8, "global_blocks": 1}, 8)):
        r = xviz.run(name, q, k, v, **params)
        assert torch.equal(r.artifacts["global_rows"], torch.arange(g))
        assert rel_err(r.out[:, :, :g], e[:, :, :g]) < 1e-12  # float64, same dense softmax rows


# ------------------------------------------------------------------ N = 65,536

BIG = 65_536
BIG_CASES = {
    "blocked_local": {},
    "dilated_window": {"per_head": False},
    "longformer": {},
    "sparse_strided": {"stride": 256, "heads": "union"},  # l = √N: the N√N setting
    "sparse_fixed": {"stride": 256, "summary": 8},
    "bigbird": {},
    "random_pattern": {},
    "axial": {"grid_width": 256},
}


def spot_rows_reference(name, r, q, k, v, rows, causal):
    """Outputs of a few rows straight from the pattern's key lists (gather + softmax)."""
    n = q.shape[-2]
    p = r.params
    if name == "blocked_local":
        pattern = P.blocked_local(n, causal=causal, **p)
    elif name == "dilated_window":
        pattern = P.dilated_window(n, causal=causal, heads=1, **p)
    elif name == "longformer":
        pattern = P.longformer(n, causal=causal, **p)
    elif name == "sparse_strided":
        pattern = P.sparse_strided(n, causal=causal, stride=p["stride"], heads_mode=p["heads"], heads=1)
    elif name == "sparse_fixed":
        pattern = P.sparse_fixed(n, causal=causal, heads=1, **p)
    elif name == "bigbird":
        pattern = P.bigbird(n, causal=causal, block=p["block"], window_blocks=p["window_blocks"],
                            global_blocks=p["global_blocks"], random=r.artifacts["random_blocks"])
    elif name == "random_pattern":
        pattern = P.random_keys(n, table=r.artifacts["random_keys"], causal=causal)
    elif name == "axial":
        pattern = P.axial(n, causal=causal, **p)
    idx, valid = pattern.keys_for(rows, 1)
    idx, valid = idx.reshape(rows.numel(), -1), valid.reshape(rows.numel(), -1)
    if causal:
        valid = valid & (idx <= rows[:, None])
    out = []
    for t, i in enumerate(rows.tolist()):
        keys = idx[t][valid[t]].unique().clamp(0, n - 1)
        logits = (k[0, 0, keys] @ q[0, 0, i]) / 8.0  # 1/√64
        out.append(torch.softmax(logits, 0) @ v[0, 0, keys])
    return torch.stack(out)


@pytest.fixture(scope="module")
def big_qkv():
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, 1, BIG, 64, generator=g) for _ in range(3))


@pytest.mark.parametrize("name", sorted(BIG_CASES))
def test_runs_at_65k_tokens(name, big_qkv):
    q, k, v = big_qkv
    spec = xviz.get_variant(name)
    assert spec.subquadratic
    causal = name in ("sparse_fixed", "bigbird")  # cover the causal kernels at scale too
    r = xviz.run(name, q, k, v, causal=causal, **BIG_CASES[name])
    assert r.out.shape == (1, 1, BIG, 64) and torch.isfinite(r.out).all()
    rows = torch.tensor([0, 1, 255, 256, 4097, BIG // 2 + 3, BIG - 2, BIG - 1])
    ref = spot_rows_reference(name, r, q, k, v, rows, causal)
    if name in ("longformer", "bigbird"):  # global rows attend everything
        g = r.artifacts["global_rows"]
        for t, i in enumerate(rows.tolist()):
            if i in g.tolist():
                mask = torch.arange(BIG) <= i if causal else torch.ones(BIG, dtype=torch.bool)
                w = torch.softmax((k[0, 0, mask] @ q[0, 0, i]) / 8.0, 0)
                ref[t] = w @ v[0, 0, mask]
    # float32, up to a few thousand keys summed in a different order: ~1e-6 relative; 1e-4 is slack.
    assert (r.out[0, 0, rows] - ref).abs().max().item() < 1e-4
