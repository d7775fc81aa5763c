"""Captures on disk (xviz.inputs.captures): the same text through the same model folder is read back
without loading the model, equal to the capture; a changed folder, another text or a damaged entry is a
miss; the model's facts are stored beside."""
import pytest
import torch

from xviz import inputs
from xviz.inputs import captures
from xviz.inputs import model as model_lib

TEXT = "Captured once, read back after a restart."


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XVIZ_CACHE_DIR", str(tmp_path))
    return tmp_path


def no_model(monkeypatch):
    """From here on, loading a model fails: what still works needed none."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(model_lib, "_load", refuse)


def test_a_stored_capture_needs_no_model_and_equals_the_capture(fresh_cache, monkeypatch):
    first = inputs.from_text(TEXT, layer=3)
    assert inputs.stored_model_info(None) == inputs.model_info(None)
    no_model(monkeypatch)
    again = inputs.from_text(TEXT, layer=3)
    for name in ("q", "k", "v", "positions", "reference_attention"):
        assert torch.equal(getattr(again, name), getattr(first, name)), name  # bytes on disk: exact
    assert (again.tokens, again.meta, again.provenance, again.notices, again.causal) == \
        (first.tokens, first.meta, first.provenance, first.notices, first.causal)
    with pytest.raises(AssertionError, match="loaded"):
        inputs.from_text(TEXT, layer=4)  # another layer is another capture
    with pytest.raises(AssertionError, match="loaded"):
        inputs.from_text(TEXT + " More.", layer=3)


def test_a_damaged_entry_is_captured_again(fresh_cache):
    first = inputs.from_text(TEXT, layer=1)
    (entry,) = (fresh_cache / "captures").glob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:100])  # cut short, as a full disk would leave it
    again = inputs.from_text(TEXT, layer=1)
    assert torch.equal(again.q, first.q)
    assert entry.stat().st_size > 100  # written again, whole


def test_the_key_follows_the_folder_and_the_options(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    key = captures.entry_key("capture", str(folder), text="a", layer=0)
    assert key == captures.entry_key("capture", str(folder), text="a", layer=0)
    assert key != captures.entry_key("capture", str(folder), text="a", layer=1)
    assert key != captures.entry_key("info", str(folder), text="a", layer=0)
    (folder / "model.safetensors").write_bytes(b"new weights")
    assert key != captures.entry_key("capture", str(folder), text="a", layer=0)
    assert captures.entry_key("capture", str(tmp_path / "missing"), text="a") is None  # nothing to key on


def test_no_model_facts_are_stored_for_a_fresh_cache(fresh_cache):
    assert inputs.stored_model_info(None) is None


def test_the_folder_keeps_within_its_size(fresh_cache, monkeypatch):
    monkeypatch.setattr(captures, "MAX_FOLDER_BYTES", 1)  # room for the newest entry only
    inputs.from_text(TEXT, layer=0)
    inputs.from_text(TEXT, layer=1)
    kept = [p.suffix for p in (fresh_cache / "captures").iterdir()]
    assert kept == [".json"], kept  # the last written alone: the model's facts, stored after each capture
