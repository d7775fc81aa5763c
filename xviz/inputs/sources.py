"""The built-in input sources, each a ``SourceSpec`` (see ``xviz.inputs.catalog``): a text through a real
model (with an optional second text for cross-attention), synthetic generators, the sample files, and an
uploaded file."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from ..core.errors import InputError
from .catalog import Field, SourceSpec, register_source
from .files import load_upload
from .folders import available_models
from .model import from_text
from .samples import list_samples, load_sample
from .sequence import SequenceInput
from .synthetic import SYNTHETIC_KINDS, synthetic, synthetic_params

DEFAULT_TEXT = ("The animal didn't cross the street because it was too tired, "
                "so it lay down in the shade and slept until the evening.")
UPLOAD_TYPES = ("npz", "npy", "safetensors", "txt", "csv", "png")
LAYER = Field("layer", "int", 0, "Layer", "which layer's Q, K, V (texts go through the model)", low=0, high=128)


def load_text(values: Mapping[str, Any], seed: int) -> SequenceInput:
    model = values["model"] or None
    seq = from_text(values["text"], model=model, layer=values["layer"])
    if not values["kv"].strip():
        return seq
    kv = from_text(values["kv"], model=model, layer=values["layer"])
    return replace(seq, k=kv.k, v=kv.v, key_tokens=list(kv.tokens), reference_attention=None,
                   provenance=f"{seq.provenance}; keys and values from a second text ({len(kv.tokens)} tokens)",
                   notices=list(seq.notices) + list(kv.notices), causal=False)


def load_synthetic(values: Mapping[str, Any], seed: int) -> SequenceInput:
    return synthetic(values["kind"], n=values["n"], d=values["d"], heads=values["heads"], seed=seed,
                     **dict(values["knobs"]))


def load_sample_source(values: Mapping[str, Any], seed: int) -> SequenceInput:
    return load_sample(values["sample"], n_max=values["n"], seed=seed, layer=values["layer"])


def load_file(values: Mapping[str, Any], seed: int) -> SequenceInput:
    name, data = values["upload"]
    if not data:
        raise InputError("no file was uploaded.")
    return load_upload(name, data, seed=seed, layer=values["layer"])


def _sample_names() -> list[str]:
    return [s.name for s in list_samples()]


def _sample_note(values: Mapping[str, Any]) -> str:
    return {s.name: s.description for s in list_samples()}.get(values["sample"], "")


register_source(SourceSpec(
    "text", "a text through a real model", "one layer's Q, K, V per head and the model's own attention",
    fields=(
        Field("text", "text", DEFAULT_TEXT, "Text", "goes through the model: one layer's Q, K, V per head and its "
              "own attention"),
        Field("model", "choice", "", "Model", "(default): the bundled all-MiniLM-L6-v2 encoder, 6 layers × 12 heads; "
              "smollm2-135m: the bundled SmolLM2-135M-Instruct decoder, 30 layers × 9 query / 3 key-value heads, "
              "RoPE, its 4-bit (Q4_1) weights dequantized (the first use converts them once, about 20 s); or a "
              "model folder the server allows", choices=available_models, open=True, more=False),
        Field("kv", "str", "", "Keys and values from a second text", "cross-attention: the first text's queries "
              "attend this text's keys and values (same model and layer); empty = self-attention", more=True),
        LAYER,
    ),
    load=load_text, cli_field="text", cli_settings=("layer", "kv"), seeded=False, aliases={"kv_text": "kv"}))

register_source(SourceSpec(
    "synthetic", "a synthetic generator", "seeded Q, K, V with a chosen structure",
    fields=(
        Field("kind", "choice", "clustered", "Generator", "synthetic generator", choices=SYNTHETIC_KINDS),
        Field("n", "int", 256, "N (tokens)", "sequence length", low=2, high="max_n"),
        Field("d", "int", 64, "d (head dim)", "query/key dimension per head", low=1, high="max_d"),
        Field("heads", "int", 4, "heads", "number of heads", low=1, high="max_heads"),
    ),
    # the knobs' URL keys are syn.<kind>.<knob>: apart from variant parameters ("clustered" is both)
    load=load_synthetic, cli_field="kind", knobs=lambda v: (f"syn.{v['kind']}", synthetic_params(v["kind"]))))

register_source(SourceSpec(
    "sample", "a sample file", "a small real file from sample_inputs/ (texts go through the model)",
    fields=(
        Field("sample", "choice", "Short paragraph", "Sample", "a file from sample_inputs/", choices=_sample_names),
        Field("n", "int", 1024, "N (tokens)", "at most this many tokens (a longer input is cut)", low=2,
              high="max_n"),
        LAYER,
    ),
    load=load_sample_source, cli_field="sample", cli_settings=("layer",), note=_sample_note, aliases={"n_max": "n"}))

register_source(SourceSpec(
    "upload", "an uploaded file", "an upload stays in this browser session: a link cannot carry it",
    fields=(
        Field("upload", "file", ("", b""), "Q/K/V (.npz .npy .safetensors), text (.txt), series (.csv) or an "
              "image (.png)", "read without unpickling; at most the upload limit", choices=UPLOAD_TYPES),
        LAYER,
    ),
    load=load_file, cli_field="upload", cli_name="file", cli_settings=("layer",),
    note=lambda v: "An upload stays in this browser session: a link cannot carry it."))
