"""xviz.decode: KV-cache policies replayed step by step, their fast paths against plain references,
the identities that pin each policy down, the needle task, errors, plugins, the CLI and the figures."""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import xviz
import xviz.decode as dec
from xviz import inputs
from xviz.cli import main
from xviz.decode.reference import reference_kept, reference_measures
from xviz.figures import payload_bytes
from xviz.figures.decode import budget_sweep_figure, cache_strip, decode_curves, step_attention

from .conftest import make_qkv

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ("full", "window", "sinks", "h2o", "tova", "snapkv", "quest")
# float64 inputs: the chunked replay and the per-row reference differ only in summation order,
# ~1e-15 measured; 1e-10 leaves room and still catches any real difference (a wrong key is ≥ 1e-3).
TOL64 = 1e-10


def qkv(n=48, h=3, b=2, d=8, seed=0):
    return make_qkv(b=b, h=h, n=n, d=d, seed=seed)


# ------------------------------------------------------------------ identities
@pytest.mark.parametrize("policy", BUILTIN)
@pytest.mark.parametrize("extra", [0, 9])
def test_budget_at_least_n_is_full_attention(policy, extra):
    q, k, v = qkv(n=64)  # 64 = 4 pages of 16: Quest's ⌊budget / page⌋ pages cover everything
    r = dec.simulate(policy, q, k, v, budget=64 + extra, prefill=10)
    assert r.error.abs().max() < TOL64 and (r.mass - 1).abs().max() < TOL64
    assert torch.equal(r.kept, (r.steps + 1).to(torch.int32).expand_as(r.kept))


POLICY_CASES = [("full", {}), ("window", {}), ("sinks", {"sinks": 3}), ("h2o", {}), ("h2o", {"recent": 0.2}),
                ("h2o", {"recent": 1.0}), ("tova", {}), ("tova", {"heads": "each"}), ("snapkv", {"observe": 6}),
                ("snapkv", {"observe": 6, "kernel": 4, "pooling": "max"}), ("quest", {"page": 4}),
                ("quest", {"page": 5})]


@pytest.mark.parametrize("policy, params", POLICY_CASES)
@pytest.mark.parametrize("budget, prefill", [(12, 20), (12, 5), (7, 40), (60, 20)])
def test_fast_path_equals_reference(policy, params, budget, prefill):
    """Every step's kept set exactly as the plain per-head, per-step form; mass and error to TOL64."""
    q, k, v = qkv(n=50)
    r = dec.simulate(policy, q, k, v, budget=budget, prefill=prefill, **params)
    ref = reference_kept(policy, q, k, v, budget=budget, prefill=prefill, **params)
    for i, t in enumerate(range(prefill, 50)):
        assert torch.equal(r.kept_at(t), ref[i]), f"step {t}"
    mass, error = reference_measures(ref, q, k, v, prefill=prefill)
    assert (r.mass - mass).abs().max() < TOL64 and (r.error - error).abs().max() < TOL64
    assert torch.equal(r.kept, torch.stack([m.sum(-1) for m in ref], -1).to(torch.int32))


@pytest.fixture
def sink_window_variant():
    """The example plugin's sinks + window attention, registered for this test only if it is not already."""
    from tests.plugins import fresh

    sys.path.insert(0, str(ROOT / "examples"))
    mine = False
    try:
        xviz.get_variant("sink_window")
    except xviz.UnknownVariantError:
        fresh("sink_window")
        mine = True
    yield
    if mine:
        xviz.unregister_variant("sink_window")
    sys.path.remove(str(ROOT / "examples"))


@pytest.mark.parametrize("sinks, window", [(4, 8), (1, 3), (0, 5)])
def test_sinks_policy_is_the_sink_window_attention(sink_window_variant, sinks, window):
    """The sink_window variant reads sinks + [t − w, t]: w + 1 recent keys, so budget = sinks + w + 1."""
    q, k, v = qkv(n=40)
    a = xviz.run("sink_window", q, k, v, causal=True, sinks=sinks, window=window)
    e = xviz.run("exact", q, k, v, causal=True)
    r = dec.simulate("sinks", q, k, v, budget=sinks + window + 1, prefill=1, sinks=sinks)
    for t in range(1, 40):
        _, weights = r.weights_at(t)
        out = (weights.unsqueeze(-2) @ v[..., :t + 1, :]).squeeze(-2)
        assert (out - a.out[..., t, :]).abs().max() < TOL64  # float64, one softmax row each way
    rel = (a.out - e.out).norm(dim=-1) / e.out.norm(dim=-1)
    assert (r.error - rel[..., 1:]).abs().max() < TOL64


def test_window_keeps_exactly_the_last_w_positions():
    q, k, v = qkv(n=45)
    for w in (1, 5, 16):
        r = dec.simulate("window", q, k, v, budget=w, prefill=7)
        for t in range(7, 45):
            expected = torch.arange(t + 1) > t - w
            assert torch.equal(r.kept_at(t), expected.expand(2, 3, -1)), (w, t)


@pytest.mark.parametrize("recent", [0.0, 0.25, 0.5, 1.0])
def test_h2o_keeps_the_recent_window_within_budget(recent):
    q, k, v = qkv(n=60)
    budget = 12
    r = dec.simulate("h2o", q, k, v, budget=budget, prefill=20, recent=recent)
    span = max(1, min(budget, int(recent * budget + 0.5)))
    for t in range(20, 60):
        kept = r.kept_at(t)
        assert kept[..., t - span + 1:].all(), t
        assert (kept.sum(-1) <= budget).all() and (kept.sum(-1) == budget).all()  # full from the first step


def test_tova_snapkv_quest_invariants():
    q, k, v = qkv(n=60)
    tova = dec.simulate("tova", q, k, v, budget=10, prefill=20)
    assert (tova.kept == 10).all()
    assert all(torch.equal(tova.kept_at(t), tova.kept_at(t)[:, :1].expand(-1, 3, -1)) for t in range(20, 60))  # one set per layer
    snap = dec.simulate("snapkv", q, k, v, budget=10, prefill=20, observe=4)
    assert torch.equal(snap.kept[0, 0], torch.arange(10, 50, dtype=torch.int32))  # b at the first step, then +1
    assert snap.kept_at(59)[..., 16:].all()  # the observation window and every generated token
    quest = dec.simulate("quest", q, k, v, budget=12, prefill=20, page=4)
    assert (quest.kept <= 12).all() and quest.reads_only
    assert all(quest.kept_at(t)[..., t // 4 * 4:].all() for t in range(20, 60))  # the current page is read
    assert (quest.resident_bytes[..., -1] == 60 * quest.bytes_per_key).all()


def test_quest_with_every_page_read_is_full_attention():
    q, k, v = qkv(n=70)  # 9 pages of 8, the last one partial
    r = dec.simulate("quest", q, k, v, budget=72, prefill=3, page=8)
    assert r.error.abs().max() < TOL64 and (r.mass - 1).abs().max() < TOL64


def test_tiny_kept_mass_falls_back_to_the_exact_softmax():
    """Key 0 takes all of step 15's float32 weight (logit 200); the window evicted it, so the kept
    weights underflow to 0 and the restricted softmax is recomputed from the logits."""
    q, k, v = make_qkv(b=1, h=1, n=16, d=4, dtype=torch.float32)
    k[..., 0, :] = torch.tensor([20.0, 0, 0, 0])
    q[..., 15, :] = torch.tensor([20.0, 0, 0, 0])
    r = dec.simulate("window", q, k, v, budget=4, prefill=8)
    ref = reference_kept("window", q, k, v, budget=4, prefill=8)
    mass, error = reference_measures(ref, q, k, v, prefill=8)
    assert r.mass[0, 0, -1] < 1e-30 and torch.isfinite(r.error).all()
    # float32 replay against the float64 reference: ~1e-7 relative, 1e-4 is loose but decisive
    # (without the fallback the error would be NaN or 1).
    assert torch.allclose(r.error.double(), error, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ needle
def test_needle_full_finds_it_a_short_window_does_not():
    seq = inputs.synthetic("needle", n=256, d=32, heads=4, seed=0)
    needle, query = seq.meta["needle"], seq.meta["query"]
    assert (needle, query) == (round(0.1 * 255), 255) and seq.tokens[needle] == "needle"
    full, short, long = dec.simulate_many(["full", "window", "window"], seq.q, seq.k, seq.v, budget=64, prefill=128)
    assert dec.needle_found(full, needle, query).all()
    assert not dec.needle_found(short, needle, query).any()  # 64 < query − needle = 230
    wide = dec.simulate("window", seq.q, seq.k, seq.v, budget=query - needle + 1, prefill=128)
    assert dec.needle_found(wide, needle, query).all()  # the window reaches the needle: found again


def test_needle_knobs_move_it():
    seq = inputs.synthetic("needle", n=100, d=16, heads=2, needle=0.5, query=0.8)
    assert (seq.meta["needle"], seq.meta["query"]) == (50, 79)
    full = dec.simulate("full", seq.q, seq.k, seq.v, budget=8, prefill=60)
    assert dec.needle_found(full, 50, 79).all()
    with pytest.raises(xviz.ParameterError, match="needle = 90"):
        dec.needle_found(full, 90, 79)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, message", [
    (dict(budget=0), "budget = 0 must be at least 1"),
    (dict(budget=2.5), "budget = 2.5 must be a whole number"),
    (dict(budget=8, prefill=40), r"prefill = 40 must be in \[1, N − 1\] = \[1, 39\]"),
    (dict(budget=8, prefill=0), "prefill = 0"),
    (dict(budget=8, causal=False), "decoding is causal by definition"),
    (dict(budget=8, scale=-1.0), "scale = -1.0 must be a positive"),
    (dict(budget=8, window=3), "has no parameter 'window'"),
])
def test_bad_arguments_raise_one_sentence(kwargs, message):
    q, k, v = qkv(n=40)
    with pytest.raises(xviz.XvizError, match=message):
        dec.simulate("window", q, k, v, **kwargs)


def test_bad_policy_parameters_and_inputs():
    q, k, v = qkv(n=40)
    with pytest.raises(xviz.ParameterError, match="unknown KV-cache policy 'nope'; known policies: full"):
        dec.simulate("nope", q, k, v, budget=8)
    with pytest.raises(xviz.ParameterError, match="sinks = 8 must be smaller than the budget"):
        dec.simulate("sinks", q, k, v, budget=8, sinks=8)
    with pytest.raises(xviz.ParameterError, match="page = 16 must be at most the budget"):
        dec.simulate("quest", q, k, v, budget=8)
    with pytest.raises(xviz.ParameterError, match="recent = 1.5 is outside its valid range"):
        dec.simulate("h2o", q, k, v, budget=8, recent=1.5)
    with pytest.raises(xviz.InputError, match="at least 2"):
        dec.simulate("full", q[..., :1, :], k[..., :1, :], v[..., :1, :], budget=8)
    bad = q.clone()
    bad[0, 0, 3, 0] = float("nan")
    with pytest.raises(xviz.InputError, match="NaN"):
        dec.simulate("full", bad, k, v, budget=8)
    r = dec.simulate("window", q, k, v, budget=8, prefill=10)
    with pytest.raises(xviz.ParameterError, match=r"step = 5 must be a decoded position in \[10, 39\]"):
        r.kept_at(5)


# ------------------------------------------------------------------ registry and plugins
def _broken(kind):
    def fn(replay):
        def select(chunk):
            c, t1 = chunk.t1 - chunk.t0, chunk.t1
            if kind == "float":
                return torch.ones(1, 1, c, t1)
            if kind == "shape":
                return torch.ones(c + 1, t1, dtype=torch.bool)
            if kind == "drops":
                return torch.zeros(1, 1, c, t1, dtype=torch.bool)
            kept = torch.ones(1, 1, c, t1, dtype=torch.bool)  # "revives": key 0 evicted at even steps only
            kept[..., (chunk.positions % 2 == 0), 0] = False
            kept[..., torch.arange(c), chunk.positions] = True
            return kept
        return select
    return fn


@pytest.mark.parametrize("kind, message", [("float", "not a bool tensor"), ("shape", "of shape"),
                                           ("drops", "dropped the token being decoded"),
                                           ("revives", "brought an evicted key back")])
def test_a_broken_plugin_policy_is_named(kind, message):
    spec = dec.register_policy(dec.PolicySpec(name=f"broken_{kind}", display_name="broken", paper="test",
                                              fn=_broken(kind)))
    try:
        q, k, v = qkv(n=20)
        with pytest.raises(xviz.VariantError, match=f"policy 'broken_{kind}' \\(tests.test_decode\\).*{message}"):
            dec.simulate(spec.name, q, k, v, budget=4, prefill=5)
    finally:
        dec.unregister_policy(spec.name)


def test_registry_names_are_protected_and_listing_is_thread_safe():
    with pytest.raises(xviz.XvizError, match="already registered"):
        dec.register_policy(dec.get_policy("window"))
    dec.register_policy(dec.get_policy("window"), replace=True)
    with pytest.raises(xviz.XvizError, match="reserved"):
        dec.PolicySpec(name="x", display_name="x", paper="x", fn=lambda r: None,
                       params=(xviz.Param("budget", "int", 1, "clashes"),))
    seen = []
    threads = [threading.Thread(target=lambda: seen.append([p.name for p in dec.list_policies()])) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and all(s == seen[0] for s in seen) and seen[0][0] == "full"
    assert set(BUILTIN) <= set(seen[0])


PLUGIN = '''
from xviz.decode import PolicySpec, register_policy

def first_and_last(replay):
    return lambda chunk: ((chunk.keys[None] == 0) | (chunk.keys[None] == chunk.positions[:, None]))[None, None]

register_policy(PolicySpec(name="first_last", display_name="First and last", paper="test fixture",
                           fn=first_and_last))
'''


def test_plugin_policy_through_xviz_plugins_and_the_cli(tmp_path):
    (tmp_path / "first_last_plugin.py").write_text(PLUGIN)
    env = dict(os.environ, XVIZ_PLUGINS="first_last_plugin", PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    proc = subprocess.run([sys.executable, "-m", "xviz", "decode", "first_last", "--n", "32", "--d", "8",
                           "--heads", "2", "--budget", "2"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "policy first_last" in proc.stdout and "cache bytes: 256 at the last step" in proc.stdout  # 2 keys·2 heads·(8+8)·4


# ------------------------------------------------------------------ sweeps, CLI, figures
def test_budget_sweep_matches_single_replays():
    q, k, v = qkv(n=48)
    rows = dec.budget_sweep(["window", "sinks", "h2o"], [2, 8, 24], q, k, v, prefill=10, params={"sinks": {"sinks": 4}})
    assert [(r["policy"], r["budget"]) for r in rows] == [(p, b) for p in ("window", "sinks", "h2o") for b in (2, 8, 24)]
    bad = rows[3]  # sinks = 4 cannot run at budget 2
    assert np.isnan(bad["mean_error"]) and "sinks = 4 must be smaller" in bad["note"]
    for row in rows[4:6] + rows[6:]:
        s = dec.simulate(row["policy"], q, k, v, budget=row["budget"], prefill=10,
                         **({"sinks": 4} if row["policy"] == "sinks" else {})).summary()
        assert abs(s["mean_error"] - row["mean_error"]) < TOL64 and abs(s["mean_mass"] - row["mean_mass"]) < TOL64
    window = [r["mean_mass"] for r in rows[:3]]
    assert window == sorted(window)  # a wider window holds a superset of the keys


def test_cli_writes_files(tmp_path, capsys):
    npz, csv, html = tmp_path / "r.npz", tmp_path / "r.csv", tmp_path / "r.html"
    assert main(["decode", "h2o", "--n", "64", "--d", "8", "--heads", "2", "--budget", "16", "--prefill", "32",
                 "--param", "recent=0.25", "--out", str(npz), "--csv", str(csv), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    for text in ("final kept mass:", "mean kept mass:", "mean output error:", "max output error:", "cache bytes:",
                 "not causal as given", "needle at 6, query at 63: found in"):
        assert text in out
    data = np.load(npz, allow_pickle=False)
    assert data["mass"].shape == (1, 2, 32) and data["evicted_at"].shape == (1, 2, 64)
    lines = csv.read_text().splitlines()
    assert lines[0] == "batch,head,step,kept,mass,error,cache_bytes" and len(lines) == 1 + 2 * 32
    assert b"plotly" in html.read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["--budget", "0"], "budget = 0 must be at least 1"),
    (["--budget", "abc"], "--budget 'abc' must be a whole number"),
    (["--prefill", "999"], "prefill = 999 must be in"),
    (["--param", "recent"], "must look like name=value"),
    (["--param", "recent=2"], "recent = 2.0 is outside its valid range"),
    (["--input", "synthetic:nope"], "unknown synthetic input kind"),
])
def test_cli_user_errors_are_one_line(argv, message, capsys):
    assert main(["decode", "h2o", "--n", "32", "--d", "8", "--heads", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_bad_policy_from_the_shell():
    proc = subprocess.run([sys.executable, "-m", "xviz", "decode", "no_such_policy"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: unknown KV-cache policy") and "Traceback" not in proc.stderr


def test_figures_stay_small_at_4k_and_12_heads():
    seq = inputs.synthetic("needle", n=4096, d=16, heads=12, seed=0)
    results = dec.simulate_many(["window", ("sinks", {"sinks": 4}), "quest"], seq.q, seq.k, seq.v, budget=256,
                                prefill=3000)
    figs = [cache_strip(results[1], 4095, marks={"needle": seq.meta["needle"]}),
            step_attention(results[1], 4095, head=3, tokens=seq.tokens), decode_curves(results)]
    for fig in figs:
        assert payload_bytes(fig) < 4 * 2**20
    strip = figs[0].data[0]
    assert strip.z.shape == (12, 1024) and set(np.unique(strip.z)) == {0, 1, 2}  # evicted, kept, sinks
    rows = dec.budget_sweep(["window", "h2o"], [16, 64], seq.q[..., :256, :], seq.k[..., :256, :],
                            seq.v[..., :256, :])
    sweep = budget_sweep_figure(rows)
    assert [t.name for t in sweep.data] == ["window", "h2o"] and list(sweep.data[0].x) == [16, 64]


def test_a_4k_replay_over_12_heads_finishes():
    """The step-by-step path (H2O) at N = 4096, 12 heads, d = 64: timed for the record, not asserted."""
    q, k, v = make_qkv(b=1, h=12, n=4096, d=64, dtype=torch.float32)
    start = time.perf_counter()
    r = dec.simulate("h2o", q, k, v, budget=512, prefill=1)
    print(f"h2o replay, 4096 tokens x 12 heads: {time.perf_counter() - start:.1f} s")
    assert r.mass.shape == (1, 12, 4095) and (r.kept <= 512).all() and torch.isfinite(r.error).all()
