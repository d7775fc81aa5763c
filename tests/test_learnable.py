"""The learnable-pattern variants: Reformer (LSH), Routing, clustered, Sinkhorn.

Each identity or pattern is checked against an independent reference written here from the paper's
definition (Python loops over tokens at small N), not against the variant's own helpers. The
registry-wide suite (test_registry.py) covers shapes, dtypes, matrix @ v, causality and seeds; it runs
at N = 48 with the defaults, where Reformer and Sinkhorn have a single chunk/block, so the multi-chunk,
padded and multi-round cases are tested here.
"""
import math

import pytest
import torch

import xviz
from xviz.analysis.check import rel_err
from xviz.core.engine import Context
from xviz.kernels.hashing import lsh_buckets
from xviz.variants.reformer import reformer_rotations

from .conftest import make_qkv


def dense_reference(q, k, v, mask, scale):
    """softmax(q kᵀ·scale) restricted to ``mask`` (an empty row gives 0), times v."""
    logits = (q @ k.transpose(-1, -2) * scale).masked_fill(~mask, float("-inf"))
    return torch.nan_to_num(torch.softmax(logits, -1), nan=0.0) @ v


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------------------- Reformer

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rounds", [1, 3])
def test_reformer_one_bucket_full_chunk_is_exact_on_shared_qk_without_diagonal(causal, rounds):
    q, k, v = make_qkv(n=37)
    n = q.shape[-2]
    r = xviz.run("reformer", q, k, v, causal=causal, buckets=1, chunk=n, rounds=rounds)
    mask = ~torch.eye(n, dtype=torch.bool)
    if causal:
        mask = mask & torch.ones(n, n, dtype=torch.bool).tril()
        mask[0, 0] = True  # the first token has no other key: it attends itself
    ref = dense_reference(q, unit(q), v, mask, 1 / math.sqrt(q.shape[-1]))
    # float64, the same weights summed in another order (rounds > 1: the log-count correction is log 3
    # on every logit, which cancels): agreement to ~1e-15; 1e-12 leaves room.
    assert rel_err(r.out, ref) < 1e-12


def test_reformer_ignores_k():
    q, k, v = make_qkv(n=40)
    a = xviz.run("reformer", q, k, v, seed=3).out
    b = xviz.run("reformer", q, torch.randn_like(k), v, seed=3).out
    assert torch.equal(a, b)


def reference_lsh_mask(buckets, order, chunk, causal):
    """The paper's pattern from the hash: per round, stable sort by (bucket, position), chunks of m,
    own and previous chunk (wrapping), same bucket; union over rounds; no self unless alone."""
    rounds, n = buckets.shape
    nc = math.ceil(n / chunk)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for r in range(rounds):
        expected_order = sorted(range(n), key=lambda p: (int(buckets[r, p]), p))
        assert order[r].tolist() == expected_order
        slot = {p: s for s, p in enumerate(expected_order)}
        for i in range(n):
            ci = slot[i] // chunk
            for j in range(n):
                cj = slot[j] // chunk
                if buckets[r, i] == buckets[r, j] and cj in (ci, (ci - 1) % nc):
                    mask[i, j] = True
    if causal:
        mask &= torch.ones(n, n, dtype=torch.bool).tril()
    for i in range(n):
        others = mask[i].clone()
        others[i] = False
        mask[i, i] = not bool(others.any())
    return mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n, buckets, rounds, chunk", [(37, 4, 2, 5), (40, 2, 3, 8), (33, 6, 1, 4), (30, 4, 2, 16)])
def test_reformer_pattern_and_output_match_the_paper_definition(causal, n, buckets, rounds, chunk):
    q, k, v = make_qkv(b=1, h=2, n=n, seed=n)
    r = xviz.run("reformer", q, k, v, causal=causal, buckets=buckets, rounds=rounds, chunk=chunk, seed=7)
    bkt, order = r.artifacts["buckets"], r.artifacts["sort_order"]
    assert bkt.shape == order.shape == (1, 2, rounds, n)
    assert int(bkt.min()) >= 0 and int(bkt.max()) < buckets
    scale = 1 / math.sqrt(q.shape[-1])
    for head in range(2):
        ref_mask = reference_lsh_mask(bkt[0, head], order[0, head], chunk, causal)
        assert torch.equal(r.artifacts["mask"][0, head], ref_mask)
        assert torch.equal(r.artifacts["keys_per_row"][0, head], ref_mask.sum(-1).to(torch.int32))
        ref = dense_reference(q[0, head], unit(q[0, head]), v[0, head], ref_mask, scale)
        # float64; the blocked path merges rounds through log-normalisers and log-counts: ~1e-15.
        assert rel_err(r.out[0, head], ref) < 1e-12


def test_reformer_buckets_are_the_documented_hash_of_the_seeded_rotations():
    q, k, v = make_qkv(b=2, h=3, n=20, d=8)
    r = xviz.run("reformer", q, k, v, buckets=6, rounds=2, chunk=4, seed=11)
    rot = reformer_rotations(Context(causal=False, scale=1.0, seed=11), 3, 2, 8, 6, like=q)  # (H, R, d, 3)
    assert rot.shape == (3, 2, 8, 3)
    proj = torch.einsum("bhnd,hrdk->bhrnk", q, rot)
    assert torch.equal(r.artifacts["buckets"], torch.cat([proj, -proj], -1).argmax(-1))


def collision_rate(buckets, theta, trials, seed, d=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(2, d, dtype=torch.float64)
    x[0, 0] = 1.0
    x[1, 0], x[1, 1] = math.cos(theta), math.sin(theta)
    rot = torch.randn(trials, d, buckets // 2, generator=g, dtype=torch.float64)
    h = lsh_buckets(x, rot)  # (trials, 2)
    return (h[:, 0] == h[:, 1]).double().mean().item()


@pytest.mark.parametrize("theta", [math.pi / 8, math.pi / 3, math.pi / 2, 2 * math.pi / 3, 0.9 * math.pi])
def test_lsh_two_bucket_collision_probability_is_one_minus_angle_over_pi(theta):
    trials = 20_000
    p = 1 - theta / math.pi  # sign of a random projection: the pair splits with probability θ/π
    # 4.5 binomial standard errors: a false failure has probability < 1e-5 per angle.
    assert abs(collision_rate(2, theta, trials, seed=1) - p) < 4.5 * math.sqrt(p * (1 - p) / trials) + 1e-9


def test_lsh_many_bucket_collision_probability_matches_independent_monte_carlo():
    """buckets = 8: no closed form; compare with a separate numpy simulation of argmax([xR; −xR])."""
    import numpy as np

    trials, d = 20_000, 16
    rng = np.random.default_rng(12345)
    previous = 1.0
    for theta in (math.pi / 6, math.pi / 3, math.pi / 2, 3 * math.pi / 4):
        x = np.zeros((2, d))
        x[0, 0], x[1, 0], x[1, 1] = 1.0, math.cos(theta), math.sin(theta)
        proj = np.einsum("nd,tdk->tnk", x, rng.standard_normal((trials, d, 4)))
        h = np.concatenate([proj, -proj], -1).argmax(-1)
        p_ref = float((h[:, 0] == h[:, 1]).mean())
        p = collision_rate(8, theta, trials, seed=2)
        # two independent estimates: the difference has variance 2·p(1−p)/trials; 4.5 standard errors.
        assert abs(p - p_ref) < 4.5 * math.sqrt(2 * p_ref * (1 - p_ref) / trials) + 1e-3
        assert p < collision_rate(2, theta, trials, seed=3)  # more buckets: fewer collisions
        assert p < previous  # farther apart: fewer collisions
        previous = p


def test_reformer_rounds_miss_a_pair_with_probability_one_minus_p_to_the_rounds():
    """Two tokens at angle θ with buckets = 2: they never share a bucket with probability (θ/π)^rounds.
    With v = one-hot rows, token 0's output is v_1 when they collided in some round, else itself."""
    theta, rounds, seeds = math.pi / 2, 3, 800
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0], [math.cos(theta), math.sin(theta), 0.0, 0.0]], dtype=torch.float64)
    v = torch.eye(2, dtype=torch.float64)
    missed = sum(xviz.run("reformer", q, q, v, buckets=2, rounds=rounds, chunk=2, seed=s).out[0, 0].item() == 1.0
                 for s in range(seeds))
    p_miss = (theta / math.pi) ** rounds
    # 4.5 binomial standard errors over the seeds
    assert abs(missed / seeds - p_miss) < 4.5 * math.sqrt(p_miss * (1 - p_miss) / seeds)


def test_reformer_odd_buckets_refused_but_the_clamped_default_accepted():
    q, k, v = make_qkv(n=48, dtype=torch.float32)
    with pytest.raises(xviz.ParameterError, match="buckets = 5 must be 1 or an even"):
        xviz.run("reformer", q, k, v, buckets=5)
    with pytest.raises(xviz.ParameterError, match="buckets"):
        xviz.run("reformer", q, k, v, buckets=50)  # > N
    q7, k7, v7 = make_qkv(n=7, dtype=torch.float32)
    r = xviz.run("reformer", q7, k7, v7)  # default 8 clamped to N = 7: uses 6 buckets
    assert r.params["buckets"] == 7 and int(r.artifacts["buckets"].max()) < 6


# ----------------------------------------------------------------------------------------- Routing

def reference_routing_mask(q, k, qc, kc, centroids, window, causal):
    n = q.shape[-2]
    sim = unit(k) @ centroids.T  # (N, C)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        members = [j for j in range(n) if kc[j] == qc[i]]
        members.sort(key=lambda j: (-sim[j, qc[i]].item(), j))
        for j in members[:window]:
            mask[i, j] = True
    if causal:
        mask &= torch.ones(n, n, dtype=torch.bool).tril()
    return mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("clusters, window", [(5, 4), (3, 40), (0, 6)])
def test_routing_pattern_is_own_cluster_nearest_keys(causal, clusters, window):
    """Not causal: k-means centroids and the ``window`` keys nearest them. Causal: the seeded centroids as
    drawn (no fit on the sequence) and every earlier key of the cluster."""
    q, k, v = make_qkv(b=1, h=2, n=40, seed=4)
    r = xviz.run("routing", q, k, v, causal=causal, clusters=clusters, window=window, iterations=4, seed=2)
    c = clusters or math.ceil(math.sqrt(40))
    ids, cent = r.artifacts["clusters"], r.artifacts["centroids"]
    assert ids.shape == (1, 2, 2, 40) and cent.shape == (1, 2, c, 8)
    assert int(ids.min()) >= 0 and int(ids.max()) < c
    assert torch.allclose(cent.norm(dim=-1), torch.ones(1, 2, c, dtype=cent.dtype))  # spherical centroids
    scale = 1 / math.sqrt(8)
    for head in range(2):
        qc, kc, ce = ids[0, head, 0], ids[0, head, 1], cent[0, head]
        # every query and key sits in its nearest centroid (cosine), as k-means' final assignment
        assert torch.equal(qc, (unit(q[0, head]) @ ce.T).argmax(-1))
        assert torch.equal(kc, (unit(k[0, head]) @ ce.T).argmax(-1))
        # causal: every earlier key of the cluster (no window cap ranked among later keys)
        ref_mask = reference_routing_mask(q[0, head], k[0, head], qc, kc, ce, 40 if causal else window, causal)
        assert torch.equal(r.artifacts["mask"][0, head], ref_mask)
        assert torch.equal(r.artifacts["keys_per_row"][0, head], ref_mask.sum(-1).to(torch.int32))
        # float64, same weights, other summation order
        assert rel_err(r.out[0, head], dense_reference(q[0, head], k[0, head], v[0, head], ref_mask, scale)) < 1e-12


def test_routing_query_without_keys_in_its_cluster_gets_zero():
    q, k, v = make_qkv(b=1, h=1, n=64, seed=5)
    r = xviz.run("routing", q, k, v, clusters=64, iterations=2)  # many clusters: some hold only queries
    qc, kc = r.artifacts["clusters"][0, 0]
    lonely = ~torch.isin(qc, kc)
    assert lonely.any(), "the setting should leave some queries without keys"
    assert torch.equal(r.out[0, 0, lonely], torch.zeros_like(r.out[0, 0, lonely]))
    assert (r.artifacts["keys_per_row"][0, 0, lonely] == 0).all()
    assert (r.out[0, 0, ~lonely].abs().sum(-1) > 0).all()


def test_routing_one_cluster_full_window_is_exact_and_window_caps_keys():
    q, k, v = make_qkv(n=50)
    for causal in (False, True):
        r = xviz.run("routing", q, k, v, causal=causal, clusters=1, window=50)
        assert rel_err(r.out, xviz.run("exact", q, k, v, causal=causal).out) < 1e-12
    r = xviz.run("routing", q, k, v, clusters=1, window=7)
    assert (r.artifacts["keys_per_row"] == 7).all()


# ----------------------------------------------------------------------------------------- clustered

def test_clustered_with_one_cluster_per_query_is_exact():
    q, k, v = make_qkv(n=41)
    r = xviz.run("clustered", q, k, v, clusters=41, topk=0)
    assert torch.equal(r.artifacts["clusters"].sort(-1).values, torch.arange(41).expand(2, 2, 41))
    # float64; the centroid is the query itself, so only summation order differs
    assert rel_err(r.out, xviz.run("exact", q, k, v).out) < 1e-12


def test_improved_clustered_with_topk_n_is_exact_for_any_clustering():
    q, k, v = make_qkv(n=41)
    r = xviz.run("clustered", q, k, v, clusters=3, topk=41)
    # float64; m̂ = Σ A_c = 1 up to rounding and the "rest" term cancels to ~1e-16
    assert rel_err(r.out, xviz.run("exact", q, k, v).out) < 1e-12


@pytest.mark.parametrize("topk", [0, 5])
def test_clustered_matches_the_paper_formula(topk):
    q, k, v = make_qkv(b=1, h=2, n=30, seed=6)
    r = xviz.run("clustered", q, k, v, clusters=4, topk=topk, iterations=3, seed=1)
    ids, cent, top = r.artifacts["clusters"], r.artifacts["centroids"], r.artifacts["topk_keys"]
    assert ids.shape == (1, 2, 30) and cent.shape == (1, 2, 4, 8) and top.shape == (1, 2, 4, topk)
    scale = 1 / math.sqrt(8)
    for head in range(2):
        qh, kh, vh, idh = q[0, head], k[0, head], v[0, head], ids[0, head]
        for c in range(4):  # each centroid is the mean of its member queries
            if (idh == c).any():
                assert torch.allclose(cent[0, head, c], qh[idh == c].mean(0))
        a = torch.softmax(cent[0, head] @ kh.T * scale, -1)  # (C, N) centroid attention
        ref = torch.empty(30, v.shape[-1], dtype=v.dtype)
        for i in range(30):
            w = a[idh[i]].clone()
            if topk:
                t = a[idh[i]].topk(topk).indices
                assert set(t.tolist()) == set(top[0, head, idh[i]].tolist())
                w[t] = w[t].sum() * torch.softmax(qh[i] @ kh[t].T * scale, -1)
            ref[i] = w @ vh
        assert rel_err(r.out[0, head], ref) < 1e-12  # float64, other summation order
        if topk == 0:  # plain: all members share one output row
            for c in idh.unique():
                rows = r.out[0, head, idh == c]
                assert torch.equal(rows, rows[:1].expand_as(rows))
    m = r.matrix()
    assert rel_err(m @ v, r.out) < 1e-12 and (m.sum(-1) - 1).abs().max() < 1e-12


def test_clustered_refuses_more_clusters_or_topk_than_tokens():
    q, k, v = make_qkv(n=20, dtype=torch.float32)
    for name, param in (("clustered", "clusters"), ("clustered", "topk"), ("routing", "clusters")):
        with pytest.raises(xviz.ParameterError, match=param):
            xviz.run(name, q, k, v, **{param: 21})


# ----------------------------------------------------------------------------------------- Sinkhorn

def reference_sinkhorn(q, k, v, block, iterations, temperature, scale):
    """Loops over blocks and slots: own block + soft-sorted block, padded slots renormalised away."""
    n, d = q.shape
    nb = math.ceil(n / block)
    blocks = [list(range(i * block, min(n, (i + 1) * block))) for i in range(nb)]
    qbar = torch.stack([q[bl].mean(0) for bl in blocks])
    kbar = torch.stack([k[bl].mean(0) for bl in blocks])
    scores = qbar @ kbar.T * scale
    logp = scores / temperature
    for _ in range(iterations):
        logp = logp - logp.logsumexp(0, keepdim=True)
        logp = logp - logp.logsumexp(1, keepdim=True)
    p = logp.exp()
    out = torch.empty(n, v.shape[-1], dtype=v.dtype)
    for bi, bl in enumerate(blocks):
        keys, vals = [k[j] for j in bl], [v[j] for j in bl]
        for s in range(block):
            w = torch.tensor([p[bi, bj] if s < len(blocks[bj]) else 0.0 for bj in range(nb)], dtype=q.dtype)
            if w.sum() > 0:
                w = w / w.sum()
                keys.append(sum(w[bj] * k[blocks[bj][s]] for bj in range(nb) if s < len(blocks[bj])))
                vals.append(sum(w[bj] * v[blocks[bj][s]] for bj in range(nb) if s < len(blocks[bj])))
        kk, vv = torch.stack(keys), torch.stack(vals)
        for i in bl:
            out[i] = torch.softmax(q[i] @ kk.T * scale, -1) @ vv
    return out, p, scores


@pytest.mark.parametrize("n, block", [(37, 5), (48, 8), (23, 22), (9, 1)])
def test_sinkhorn_matches_a_loop_reference(n, block):
    q, k, v = make_qkv(b=1, h=2, n=n, seed=n)
    r = xviz.run("sinkhorn", q, k, v, block=block, iterations=6, temperature=0.5)
    nb = math.ceil(n / block)
    assert r.artifacts["permutation"].shape == r.artifacts["block_scores"].shape == (1, 2, nb, nb)
    for head in range(2):
        ref, p, scores = reference_sinkhorn(q[0, head], k[0, head], v[0, head], block, 6, 0.5, 1 / math.sqrt(8))
        assert torch.allclose(r.artifacts["block_scores"][0, head], scores, atol=1e-13)
        assert torch.allclose(r.artifacts["permutation"][0, head], p, atol=1e-13)
        assert rel_err(r.out[0, head], ref) < 1e-12  # float64, same algebra, other order
    m = r.matrix()  # a_s on sorted slot s spread as a_s·P_ij over the real keys (block j, slot s)
    assert rel_err(m @ v, r.out) < 1e-12
    assert (m.sum(-1) - 1).abs().max() < 1e-12 and m.min() >= 0


def test_sinkhorn_one_block_is_exact():
    q, k, v = make_qkv(n=30)
    r = xviz.run("sinkhorn", q, k, v, block=30)
    assert torch.equal(r.artifacts["permutation"], torch.ones(2, 2, 1, 1, dtype=q.dtype))
    assert rel_err(r.out, xviz.run("exact", q, k, v).out) < 1e-12  # own and sorted block coincide


def test_sinkhorn_permutation_is_doubly_stochastic_and_hardens_at_low_temperature():
    q, k, v = make_qkv(b=1, h=1, n=64, seed=9)
    col_err = []
    for iterations in (1, 5, 40):
        p = xviz.run("sinkhorn", q, k, v, block=8, iterations=iterations).artifacts["permutation"][0, 0]
        assert (p.sum(-1) - 1).abs().max() < 1e-12  # rows normalised last: exact
        col_err.append((p.sum(-2) - 1).abs().max().item())
    assert col_err[2] < col_err[1] < col_err[0] and col_err[2] < 1e-6  # Sinkhorn converges
    # Blocks whose mean query points at one block's mean key: the scores favour a known permutation,
    # and at a low temperature P approaches it (the Sinkhorn limit of Mena et al. 2018).
    sigma = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    noise = 0.1 * torch.randn(2, 64, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    eye = 3 * torch.eye(8, dtype=torch.float64)
    q = (eye[sigma].repeat_interleave(8, 0) + noise[0])[None, None]
    k = (eye.repeat_interleave(8, 0) + noise[1])[None, None]
    p = xviz.run("sinkhorn", q, k, v, block=8, iterations=20, temperature=0.05).artifacts["permutation"][0, 0]
    assert torch.equal(p.argmax(-1), sigma)
    assert p.max(-1).values.min() > 0.99  # close to the hard permutation


def test_sinkhorn_refuses_block_longer_than_the_sequence():
    q, k, v = make_qkv(n=20, dtype=torch.float32)
    with pytest.raises(xviz.ParameterError, match="block"):
        xviz.run("sinkhorn", q, k, v, block=21)


# ----------------------------------------------------------------------------------------- all four

LEARNABLE = ["reformer", "routing", "clustered", "sinkhorn"]


@pytest.mark.parametrize("name", LEARNABLE)
def test_same_seed_same_artifacts(name):
    q, k, v = make_qkv(n=40, dtype=torch.float32)
    a, b = xviz.run(name, q, k, v, seed=4), xviz.run(name, q, k, v, seed=4)
    assert torch.equal(a.out, b.out)
    for key in a.artifacts:
        if not a.artifacts.is_lazy(key):
            assert torch.equal(a.artifacts[key], b.artifacts[key]), key
    if xviz.get_variant(name).stochastic:
        c = xviz.run(name, q, k, v, seed=5)
        key = {"reformer": "buckets", "routing": "clusters", "clustered": "clusters"}[name]
        assert not torch.equal(a.artifacts[key], c.artifacts[key])


@pytest.mark.parametrize("name", LEARNABLE)
def test_runs_at_65k_tokens(name):
    """N = 65,536, d = 64 with the defaults, in seconds; the N×N mask and matrix are never built."""
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 1, 1, 65_536, 64, generator=g).unbind(0)
    r = xviz.run(name, q, k, v)
    assert r.out.shape == (1, 1, 65_536, 64) and torch.isfinite(r.out).all()
    if name in ("reformer", "routing"):
        assert r.artifacts.is_lazy("mask")  # (not `"mask" in r.artifacts`: Mapping.__contains__ evaluates it)
        kpr = r.artifacts["keys_per_row"]
        assert kpr.shape == (1, 1, 65_536) and int(kpr.max()) <= 256  # rounds·2m or window keys at most
