"""Input sources as a catalog: a toy source written in one file (tests/plugins/toy_source.py) is found by
the sidebar (its widgets from its spec), the URL (its keys, checked, and a round trip), the CLI's --input
grammar and the cache key, with no other file knowing its name."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import xviz
from xviz.cli import main
from xviz.inputs import InputSpec, list_sources, register_source, unregister_source

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy():
    from tests.plugins.toy_source import TOY

    register_source(TOY, replace=True)
    yield TOY
    unregister_source("toy")


def test_the_builtin_sources_are_a_catalog():
    assert [s.name for s in list_sources()][:4] == ["text", "synthetic", "sample", "upload"]
    with pytest.raises(xviz.InputError, match="unknown input source 'nope'; known input sources: "):
        InputSpec("nope")
    with pytest.raises(xviz.InputError, match="has no setting 'window'; it takes: kind, n, d, heads"):
        InputSpec("synthetic", window=3)


def test_every_setting_is_in_the_cache_key(toy):
    """The key hashes every value, so a setting cannot be left out of it (the old hand-written key could)."""
    base = InputSpec("toy", tokens=24)
    assert base.key(0) == InputSpec("toy", tokens=24, label="plain").key(0)
    assert base.key(0) != base.with_(label="fancy").key(0) != base.with_(turn=1.0).key(0)
    assert base.key(0) == base.key(7)  # not seeded: the seed is not part of it
    text = InputSpec("text", text="The cat sat.")
    assert text.key(0) != text.with_(kv="A dog barked.").key(0) != text.with_(model="/m").key(0)
    up = InputSpec("upload", upload_name="a.npy", upload_data=b"1")
    assert up.key(0) != up.with_(upload=("a.npy", b"2")).key(0) and up.key(0) != up.key(1)


def test_the_url_round_trip_in_the_library(toy):
    for spec in (InputSpec("toy", tokens=40, turn=1.25, label="fancy"),
                 InputSpec("synthetic", kind="periodic", n=48, d=8, heads=2, knobs={"period": 12, "noise": 0.25}),
                 InputSpec("text", text="Hello there.", kv="A second text.", layer=3)):
        assert InputSpec.from_query(spec.to_query()) == spec
    with pytest.raises(xviz.ParameterError, match=r"tokens = 9999 is outside its valid range \[2, 512\]"):
        InputSpec.from_query({"source": "toy", "tokens": "9999"})


def test_the_cli_input_grammar(toy, capsys):
    assert main(["run", "exact", "--input", "toy:24", "--n", "999"]) == 0  # --n is not a toy setting
    assert "toy ramp: 24 tokens, keys turned by 0.5 (plain)" in capsys.readouterr().out
    assert main(["run", "exact", "--input", "toy:1"]) == 2
    assert "tokens = 1 is outside its valid range [2, 512]" in capsys.readouterr().err
    assert main(["run", "exact", "--input", "nope:1"]) == 2
    assert "toy:TOKENS" in capsys.readouterr().err  # the forms come from the catalog


def test_a_source_in_one_file_loads_as_a_plugin():
    env = {**os.environ, "XVIZ_PLUGINS": "tests.plugins.toy_source"}
    proc = subprocess.run([sys.executable, "-m", "xviz", "run", "exact", "--input", "toy:12"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "toy ramp: 12 tokens" in proc.stdout, proc.stderr


def test_the_sidebar_draws_a_new_source_from_its_spec(toy):
    from tests.apptest import run_page, texts

    url = {"source": "toy", "tokens": "24", "turn": "1.5", "label": "fancy", "variant": "exact"}
    at = run_page("explorer", url)
    assert at.sidebar.selectbox(key="source").value == "toy"
    assert at.sidebar.number_input(key="tokens").value == 24 and at.sidebar.number_input(key="turn").value == 1.5
    assert at.sidebar.selectbox(key="label").options == ["plain", "fancy"]
    ctx = at.session_state["_xviz_context"]
    assert ctx.error is None and ctx.inp.q.shape == (1, 1, 24, 2)
    assert ctx.spec == InputSpec("toy", tokens=24, turn=1.5, label="fancy")
    # the round trip: the spec's URL, opened afresh, shows the same input
    again = run_page("explorer", {**ctx.spec.to_query(), "variant": "exact"})
    assert again.session_state["_xviz_context"].spec == ctx.spec
    # a bad value in a link is named, from the spec's range, and the default used
    bad = run_page("explorer", {"source": "toy", "tokens": "9999", "variant": "exact"})
    assert "tokens = 9999 is outside its valid range [2, 512]" in texts(bad, "warning"), texts(bad, "warning")
