"""Fixed and combined sparse patterns (xviz/patterns.py) and their variants.

Three kinds of test:
* structure: each pattern's dense mask against a brute-force formula on the (i, j) grid, counts
  per row, per-head differences, causal lower-triangularity;
* the gather-free kernels: every variant's ``out`` against softmax(QKᵀ·scale, −∞ outside the
  pattern's dense mask)·V, over parameter settings the registry-wide suite does not reach
  (per-head patterns, N not a multiple of the block, causal, unions that overlap);
* scale: each subquadratic variant at N = 65,536, d = 64, B = H = 1, spot-checked on a few rows.
"""
import math

import pytest
import torch

import xviz
from xviz.analysis.check import rel_err
from xviz.kernels import blocks as B, patterns as P

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
    m = P.dense_mask(P.blocked_local, n, causal=causal, block=b, look_back=back, look_forward=fwd)[0, 0]
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
    m = P.dense_mask(P.dilated_window, n, causal=causal, window=w, dilation=dil)[0, 0]
    i, j = grid(n)
    expect = ((i - j).abs() <= dil * w) & ((i - j) % dil == 0)
    if causal:
        expect &= j <= i
    assert torch.equal(m, expect)
    assert m[30].sum().item() == (w + 1 if causal else 2 * w + 1)


def test_dilated_window_per_head_dilations_differ():
    n, w, dil, heads = 60, 3, 3, 4
    m = P.dense_mask(P.dilated_window, n, window=w, dilation=dil, per_head=True, heads=heads)[0]
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
    m = P.dense_mask(P.longformer, n, causal=causal, window=w, num_global=g, full_rows=P.global_rows(n, g))[0, 0]
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
    alt = P.dense_mask(P.sparse_strided, n, stride=l, heads_mode="alternate", heads=4)[0]
    uni = P.dense_mask(P.sparse_strided, n, stride=l, heads_mode="union", heads=4)[0, 0]
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
    m = P.dense_mask(P.sparse_fixed, n, causal=causal, stride=l, summary=c)[0, 0]
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
    m = P.dense_mask(P.sparse_fixed, n, stride=l, summary=c, distinct_heads=True, heads=heads)[0]
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
    m = P.dense_mask(P.axial, n, causal=causal, grid_width=w)[0, 0]
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
    m = P.dense_mask(P.axial, n, grid_width=w)[0, 0]
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
    m = P.dense_mask(P.bigbird, n, causal=causal, block=block, window_blocks=wb, global_blocks=g, random=rnd,
                     full_rows=P.global_rows(n, g * block))[0]
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
    m = P.dense_mask(P.random_keys, n, causal=causal, table=table)[0]
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


# ------------------------------------------------------------------ kernels against the dense mask

CASES = [
    ("blocked_local", {"block": 7, "look_back": 2, "look_forward": 1}),
    ("blocked_local", {"block": 53, "look_back": 0, "look_forward": 0}),  # one chunk: exact
    ("dilated_window", {"window": 3, "dilation": 4}),
    ("dilated_window", {"window": 5, "dilation": 3, "per_head": True}),
    ("longformer", {"window": 4, "num_global": 3}),
    ("longformer", {"window": 1, "num_global": 0}),
    ("sparse_strided", {"stride": 6, "heads": "alternate"}),
    ("sparse_strided", {"stride": 7, "heads": "union"}),
    ("sparse_fixed", {"stride": 8, "summary": 3}),
    ("sparse_fixed", {"stride": 9, "summary": 2, "distinct_heads": True}),
    ("bigbird", {"block": 4, "window_blocks": 3, "global_blocks": 2, "random_blocks": 3}),
    ("bigbird", {"block": 5, "window_blocks": 1, "global_blocks": 0, "random_blocks": 1}),
    ("random_pattern", {"keys_per_row": 6}),
    ("axial", {"grid_width": 7}),
    ("axial", {"grid_width": 1}),
    ("topk", {"top_k": 5}),
]


def pattern_mask(name, params, n, heads, causal, result, q, k):
    """The variant's dense mask rebuilt from the pattern functions, independently of the variant."""
    p = dict(params)
    if name == "blocked_local":
        return P.dense_mask(P.blocked_local, n, causal=causal, **p)
    if name == "dilated_window":
        return P.dense_mask(P.dilated_window, n, causal=causal, heads=heads, **p)
    if name == "longformer":
        return P.dense_mask(P.longformer, n, causal=causal, full_rows=P.global_rows(n, p["num_global"]), **p)
    if name == "sparse_strided":
        return P.dense_mask(P.sparse_strided, n, causal=causal, stride=p["stride"], heads_mode=p["heads"], heads=heads)
    if name == "sparse_fixed":
        return P.dense_mask(P.sparse_fixed, n, causal=causal, heads=heads, **p)
    if name == "bigbird":
        return P.dense_mask(P.bigbird, n, causal=causal, block=p["block"], window_blocks=p["window_blocks"],
                            global_blocks=p["global_blocks"], random=result.artifacts["random_blocks"],
                            full_rows=P.global_rows(n, p["global_blocks"] * p["block"]))
    if name == "random_pattern":
        return P.dense_mask(P.random_keys, n, causal=causal, table=result.artifacts["random_keys"])
    if name == "axial":
        return P.dense_mask(P.axial, n, causal=causal, **p)
    if name == "topk":
        return P.dense_mask(P.topk, n, causal=causal, q=q, k=k, keep=p["top_k"], scale=1 / math.sqrt(q.shape[-1]))
    raise KeyError(name)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_out_is_softmax_over_the_pattern(name, params, causal):
    n, heads = 53, 4  # 53: prime, so no block or grid divides it
    q, k, v = make_qkv(b=2, h=heads, n=n, d=8, dv=5)
    r = xviz.run(name, q, k, v, causal=causal, **params)
    mask = pattern_mask(name, params, n, heads, causal, r, q, k)
    # the variant's own mask artifact (from xviz.sparse) is the pattern's dense mask
    assert torch.equal(r.artifacts["mask"].expand(2, heads, n, n), mask.expand(2, heads, n, n))
    assert torch.equal(r.artifacts["keys_per_row"].expand(2, heads, n), mask.sum(-1).expand(2, heads, n).int())
    # float64: the kernels merge partial softmaxes (log-sum-exp) in another order than the
    # reference; identical weights agree to ~1e-15, 1e-12 leaves room for the N = 53 sums.
    assert rel_err(r.out, masked_reference(q, k, v, mask)) < 1e-12
    assert rel_err(r.matrix() @ v, r.out) < 1e-12


def test_merge_of_disjoint_parts_is_the_softmax_of_their_union():
    q, k, v = make_qkv(b=1, h=2, n=30, d=6)
    i, j = grid(30)
    part_a = B.block_sparse_part(q, k, v, 0.4, False, 5, torch.arange(6)[None, :, None])  # own block
    part_b = B.columns_part(q, k, v, 0.4, False, torch.tensor([[0, 9, 17, 29]]),
                            exclude=lambda i, j: i // 5 == j // 5)
    union = (i // 5 == j // 5) | torch.isin(j, torch.tensor([0, 9, 17, 29]))
    assert rel_err(B.merge([part_a, part_b]), masked_reference(q, k, v, union, 0.4)) < 1e-12  # float64
    # lse is the log of the part's partition function
    logits = q @ k.transpose(-1, -2) * 0.4
    lse_a = torch.logsumexp(logits.masked_fill(~(i // 5 == j // 5), float("-inf")), -1)
    assert (part_a[1] - lse_a).abs().max().item() < 1e-12


def test_kernels_split_huge_blocks_by_rows(monkeypatch):
    """A block as long as N (an exact limit) must not need a block×span logit tensor at once."""
    monkeypatch.setattr(B, "CHUNK_ELEMENTS", 4096)
    q, k, v = make_qkv(b=1, h=2, n=100, d=4)
    out, _ = B.block_sparse_part(q, k, v, 0.5, True, 100, torch.zeros(1, 1, 1, dtype=torch.long))
    o2, _ = B.residue_part(q, k, v, 0.5, True, 1)
    ref = xviz.run("exact", q, k, v, causal=True, scale=0.5).out
    assert rel_err(out, ref) < 1e-12 and rel_err(o2, ref) < 1e-12  # float64, both are exact attention here
    assert rel_err(B.dense_rows(q, k, v, 0.5, True, torch.arange(100)), ref) < 1e-12


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


def spot_rows_reference(name, params, r, q, k, v, rows, causal):
    """Outputs of a few rows straight from the pattern's key lists (gather + softmax)."""
    n = q.shape[-2]
    p = r.params
    if name == "blocked_local":
        idx, valid = P.blocked_local(rows, n, causal=causal, **p)
    elif name == "dilated_window":
        idx, valid = P.dilated_window(rows, n, causal=causal, heads=1, **p)
    elif name == "longformer":
        idx, valid = P.longformer(rows, n, causal=causal, **p)
    elif name == "sparse_strided":
        idx, valid = P.sparse_strided(rows, n, causal=causal, stride=p["stride"], heads_mode=p["heads"], heads=1)
    elif name == "sparse_fixed":
        idx, valid = P.sparse_fixed(rows, n, causal=causal, heads=1, **p)
    elif name == "bigbird":
        idx, valid = P.bigbird(rows, n, causal=causal, block=p["block"], window_blocks=p["window_blocks"],
                               global_blocks=p["global_blocks"], random=r.artifacts["random_blocks"])
    elif name == "random_pattern":
        idx, valid = P.random_keys(rows, n, table=r.artifacts["random_keys"])
    elif name == "axial":
        idx, valid = P.axial(rows, n, causal=causal, **p)
    idx, valid = torch.broadcast_tensors(idx, valid)
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
    ref = spot_rows_reference(name, BIG_CASES[name], r, q, k, v, rows, causal)
    if name in ("longformer", "bigbird"):  # global rows attend everything
        g = r.artifacts["global_rows"]
        for t, i in enumerate(rows.tolist()):
            if i in g.tolist():
                mask = torch.arange(BIG) <= i if causal else torch.ones(BIG, dtype=torch.bool)
                w = torch.softmax((k[0, 0, mask] @ q[0, 0, i]) / 8.0, 0)
                ref[t] = w @ v[0, 0, mask]
    # float32, up to a few thousand keys summed in a different order: ~1e-6 relative; 1e-4 is slack.
    assert (r.out[0, 0, rows] - ref).abs().max().item() < 1e-4
