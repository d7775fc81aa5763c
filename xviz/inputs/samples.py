"""The small real files in ``sample_inputs/`` a user can pick at once (see sample_inputs/README.md)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError
from .sequence import SequenceInput
from .files import decode_text, image_input, parse_series, read_npz, series_input


@dataclass(frozen=True)
class Sample:
    name: str
    filename: str
    kind: str  # "text" | "csv" | "image" | "npz"
    description: str


_SAMPLES = (
    Sample("Short paragraph", "short_paragraph.txt", "text",
           "a short self-written paragraph (85 words, about 100 tokens), read by the model"),
    Sample("Gettysburg Address", "gettysburg_address.txt", "text",
           "Lincoln's Gettysburg Address, 1863 (public domain, about 280 words), read by the model"),
    Sample("Long essay", "long_essay.txt", "text",
           "a self-written essay of about 3,000 words: longer than MiniLM's 512 tokens, so it is cut with a notice"),
    Sample("Hourly demand series", "hourly_demand.csv", "csv",
           "a generated hourly series, 672 values (4 weeks) with daily and weekly cycles, embedded with "
           "sinusoidal window features"),
    Sample("Harbour image", "harbour.png", "image",
           "a generated 64×64 picture (sky, sun, sea, boat), cut into 4×4-pixel patches (256 tokens)"),
    Sample("MiniLM Q/K/V", "minilm_layer2_qkv.npz", "npz",
           "ready q, k, v (and tokens) of heads 0–3, layer 2 of all-MiniLM-L6-v2 on the short paragraph"),
)


def samples_dir() -> Path:
    """sample_inputs/ at the repository root (or $XVIZ_SAMPLES_DIR)."""
    env = os.environ.get("XVIZ_SAMPLES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "sample_inputs"


def list_samples() -> list[Sample]:
    return list(_SAMPLES)


def _find(name: str) -> Sample:
    key = str(name).strip().lower()
    for s in _SAMPLES:
        if key in (s.name.lower(), s.filename.lower()):
            return s
    raise InputError(f"there is no sample {name!r}; the samples are: {', '.join(s.name for s in _SAMPLES)}.")


def load_sample(name: str, *, n_max: int | None = None, seed: int = 0, model=None, layer: int = 0) -> SequenceInput:
    """Load a sample by name (or file name); texts go through the model. n_max: at most this many tokens
    (a longer text, series or array is cut with a notice; an image is cut into fewer, larger patches)."""
    sample = _find(name)
    if n_max is not None and (isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 1):
        raise InputError(f"n_max = {n_max!r} must be a whole number of at least 1 (or None).")
    path = samples_dir() / sample.filename
    if not path.is_file():
        raise InputError(f"the sample file {path} is missing; restore sample_inputs/ from the repository "
                         f"(python sample_inputs/make_samples.py rebuilds the generated ones).")
    data = path.read_bytes()
    label = f"sample {sample.filename}"
    if sample.kind == "text":
        from .model import from_text

        seq = from_text(decode_text(label, data), model=model, layer=layer, max_tokens=n_max)
        seq.provenance = f"{label}: {seq.provenance}"
    elif sample.kind == "csv":
        x, labels, notes = parse_series(label, decode_text(label, data))
        seq = series_input(label, x, labels, seed, n_max, notes=notes)
    elif sample.kind == "image":
        seq = image_input(label, data, seed, n_max)
    else:
        seq = read_npz(label, data, seed)
        if n_max is not None and seq.n > n_max:
            n = seq.n
            seq.q, seq.k, seq.v = (t[..., :n_max, :].contiguous() for t in (seq.q, seq.k, seq.v))
            seq.tokens, seq.positions = seq.tokens[:n_max], seq.positions[:n_max]
            seq.notices.append(f"{label} has {n:,} tokens; only the first {n_max:,} are used.")
            seq.provenance += f", first {n_max} tokens"
    seq.meta.update(sample=sample.name)
    return seq
