"""Property-based fuzzing of ``python -m xviz`` (hypothesis), in process through ``xviz.cli.main``.

Generated command lines — every subcommand with numbers that are not numbers, zero and negative
sizes, unknown names, output paths in missing folders or that are folders, heads out of range,
malformed inputs and parameters, and plugins whose function returns the wrong shape, dtype, NaN or
raises — must end in exit 0, or exit 2 with exactly one line on stderr starting with ``error: ``.
A traceback, another exit code or a multi-line error is an escape. Output files go to a temporary
folder.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import traceback

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import xviz
from xviz.cli import main
from xviz.core.registry import VariantSpec, register_variant, unregister_variant
from xviz.kernels.costs import quadratic_cost

from .test_fuzz_inputs import FILES
from .test_fuzz_registry import Outcome, fuzz_settings

MAX_MESSAGE = 500


# ------------------------------------------------------------------ plugins that return the wrong thing

def _wrong_shape(q, k, v, ctx):
    return xviz.Output(out=v[..., :1, :])


def _wrong_dtype(q, k, v, ctx):
    return xviz.Output(out=v.to(torch.float16 if v.dtype != torch.float16 else torch.float32))


def _nan(q, k, v, ctx):
    return xviz.Output(out=torch.full_like(v, float("nan")))


def _not_output(q, k, v, ctx):
    return v


def _raises(q, k, v, ctx):
    raise RuntimeError("plugin bug: index 7 is out of bounds")


def _bad_matrix(q, k, v, ctx):
    return xviz.Output(out=v.clone(), matrix=lambda: torch.zeros(3))


PLUGINS = {"plugin_wrong_shape": _wrong_shape, "plugin_wrong_dtype": _wrong_dtype, "plugin_nan": _nan,
           "plugin_not_output": _not_output, "plugin_raises": _raises, "plugin_bad_matrix": _bad_matrix}


@contextlib.contextmanager
def broken_plugins():
    """The broken plugins are in the catalog only while the CLI fuzz runs (the registry tests
    parametrise over the whole catalog)."""
    for name, fn in PLUGINS.items():
        register_variant(VariantSpec(name=name, display_name=name, family="fixed pattern", paper="test fixture",
                                     complexity="O(N²·d)", complexity_class="quadratic", fn=fn,
                                     cost=quadratic_cost), replace=True)
    try:
        yield
    finally:
        for name in PLUGINS:
            unregister_variant(name)


# ------------------------------------------------------------------ command lines

small = st.integers(1, 24).map(str)
bad_numbers = st.sampled_from(["0", "-3", "abc", "1.5", "", "1e3", "99999999999"])
VARIANTS = ["exact", "sliding_window", "performer", "nystrom", "linformer", "bigbird", "reformer", "routing"]


class Fields:
    """Half of the command lines are valid throughout; the other half has exactly one bad field,
    so that every kind of fault is tried and valid runs still happen."""

    def __init__(self, draw, names):
        self.draw, self.bad = draw, draw(st.sampled_from([None] * len(names) + list(names)))

    def pick(self, field: str, good, bad):
        return self.draw(bad if self.bad == field else good)


def _input(draw, f: Fields, folder: str) -> str:
    kind = f.pick("input", st.sampled_from(["synthetic", "synthetic", "file", "sample", "text"]),
                  st.sampled_from(["file", "bogus", "text", "sample"]))
    if kind == "synthetic":
        return "synthetic:" + f.pick("input", st.sampled_from(["clustered", "gaussian", "positional", "periodic"]),
                                     st.just("nope"))
    if kind == "file":
        ext = draw(st.sampled_from(sorted(FILES)))
        path = os.path.join(folder, "input" + ext)
        with open(path, "wb") as fh:
            fh.write(draw(FILES[ext]))  # mostly malformed: the loaders' fuzz strategies
        return "file:" + f.pick("input", st.just(path), st.sampled_from([folder, os.path.join(folder, "missing.npz")]))
    if kind == "sample":
        return "sample:" + f.pick("input", st.sampled_from(["Harbour image", "Hourly demand series"]), st.just("nope"))
    if kind == "text":
        return "text:" + f.pick("input", st.just("The cat sat on the mat."), st.sampled_from(["", "\x00\x01", " "]))
    return draw(st.text(max_size=30))


@st.composite
def run_args(draw, folder: str):
    f = Fields(draw, ["name", "input", "n", "d", "heads", "seed", "layer", "param", "out", "html"])
    name = f.pick("name", st.sampled_from(VARIANTS), st.sampled_from(["no_such_variant", ""] + list(PLUGINS)))
    argv = ["run", name, "--input", _input(draw, f, folder), "--n", f.pick("n", small, bad_numbers),
            "--d", f.pick("d", small, bad_numbers),
            "--heads", f.pick("heads", st.integers(1, 3).map(str), bad_numbers)]
    argv += ["--seed", f.pick("seed", st.sampled_from(["0", "7", str(2**63 - 1)]), st.sampled_from(["-1", str(2**63)]))]
    argv += ["--layer", f.pick("layer", st.sampled_from(["0", "5"]), st.sampled_from(["6", "-1", "x"]))]
    argv += ["--causal"] if draw(st.booleans()) else []
    if draw(st.booleans()) or f.bad == "param":
        argv += ["--param", f.pick("param", st.sampled_from(["window=2", "features=8", "landmarks=4", "rank=2",
                                                             "block=2", "buckets=2", "clusters=2"]),
                                   st.sampled_from(["window=0", "window", "=3", "nope=1", "block=abc", "rank=-1"]))]
    if draw(st.booleans()) or f.bad == "out":
        argv += ["--out", f.pick("out", st.just(os.path.join(folder, "r.npz")),
                                 st.sampled_from([os.path.join(folder, "no", "such", "r.npz"), folder]))]
    if draw(st.booleans()) or f.bad == "html":
        argv += ["--html", f.pick("html", st.just(os.path.join(folder, "r.html")),
                                  st.just(os.path.join(folder, "x", "r.html"))),
                 "--head", f.pick("html", st.sampled_from(["0", "1"]), st.sampled_from(["99", "-1", "3"]))]
    return argv


@st.composite
def bench_args(draw, folder: str):
    f = Fields(draw, ["n", "repeats", "variants", "d", "heads", "out", "device", "dtype"])
    ns = st.lists(st.integers(8, 24), min_size=1, max_size=2).map(lambda v: ",".join(map(str, v)))
    argv = ["bench", "--n", f.pick("n", ns, st.sampled_from(["abc", "0", "16,", "-4", "16,abc", ""])),
            "--repeats", f.pick("repeats", st.just("1"), st.sampled_from(["0", "-2", "x"])),
            "--variants", f.pick("variants", st.sampled_from(["exact", "sliding_window", "exact,linear"]),
                                 st.sampled_from(["nope", ",", "exact,nope"])),
            "--d", f.pick("d", st.just("4"), st.sampled_from(["0", "abc"])),
            "--heads", f.pick("heads", st.just("1"), st.sampled_from(["0", "-1"])),
            "--out", f.pick("out", st.just(os.path.join(folder, "bench")),
                            st.sampled_from([os.path.join(folder, "no", "such", "b"), os.path.join(folder, "f.txt")]))]
    open(os.path.join(folder, "f.txt"), "w").close()
    argv += ["--device", f.pick("device", st.just("cpu"), st.sampled_from(["cuda", "tpu"]))]
    argv += ["--dtype", f.pick("dtype", st.sampled_from(["float32", "bfloat16"]), st.just("int8"))]
    return argv


@st.composite
def command_lines(draw, folder: str):
    which = draw(st.sampled_from(["run", "run", "run", "bench", "show", "list", "other"]))
    if which == "run":
        return draw(run_args(folder))
    if which == "bench":
        return draw(bench_args(folder))
    if which == "show":
        return ["show", draw(st.sampled_from(VARIANTS + ["no_such_variant", ""]))]
    if which == "list":
        return ["list"] + draw(st.lists(st.sampled_from(["--x", "extra"]), max_size=1))
    return draw(st.lists(st.sampled_from(["decode", "--help-me", "-x", "check", "run", ""]), max_size=3))


def outcome(argv: list[str]) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
    except Exception as exc:  # noqa: BLE001
        return Outcome("escape", f"traceback {type(exc).__name__}: {exc} @ {traceback.format_exc(limit=-3)}")
    text = err.getvalue()
    if code == 0:
        return Outcome("result")
    lines = text.strip().splitlines()
    if code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) <= MAX_MESSAGE \
            and "Traceback" not in text:
        return Outcome("error", "exit 2")
    return Outcome("escape", f"exit {code} with stderr {text[-600:]!r}")


def check(argv: list[str]) -> None:
    o = outcome(argv)
    assert o.kind != "escape", f"{argv}: {o.detail}"


# Escapes found by this suite (and in the issue), kept as regression cases.
REGRESSION_ARGV = [
    ["run", "exact", "--n", "16", "--d", "4", "--heads", "2", "--out", "{tmp}/no/such/folder/r.npz"],
    ["run", "exact", "--n", "16", "--d", "4", "--heads", "2", "--head", "99", "--html", "{tmp}/r.html"],
    ["bench", "--n", "abc"], ["bench", "--repeats", "0"], ["bench", "--d", "0"], ["bench", "--n", "0"],
    ["bench", "--device", "cuda", "--n", "16", "--variants", "exact", "--out", "{tmp}/b"],
    ["run", "plugin_wrong_shape", "--n", "8", "--d", "4", "--heads", "1"],
    ["run", "plugin_nan", "--n", "8", "--d", "4", "--heads", "1"],
    ["run", "plugin_raises", "--n", "8", "--d", "4", "--heads", "1"],
    ["run", "plugin_bad_matrix", "--n", "8", "--d", "4", "--heads", "1", "--out", "{tmp}/r.npz"],
]


@pytest.mark.parametrize("argv", REGRESSION_ARGV, ids=lambda a: " ".join(a[:4]))
def test_regressions(argv, tmp_path):
    with broken_plugins():
        o = outcome([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert o.kind == ("result" if argv[0] == "bench" and "cuda" in argv and torch.cuda.is_available() else "error"), o


def test_bench_n_zero_is_refused_not_ignored(tmp_path):
    o = outcome(["bench", "--n", "0", "--out", str(tmp_path / "b")])
    assert o.kind == "error" and not (tmp_path / "b").exists()


def test_run_at_large_n_says_so_before_starting(tmp_path, monkeypatch):
    """Over the matrix budget the CLI prints a notice first and computes matrix-free metrics."""
    monkeypatch.setattr(xviz.core.result, "_budget", 2 * 1 * 2 * 64 * 64 * 4 - 1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "sliding_window", "--n", "64", "--d", "8", "--heads", "2", "--out", str(tmp_path / "r.npz")])
    text = out.getvalue()
    assert code == 0 and text.startswith("notice: at N = 64") and "rel_out:" in text
    import numpy as np

    assert "matrix" not in np.load(tmp_path / "r.npz").files


CLI_EXAMPLES = 300  # quick profile; the long one runs 25× as many


@fuzz_settings(CLI_EXAMPLES)
@given(st.data())
def test_any_command_line(data):
    with tempfile.TemporaryDirectory() as folder, broken_plugins():
        check(data.draw(command_lines(folder)))
