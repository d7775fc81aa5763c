"""The engine benchmark's target logic, roofline and tables on synthetic rows: pure functions, no
timing assertions (speed is measured by ``python -m xviz bench``, as ratios in one run)."""
import csv

import pytest

from xviz.analysis import bench, targets
from xviz.core.errors import ParameterError
from xviz.analysis.bench import PeerRow, Row


def row(variant, n, seconds, flops=None, family="fixed pattern", fused=None, peak=100.0):
    """A measured row as run_engine_bench makes it: GFLOP/s and share from ``flops`` at ``peak`` GFLOP/s."""
    r = Row(variant, n, seconds, 1e6, flops, family=family)
    if fused is not None:
        r.time_vs_fused = fused / seconds
    return bench._with_roofline(r, peak * 1e9)


def test_roofline_share_is_own_flops_over_the_measured_peak():
    r = row("sliding_window", 4096, 0.5, flops=20e9, peak=100.0)  # 40 GFLOP/s of 100
    assert r.gflops == pytest.approx(40.0) and r.peak_share == pytest.approx(0.4)
    assert row("x", 4096, None, flops=1e9).peak_share is None  # a failed run has no share


def test_peak_share_target_takes_the_worst_n_at_or_above_4k_for_pattern_families_only():
    rows = [row("bigbird", 2048, 1.0, flops=1e9, peak=100),  # 1 %, but N < 4K: not judged
            row("bigbird", 4096, 1.0, flops=40e9, peak=100),  # 40 %
            row("bigbird", 8192, 1.0, flops=25e9, peak=100),  # 25 %: the worst, so missed
            row("routing", 4096, 1.0, flops=31e9, peak=100, family="learnable pattern"),
            row("performer", 4096, 1.0, flops=1e9, peak=100, family="kernel")]  # not a pattern family
    got = {t.what.split()[0]: t for t in targets.peak_share_targets(rows)}
    assert set(got) == {"bigbird", "routing"}
    assert got["bigbird"].measured == pytest.approx(0.25) and got["bigbird"].met is False
    assert "N = 8192" in got["bigbird"].what
    assert got["routing"].met is True


def test_speedup_targets_at_4k():
    rows = [row("sliding_window", 4096, 1.0, fused=4.5), row("longformer", 4096, 1.0, fused=3.9),
            row("performer", 4096, 1.0, fused=3.0, family="kernel"), row("linear", 4096, 1.0, fused=2.9),
            row("sliding_window", 2048, 1.0, fused=1.0)]  # other N: not judged
    got = {t.what.split()[0]: t for t in targets.speedup_targets(rows)}
    assert got["sliding_window"].met and got["sliding_window"].measured == pytest.approx(4.5)
    assert got["longformer"].met is False  # window-like: ≥ 4×
    assert got["performer"].met and got["linear"].met is False  # kernels: ≥ 3×
    assert len(got) == 4


def test_bias_target_is_time_over_fused_exact():
    rows = [row("prior", 1024, 1.0, fused=0.9), row("prior", 4096, 1.0, fused=0.8),
            row("prior[bias=gaussian]", 4096, 1.0, fused=0.5), row("topk", 4096, 1.0, fused=0.1)]
    got = targets.bias_targets(rows)
    assert [t.met for t in got] == [True, False, False]  # 1.11× ok; 1.25× and 2× missed; topk is not biased
    assert got[0].measured == pytest.approx(1 / 0.9)


def test_peer_target_uses_the_fastest_peer_and_skips_failed_ones():
    peers = [PeerRow("sliding_window", "a", 4096, 1.0, 1.0), PeerRow("sliding_window", "b", 4096, 1.0, 0.5),
             PeerRow("linear", "c", 4096, 1.2, 1.0), PeerRow("linear", "d", 4096, 1.0, None, "peer failed")]
    got = {t.what.split()[0]: t for t in targets.peer_targets(peers)}
    assert got["sliding_window"].measured == pytest.approx(2.0) and got["sliding_window"].met is False  # vs b
    assert "vs b" in got["sliding_window"].what
    assert got["linear"].measured == pytest.approx(1.2) and got["linear"].met  # ≤ 1.25×


def test_targets_text_marks_every_target():
    rows = [row("sliding_window", 4096, 1.0, flops=50e9, fused=5.0), row("prior", 4096, 1.0, fused=0.5)]
    text = targets.targets_text(rows, [PeerRow("sliding_window", "p", 4096, 1.0, 2.0)])
    assert text.count("met ") == 3 and text.count("MISS") == 1  # share 50 %, 5×, peer 0.5× met; prior 2× missed


def test_parse_config():
    assert bench.parse_config("prior") == ("prior", {})
    assert bench.parse_config("prior[bias=gaussian,strength=2]") == ("prior", {"bias": "gaussian", "strength": "2"})
    for bad in ("prior[bias]", "prior[bias=gaussian"):
        with pytest.raises(ParameterError, match="name\\[param=value"):
            bench.parse_config(bad)


def test_tables_hold_the_roofline_and_the_targets(tmp_path):
    rows = [row(bench.FUSED, 1024, 0.01, flops=1e9, family="exact"), row("sliding_window", 1024, 0.02, flops=5e8),
            row("sliding_window", 4096, 0.05, flops=2e9), Row("svd", 4096, None, None, None, error="skipped")]
    peers = [PeerRow("sliding_window", "local-attention", 4096, 0.05, 0.04)]
    bench.write_tables(rows, tmp_path, "test machine", peers)
    records = {r["variant"]: r for r in bench.roofline(rows)}
    assert records["sliding_window"]["share@4096"] == pytest.approx(0.4)  # 40 GFLOP/s of 100
    assert records["matmul peak"]["gflops@1024"] == pytest.approx(100.0)
    with open(tmp_path / "roofline.csv") as f:
        assert {r["variant"] for r in csv.DictReader(f)} == {"matmul peak", bench.FUSED, "sliding_window", "svd"}
    md = (tmp_path / "engine.md").read_text()
    assert "share of matmul peak" in md and "Targets:" in md and "40.0%" in md
    assert "N = 4096" in (tmp_path / "roofline.md").read_text()
    assert "1.25" in (tmp_path / "peers.md").read_text()


def test_memory_growth_ignores_page_noise():
    rows = [Row("a", 1024, 1.0, 4096.0, 1.0), Row("a", 16384, 1.0, 64e6, 1.0),  # 4 KB: page noise
            Row("b", 1024, 1.0, 2e6, 1.0), Row("b", 16384, 1.0, 30e6, 1.0)]
    assert targets.memory_growth(rows, 1024, 16384) == {"b": pytest.approx(15.0)}
