"""Synthetic inputs: shapes, seeding, knobs, and — above all — the structure each generator promises,
measured on the exact attention the engine computes from them."""
import time

import pytest
import torch

import xviz
from xviz import inputs
from xviz.inputs.synthetic import rotary

N = 256
I = torch.arange(N)


def attention(seq):
    """(H, N, N) exact attention softmax(QKᵀ/√d) in float64 (clean sums). Computed here rather than through
    xviz.run so these tests depend on the generators only, not on every variant module importing cleanly
    (test_inputs_model.py checks the engine's own exact attention against a real model)."""
    q, k = seq.q[0].double(), seq.k[0].double()
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)


def mass(a, mask):
    """Mean over heads and queries of the attention mass on the keys in mask (N, N)."""
    return (a * mask.to(a.dtype)).sum(-1).mean().item()


BAND8 = (I[:, None] - I[None]).abs() <= 8  # 17 of 256 keys: 6.6 % of uniform mass


@pytest.mark.parametrize("kind", inputs.SYNTHETIC_KINDS)
def test_shapes_dtypes_tokens(kind):
    s = inputs.synthetic(kind, n=50, d=12, heads=3, seed=1)
    assert s.q.shape == s.k.shape == s.v.shape == (1, 3, 50, 12)
    assert s.q.dtype == torch.float32 and s.reference_attention is None and not s.causal
    assert len(s.tokens) == 50 and s.positions.shape[0] == 50
    assert kind in s.provenance and "seed 1" in s.provenance and "N=50" in s.provenance
    assert all(torch.isfinite(t).all() for t in (s.q, s.k, s.v))


@pytest.mark.parametrize("kind", inputs.SYNTHETIC_KINDS)
@pytest.mark.parametrize("n,d", [(1, 1), (2, 1), (7, 3), (33, 5)])
def test_any_n_and_d(kind, n, d):
    s = inputs.synthetic(kind, n=n, d=d, heads=2, seed=0)
    assert s.q.shape == (1, 2, n, d) and torch.isfinite(s.q).all() and torch.isfinite(s.k).all()
    assert torch.isfinite(attention(s)).all()


@pytest.mark.parametrize("kind", inputs.SYNTHETIC_KINDS)
def test_seeded(kind):
    a, b = inputs.synthetic(kind, n=40, seed=3), inputs.synthetic(kind, n=40, seed=3)
    c = inputs.synthetic(kind, n=40, seed=4)
    assert torch.equal(a.q, b.q) and torch.equal(a.k, b.k) and torch.equal(a.v, b.v)
    assert not torch.equal(a.k, c.k)


@pytest.mark.parametrize("kind", inputs.SYNTHETIC_KINDS)
def test_params_are_typed_and_documented(kind):
    params = inputs.synthetic_params(kind)
    assert params and all(p.help and p.kind in ("int", "float", "bool", "choice") for p in params)
    for p in params:  # every default is valid at the default shape
        assert p.coerce(p.fit_default(N, 64), N, 64) == p.fit_default(N, 64)


def test_bad_kind_and_knobs():
    with pytest.raises(xviz.InputError, match="unknown synthetic input kind 'nope'"):
        inputs.synthetic("nope")
    with pytest.raises(xviz.InputError, match="has no knob 'clusterz'"):
        inputs.synthetic("clustered", clusterz=3)
    with pytest.raises(xviz.InputError, match=r"clusters = 500 is outside its valid range \[1, 256\]"):
        inputs.synthetic("clustered", n=256, clusters=500)
    with pytest.raises(xviz.InputError, match="more than the limit"):
        inputs.synthetic("gaussian", n=inputs.LIMITS["max_n"] + 1)
    with pytest.raises(xviz.InputError, match="d = 0"):
        inputs.synthetic("gaussian", d=0)


def test_gaussian_logit_scale_is_the_logit_std():
    # logits q·k/√d of iid N(0, s) entries have std s; 4 × 256² samples: 5 % relative is ~10 standard errors.
    for s in (0.5, 2.0):
        seq = inputs.synthetic("gaussian", n=N, d=64, heads=4, logit_scale=s)
        logits = seq.q @ seq.k.transpose(-1, -2) / 8.0
        assert abs(logits.std().item() / s - 1) < 0.05


def test_clustered_attention_is_block_diagonal():
    seq = inputs.synthetic("clustered", n=N, clusters=8)
    c = seq.meta["clusters"]
    same = c[:, None] == c[None]
    assert torch.equal(c, torch.arange(N) // 32)  # contiguous blocks: the blocks sit on the diagonal
    # Measured ≈ 0.975 for seeds 0–3; uniform attention would put 1/8 inside the block.
    assert mass(attention(seq), same) > 0.9
    # Shuffled: still block structure after sorting by the labels, no longer on the diagonal.
    shuffled = inputs.synthetic("clustered", n=N, clusters=8, shuffle=True)
    c2 = shuffled.meta["clusters"]
    a2 = attention(shuffled)
    assert mass(a2, c2[:, None] == c2[None]) > 0.9 and mass(a2, BAND8) < 0.3
    # Spread large enough to drown the centres: the block structure fades.
    assert mass(attention(inputs.synthetic("clustered", n=N, clusters=8, spread=3.0)), same) < 0.8


@pytest.mark.parametrize("encoding", ["rotary", "sinusoidal"])
def test_positional_attention_is_banded(encoding):
    a = attention(inputs.synthetic("positional", n=N, encoding=encoding))
    # Measured 0.80–0.88 (rotary) with the defaults; iid Gaussian inputs put ≈ 0.066 within ±8 of the diagonal.
    assert mass(a, BAND8) > 0.6
    assert mass(attention(inputs.synthetic("gaussian", n=N)), BAND8) < 0.1
    # The band is a function of i − j: the mass near the diagonal is the same early and late in the sequence.
    early, late = (a[:, 32:96] * BAND8[32:96]).sum(-1).mean(), (a[:, 160:224] * BAND8[160:224]).sum(-1).mean()
    assert abs(early - late) < 0.1
    # A larger base widens the band.
    wide = attention(inputs.synthetic("positional", n=N, encoding=encoding, base=1e5))
    assert mass(wide, BAND8) < mass(a, BAND8)


def test_rotary_logits_depend_only_on_the_offset():
    # RoPE identity: <R_m x, R_n y> = <R_{m−n} x, y>; float32 products of unit vectors: 1e-5 absolute.
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 16, generator=g), torch.randn(1, 16, generator=g)
    pos = torch.arange(40)
    rx, ry = rotary(x.expand(40, 16), pos, 100.0), rotary(y.expand(40, 16), pos, 100.0)
    dots = rx @ ry.T
    for off in (0, 3, 17):
        diag = torch.diagonal(dots, offset=-off)
        assert (diag - diag[0]).abs().max() < 1e-5


def test_periodic_attention_follows_the_phase():
    seq = inputs.synthetic("periodic", n=N, period=32)
    a = attention(seq)
    dd = (I[:, None] - I[None]) % 32
    same_phase = (dd <= 1) | (dd >= 31)  # 3 of every 32 keys: 9.4 % of uniform mass
    opposite = (dd >= 15) & (dd <= 17)  # half a period away: the same share of keys
    # Measured 0.58–0.65 for seeds 0–3.
    assert mass(a, same_phase) > 0.45
    assert mass(a, opposite) < 0.1
    # The series is stored and is periodic up to the noise.
    x = seq.meta["series"]
    assert ((x[32:] - x[:-32]).std() / x.std()) < 0.3


def test_duplication_attends_to_the_copy():
    seq = inputs.synthetic("duplication", n=N, vocab=64)
    sym, partner = seq.meta["symbols"], seq.meta["partner"]
    assert torch.equal(sym[:128], sym[128:]) and torch.equal(partner, (I + 128) % 256)
    a = attention(seq)
    on_copy = a[:, I, partner]  # (H, N)
    # Measured ≈ 0.79 mean (every head ≥ 0.74) for seeds 0–3; uniform attention would give 1/256.
    assert on_copy.mean() > 0.6 and on_copy.mean(-1).min() > 0.5
    assert (a.argmax(-1) == partner).double().mean() > 0.9
    # Symbol match only (position_weight = 0): self and copy tie, so the copy gets about half at best.
    a0 = attention(inputs.synthetic("duplication", n=N, vocab=64, position_weight=0.0))
    assert a0[:, I, partner].mean() < 0.55


def test_duplication_odd_length():
    seq = inputs.synthetic("duplication", n=9, d=16)
    assert seq.tokens[-1] == "0" and seq.meta["partner"].tolist() == [4, 5, 6, 7, 0, 1, 2, 3, 8]


def test_image_attention_is_local_in_two_dimensions():
    seq = inputs.synthetic("image", n=N)
    assert seq.positions.shape == (N, 2) and seq.meta["grid"] == (16, 16)
    pos = seq.positions
    dr, dc = pos[:, None, 0] - pos[None, :, 0], pos[:, None, 1] - pos[None, :, 1]
    near = (dr.abs() <= 1) & (dc.abs() <= 1)  # 3×3 neighbourhood: ≤ 9/256 = 3.5 % of uniform mass
    vertical = (dr.abs() == 1) & (dc == 0)  # the patch above/below: 16 tokens away in raster order
    a = attention(seq)
    # Measured near 0.39–0.47 and vertical 0.087–0.097 for seeds 0–3.
    assert mass(a, near) > 0.3
    assert mass(a, vertical) > 0.05
    # A 1-D banded input puts almost nothing 16 tokens away, so this is 2-D locality, not a band.
    assert mass(attention(inputs.synthetic("positional", n=N)), vertical) < 0.02


def test_logit_scale_controls_sharpness():
    def entropy(seq):
        a = attention(seq)
        return -(a * a.clamp_min(1e-300).log()).sum(-1).mean().item()

    for kind in inputs.SYNTHETIC_KINDS:
        flat, sharp = (inputs.synthetic(kind, n=64, logit_scale=s) for s in (0.01, 20.0))
        # logit_scale 0.01: every logit within ~±0.05, so the entropy is within 1 % of log N.
        assert entropy(flat) > 0.99 * torch.log(torch.tensor(64.0)).item()
        assert entropy(sharp) < entropy(flat) - 1.0


@pytest.mark.parametrize("kind", inputs.SYNTHETIC_KINDS)
def test_long_sequences_are_cheap(kind):
    # N = 65,536, d = 64, one head: generation is O(N·d) (no N×N tensor), well under a few seconds.
    t = time.perf_counter()
    seq = inputs.synthetic(kind, n=65_536, d=64, heads=1)
    assert seq.q.shape == (1, 1, 65_536, 64) and torch.isfinite(seq.k).all()
    assert time.perf_counter() - t < 10
