"""``xviz check``: the sample plugin passes; each deliberately broken variant fails exactly its check."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import xviz
from xviz.analysis.check import FAIL, check_variant, load_target
from xviz.figures.report import report_html

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ["broken_leaky_causal", "broken_length_dependent", "broken_unnormalised", "broken_nondeterministic",
          "broken_quadratic"]


@pytest.fixture(scope="module", autouse=True)
def broken_variants():
    """Registered only while these tests run, so the registry-wide tests never see them."""
    from tests.plugins import fresh

    fresh("tests.plugins.broken_variants")  # registers (again, after an earlier teardown)
    yield
    for name in BROKEN:
        xviz.unregister_variant(name)


@pytest.mark.parametrize("name, checks, cause", [
    # a leak into the past is also seen by appending tokens; an N-dependent choice only there
    ("broken_leaky_causal", ("causality (Jacobian)", "appending tokens moves no earlier output"), "depends on a later"),
    ("broken_length_dependent", ("appending tokens moves no earlier output",), "when tokens are appended (N = "),
    ("broken_unnormalised", ("rows are distributions",), "rows sum to 1.1"),
    ("broken_nondeterministic", ("determinism (fixed seed)",), "seed 5 differ"),
    ("broken_quadratic", ("complexity (memory exponent)",), "N×N tensor"),
])
def test_each_broken_variant_fails_exactly_its_check(name, checks, cause):
    results = check_variant(name)
    failed = {r.check: r.message for r in results if r.status == FAIL}
    assert set(failed) == set(checks), failed
    assert cause in failed[checks[0]]


def test_sample_plugin_passes_and_reports(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "examples"), str(ROOT)]))
    report = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "xviz", "check", "sink_window:sink_window", "--report", str(report)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failed" in proc.stdout and "PASS  causality (Jacobian)" in proc.stdout
    html = report.read_text()
    assert "all checks passed" in html and "plotly" in html


def test_cli_exits_non_zero_on_a_failed_check(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "xviz", "check", "tests.plugins.broken_variants:broken_unnormalised",
                           "--quick", "--report", str(tmp_path / "r.html")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert "FAIL  rows are distributions" in proc.stdout
    assert "1 check(s) failed" in (tmp_path / "r.html").read_text()


def test_bad_targets_get_one_line():
    for target in ("no_such_module_q:x", "tests.plugins.broken_variants:not_registered"):
        proc = subprocess.run([sys.executable, "-m", "xviz", "check", target], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_report_names_failures():
    results = check_variant("broken_unnormalised", quick=True)
    assert "1 check(s) failed" in report_html("broken_unnormalised", results)
    assert load_target("exact") == "exact"


def test_a_positional_variant_is_not_given_a_tolerance_it_exceeds():
    from xviz.analysis.check import PASS, check_permutation
    r = check_permutation(xviz.get_variant("sliding_window"))
    assert r.status == PASS and r.measured > 1e-3 and r.tolerance is None and r.message.startswith("positional")
    r = check_permutation(xviz.get_variant("performer"))
    assert r.status == PASS and r.measured < r.tolerance == 1e-8 and r.message.startswith("content-based")
