"""What moved out of the pages, tested directly: the catalog walk of Compare and Patterns, the LSH page's
views, resumable jobs, the byte-bounded cache, the heavy-work allowance, the input dispatcher, and the
escaping of every echoed value."""
import math
import threading

import numpy as np
import pytest
import torch

import xviz
from xviz.analysis import catalog
from xviz.app import lsh_views
from xviz.app.allowance import Allowance
from xviz.app.jobs import Job
from xviz.app.cache import BoundedCache
from xviz.core.registry import Shape
from xviz.inputs import InputSpec

from .conftest import make_qkv


def runner(q, k, v, causal=False):
    return catalog.default_runner(q, k, v, causal, 0)


def test_compare_rows_cover_the_catalog_and_name_failures():
    q, k, v = make_qkv(b=1, h=2, n=40, d=8, dtype=torch.float32)
    exact = xviz.run("exact", q, k, v)
    rows = list(catalog.compare_rows(Shape(1, 2, 40, 8, v.shape[-1]), runner(q, k, v), exact, budget=8))
    assert [r.name for r in rows] == [s.name for s in xviz.list_variants()]
    ok = {r.name: r for r in rows if not r.error}
    assert ok["exact"].metrics["rel_out"] < 1e-6  # float32: the same kernel twice
    # the budget solved through the variant's cost: 2·4 + 1 = 9 keys is the nearest to 8 in log-ratio (7 is farther)
    assert ok["sliding_window"].params["window"] == 4
    assert math.isfinite(ok["sliding_window"].metrics["kl"])
    causal = list(catalog.compare_rows(Shape(1, 2, 40, 8, v.shape[-1], causal=True), runner(q, k, v, True), None,
                                       budget=8))
    noncausal = {s.name for s in xviz.list_variants() if not s.causal}
    assert {r.name for r in causal if "causal form" in r.error} == noncausal


def test_a_failing_variant_becomes_a_row_not_an_exception():
    q, k, v = make_qkv(b=1, h=1, n=16, d=4)

    def broken(name, params):
        if name == "linear":
            raise RuntimeError("boom")
        return catalog.default_runner(q, k, v, False, 0)(name, params)

    rows = {r.name: r for r in catalog.compare_rows(Shape(1, 1, 16, 4, v.shape[-1]), broken, None, budget=4)}
    assert rows["linear"].error.startswith("internal error in this variant: RuntimeError: boom")
    assert not rows["exact"].error


def test_pattern_rows_measure_density_and_mass_inside():
    q, k, v = make_qkv(b=1, h=2, n=32, d=8)
    a = xviz.run("exact", q, k, v).matrix()
    rows = {r.name: r for r in catalog.pattern_rows(Shape(1, 2, 32, 8, v.shape[-1]), runner(q, k, v), a, budget=5)}
    assert set(rows) == {s.name for s in catalog.pattern_specs()}
    w = rows["sliding_window"]
    reach = w.params["window"]
    keys = [min(31, i + reach) - max(0, i - reach) + 1 for i in range(32)]
    assert w.keys_per_row == pytest.approx(np.mean(keys))  # exact count of a band, edges included
    assert w.extra["density"] == pytest.approx(sum(keys) / 32**2)
    inside = (a * w.extra["mask"]).sum(-1)
    assert torch.allclose(w.extra["inside"], inside)  # float64 sums


def test_lsh_views_read_ids_by_declared_dims():
    q, k, v = make_qkv(b=1, h=2, n=48, d=8, unit=True)
    spec = xviz.get_variant("reformer")
    r = xviz.run("reformer", q, k, v, buckets=4, rounds=3, chunk=8)
    g = lsh_views.groups(spec, r.artifacts, head=1, round_=2)
    assert g.rows.shape == (3, 48) and g.word == "bucket"
    assert torch.equal(g.query_ids, r.artifacts["buckets"][0, 1, 2])
    routing = xviz.get_variant("routing")
    rr = xviz.run("routing", q, k, v, clusters=4)
    gr = lsh_views.groups(routing, rr.artifacts, head=0)
    assert gr.rows.shape == (2, 48) and torch.equal(gr.key_ids, rr.artifacts["clusters"][0, 0, 1])
    clustered = xviz.get_variant("clustered")
    gc = lsh_views.groups(clustered, xviz.run("clustered", q, k, v, clusters=4).artifacts, head=0)
    assert gc.rows.shape == (1, 48) and int(gc.key_ids.abs().sum()) == 0  # columns stay in position order


def test_recall_theory_is_one_minus_the_miss_probability():
    q, k, v = make_qkv(b=1, h=1, n=32, d=8, unit=True)
    spec = xviz.get_variant("reformer")
    r = xviz.run("reformer", q, k, v, buckets=2, rounds=1, chunk=32)
    g = lsh_views.groups(spec, r.artifacts, head=0)
    sv = lsh_views.sorted_view(spec, r, q[:, :1].double(), k[:, :1].double(), g, head=0, topk=4, causal=False)
    grid = lsh_views.recall_theory(sv, q[:, :1].double(), k[:, :1].double(), rows=[1, 3], cols=[2], topk=4,
                                   shared_qk=True)
    # two buckets: p(θ) = 1 − θ/π, so r rounds keep a key with probability 1 − (θ/π)^r, averaged over the keys
    qs = torch.nn.functional.normalize(q[0, 0], dim=-1)
    ang = torch.arccos((qs @ qs.T).clamp(-1, 1))
    top = sv.missed.top
    th = ang.gather(-1, top)[sv.missed.counted].numpy()
    for i, rounds in enumerate([1, 3]):
        assert grid.recall[i, 0] == pytest.approx(np.mean(1 - (th / np.pi) ** rounds), abs=2e-3)  # interpolation


def test_projection_keeps_centroids_when_it_subsamples():
    q, k, v = make_qkv(b=1, h=1, n=64, d=8)
    spec = xviz.get_variant("routing")
    r = xviz.run("routing", q, k, v, clusters=5)
    pr = lsh_views.projection(spec, r.artifacts, q.double(), k.double(), 0, 0, [str(i) for i in range(64)], limit=40)
    centroids = np.nonzero(np.asarray(pr.kinds) == "centroid")[0]
    assert len(centroids) == 5 and set(centroids) <= set(pr.keep)
    assert pr.points.shape[0] == 64 + 64 + 5 and len(pr.keep) < pr.points.shape[0]


def test_job_resumes_and_restarts():
    job = Job.current(None, "sig", [1, 2, 3])
    it = job.run(lambda x: x * 10)
    next(it)
    job.stop()
    assert job.ordered() == [10] and job.stopped and not job.done
    job = Job.current(job, "sig", [1, 2, 3])  # the same settings: the same job
    job.resume()
    assert [r for _, r in job.run(lambda x: x * 10)] == [20, 30] and job.done
    assert Job.current(job, "other", [1]).results == {}  # new settings start afresh
    job.restart()
    assert job.pending == [1, 2, 3]


def test_bounded_cache_evicts_by_bytes_and_makes_once():
    c = BoundedCache(100)
    for key in "abc":
        c.get(key, lambda: torch.zeros(10))  # 40 bytes each
    assert "a" not in c and c.total == 80
    assert c.get("big", lambda: torch.zeros(100)).numel() == 100 and "big" not in c  # too big to keep
    grown = {"t": torch.zeros(1)}
    c.get("g", lambda: grown)
    grown["u"] = torch.zeros(20)  # an entry that grew (a lazy artifact built) is measured again on a hit
    c.get("g", lambda: None)
    assert c.total <= 100
    calls, gate = [], threading.Barrier(4)

    def make():
        calls.append(1)
        return torch.zeros(1)

    def ask():
        gate.wait()
        c.get("shared", make)

    ts = [threading.Thread(target=ask) for _ in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert len(calls) == 1  # four sessions asking at once: one computation


def test_bounded_cache_drops_entries_left_unused(monkeypatch):
    from xviz.app import cache

    clock = [1000.0]
    monkeypatch.setattr(cache.time, "monotonic", lambda: clock[0])
    c = BoundedCache(1000)
    c.get("old", lambda: torch.zeros(10))
    clock[0] += 50
    c.get("new", lambda: torch.zeros(10))
    clock[0] += 50
    assert c.expire(60) == 1 and "old" not in c and "new" in c and c.total == 40
    c.get("new", lambda: None)  # a hit counts as a use
    clock[0] += 59
    assert c.expire(60) == 0 and "new" in c
    clock[0] += 2
    assert c.expire(60) == 1 and len(c) == 0 and c.total == 0


def test_allowance_refuses_then_recovers():
    a = Allowance(10.0, window=60)
    assert a.take(6, now=0) is None and a.take(4, now=1) is None
    why = a.take(1, now=2)
    assert why and "allowance" in why and "58 s" in why
    assert a.take(6, now=61) is None  # the first spend has left the window


def test_input_spec_parses_keys_and_loads():
    s = InputSpec.parse("synthetic:periodic", n=32, d=8, heads=2)
    assert s.source == "synthetic" and s.seeded and s.key(1) != s.key(2)
    seq = s.load(seed=1)
    assert seq.q.shape == (1, 2, 32, 8)
    t = InputSpec.parse("text:hello there", layer=1)
    assert not t.seeded and t.key(1) == t.key(2)
    with pytest.raises(xviz.InputError, match="is not one of"):
        InputSpec.parse("nonsense")
    with pytest.raises(xviz.InputError, match="no file"):
        InputSpec.parse("file:/no/such/file.npz")


def test_cross_input_from_a_second_text():
    seq = InputSpec(source="text", text="The cat sat.", kv_text="A dog barked at the mailman today.").load()
    assert seq.cross and seq.q.shape[-2] != seq.k.shape[-2] and len(seq.key_labels) == seq.k.shape[-2]
    r = xviz.run("exact", seq.q, seq.k, seq.v)
    assert r.matrix().shape[-2:] == (seq.q.shape[-2], seq.k.shape[-2])


@pytest.mark.parametrize("value", [
    "[CLICK ME TO LOG IN](https://evil.example)", "![t](http://evil.example/track.png)",
    "bad :red[**INJECTED**] [click](http://x).npz", "<script>alert(1)</script>", "$x^2$", ":material/home:",
    "`code` _em_ ~strike~ # heading | table |"])
def test_escape_leaves_no_markup(value):
    from pages.ui.display import escape

    out = escape(value)
    for mark in "[]()!*_`<>:$~#|":
        # every markup character is preceded by a backslash (parentheses only matter after "]", now escaped)
        for i, ch in enumerate(out):
            if ch == mark and mark not in "()":
                assert i > 0 and out[i - 1] == "\\", (mark, out)
    assert len(escape("x" * 100_000)) <= 601


@pytest.mark.parametrize("causal", [False, True])
def test_exact_in_chunks_equals_one_call(causal):
    from xviz.analysis.exact_chunks import exact_in_chunks

    q, k, v = make_qkv(b=1, h=2, n=50, d=8)
    seen = []
    r = exact_in_chunks(q, k, v, causal=causal, rows=16, progress=lambda e, n: seen.append(e))
    ref = xviz.run("exact", q, k, v, causal=causal)
    assert (r.out - ref.out).abs().max() < 1e-12  # float64, the same kernel on row slices
    assert seen == [16, 32, 48, 50]
    assert torch.allclose(r.matrix(), ref.matrix())
