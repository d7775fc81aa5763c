"""``python -m xviz``: list, show, run; every user error is one line on stderr with exit code 2."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xviz.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_list_and_show(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "bigbird" in out and "performer" in out and "kernel" in out
    assert main(["show", "performer"]) == 0
    assert "--param features=<int>" in capsys.readouterr().out


def test_run_prints_errors_and_writes_files(tmp_path, capsys):
    npz, html = tmp_path / "r.npz", tmp_path / "r.html"
    assert main(["run", "sliding_window", "--input", "synthetic:positional", "--n", "64", "--d", "16",
                 "--heads", "2", "--param", "window=4", "--out", str(npz), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "rel_out:" in out and "artifacts: mask" in out
    data = np.load(npz, allow_pickle=False)
    assert data["matrix"].shape == (1, 2, 64, 64) and data["out"].shape == (1, 2, 64, 16)
    assert data["artifact_mask"].shape[-1] == 64
    assert html.read_bytes().startswith(b"<html") or b"plotly" in html.read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["run", "performer", "--param", "features=-3"], "features = -3 is outside its valid range"),
    (["run", "performer", "--param", "features"], "must look like name=value"),
    (["run", "no_such_variant"], "unknown variant"),
    (["run", "exact", "--input", "synthetic:nope"], "unknown synthetic input kind"),
    (["run", "exact", "--input", "file:/no/such/file.npz"], "no file"),
    (["run", "linformer", "--causal"], "cannot be causal"),
])
def test_user_errors_are_one_line(argv, message):
    proc = subprocess.run([sys.executable, "-m", "xviz", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and message in proc.stderr and "Traceback" not in proc.stderr
