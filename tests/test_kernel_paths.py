"""The kernels' faster paths held to their plain forms at float64: dense weights formed in query chunks
against one whole-matrix softmax, the sparse kernel's span matmul against its per-key gather and against
a masked dense softmax, and the linked view's batched pooling against ``pool2d`` per head."""
import threading

import numpy as np
import pytest
import torch

from xviz.kernels import dense, sparse

from .conftest import make_qkv

TOL = 1e-12  # float64: the same softmax of the same logits, summed in another order at most


def plain_softmax(q, k, scale, causal, bias=None):
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale
    if bias is not None:
        logits = logits + bias
    if causal:
        logits = logits.masked_fill(dense.causal_mask(q.shape[-2], k.shape[-2]), float("-inf"))
    return torch.softmax(logits, -1)


@pytest.mark.parametrize("nq, nk, causal, bias_shape", [
    (37, 37, False, None), (37, 37, True, None), (20, 45, False, (20, 45)), (45, 45, True, (2, 3, 45, 45)),
    (30, 30, False, (1, 1, 1, 30)),
])
def test_dense_weights_in_chunks_equal_one_softmax(monkeypatch, nq, nk, causal, bias_shape):
    monkeypatch.setattr(dense, "DENSE_CHUNK_ELEMENTS", 2 * 3 * nk * 4 + 5)  # ragged chunks of 4 rows
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, nq, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 3, nk, 8, generator=g, dtype=torch.float64)
    bias = None if bias_shape is None else torch.randn(*bias_shape, generator=g, dtype=torch.float64)
    got = dense.dense_weights(q, k, 0.3, causal, bias)
    want = plain_softmax(q, k, 0.3, causal, bias)
    assert got.dtype == torch.float64 and got.shape == want.shape
    assert torch.allclose(got, want, atol=TOL, rtol=0)


def window_keys(w, n):
    def keys_for(rows):
        return rows[:, None] + torch.arange(-w, w + 1)[None, :], None
    return keys_for


def spread_keys(n):
    def keys_for(rows):  # a local key and one far away: the span is the whole sequence (the gather path)
        return torch.stack([rows, (rows * 7 + 3) % n], -1), None
    return keys_for


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("make_keys, nq", [(lambda n: window_keys(3, n), 50), (spread_keys, 50),
                                           (lambda n: window_keys(2, n), 23)])
def test_sparse_span_matmul_equals_the_gather_and_a_masked_softmax(monkeypatch, causal, make_keys, nq):
    n = 50
    q, k, v = make_qkv(b=1, h=2, n=n, d=8, dtype=torch.float64, seed=1)
    q = q[:, :, :nq]
    ctx = type("Ctx", (), {"scale": 0.35, "causal": causal})()
    keys_for = make_keys(n)
    span = sparse.sparse_attention(q, k, v, ctx, keys_for, width=8)
    monkeypatch.setattr(sparse, "LOCAL_SPAN", 0)  # every chunk takes the per-key gather
    gather = sparse.sparse_attention(q, k, v, ctx, keys_for, width=8)
    assert torch.allclose(span.out, gather.out, atol=TOL, rtol=0)
    m = span.matrix()
    assert torch.allclose(m, gather.matrix(), atol=TOL, rtol=0)
    mask = span.artifacts["mask"]()
    outside = torch.zeros(mask.shape, dtype=torch.float64).masked_fill(~mask, float("-inf"))
    want = plain_softmax(q, k, 0.35, causal=False, bias=outside)  # the mask holds the causal cut already
    assert torch.allclose(m, torch.nan_to_num(want), atol=TOL, rtol=0)


@pytest.mark.parametrize("shape, cells", [((3, 37, 50), 8), ((2, 16, 16), 16), ((1, 9, 40), 4)])
def test_pool_heads_equals_pool2d_per_head(shape, cells):
    from xviz.figures.base import pool2d
    from xviz.figures.linked import pool_heads

    x = torch.rand(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got, fr, fc = pool_heads(x, cells)
    for h in range(shape[0]):
        want = pool2d(x[h].numpy(), cells, "mean")
        assert (fr, fc) == (want.fr, want.fc)
        np.testing.assert_allclose(got[h], want.z, rtol=1e-6)  # both float32 results of float64 means


def test_is_loaded_answers_while_a_load_holds_the_lock():
    """The app polls is_loaded while the model loads in the background (holding the loader's lock for
    seconds): it must answer at once, not wait for the load."""
    from xviz.inputs import model as model_lib

    answer = []
    with model_lib._LOCK:  # standing in for a load in progress
        probe = threading.Thread(target=lambda: answer.append(model_lib.is_loaded(None)))
        probe.start()
        probe.join(5)
        assert not probe.is_alive(), "is_loaded waited on the loader's lock"
    assert answer in ([True], [False])
