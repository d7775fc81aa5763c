"""Uploaded files, by extension: arrays (.npz / .npy / .safetensors, read in ``arrays`` without
unpickling), .txt (text for the model), .csv (a time series), .png (an image). Every problem ends in an
``InputError`` with one sentence naming it and what is accepted.

A .csv series is embedded with sinusoidal features of a sliding window (``synthetic.embed_series``);
a .png is cut into patches (``synthetic.embed_patches``).
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from typing import Sequence

import numpy as np
import torch

from ..core.engine import check_seed, generator
from ..core.errors import InputError, XvizError
from .sequence import SequenceInput
from .arrays import read_npy, read_npz, read_safetensors
from ._common import LIMITS, check_size, fmt_bytes, shown
from .synthetic import embed_patches, embed_series

ACCEPTED = (".npz, .npy or .safetensors (arrays q, k, v or a hidden-state matrix x), .txt (text for the model), "
            ".csv (a time series) or .png (an image)")
SERIES_D, SERIES_HEADS = 64, 4
IMAGE_D, IMAGE_HEADS, IMAGE_N = 64, 4, 256  # an image is cut into at most IMAGE_N patches (unless n_max says)
_MAX_PIXELS = 4096 * 4096


def decode_text(name: str, data: bytes) -> str:
    try:
        return bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position {exc.start} "
                         f"is invalid); save it as UTF-8.") from None


def parse_series(name: str, text: str) -> tuple[torch.Tensor, list[str] | None, list[str]]:
    """A univariate series from CSV text: the last column holds the numbers, an optional first column the time
    labels, an optional first line the header. Returns (values, labels, notes): with more than one column the
    notes say which column was read and what the others held, when some are not read (their NaN or empty cells are not read)."""
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count) if any(c in first for c in ",;\t") else ","
    rows = [(i + 1, r) for i, r in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter))
            if any(c.strip() for c in r)]
    hint = "one number per row (optionally a time column first and a header line)"
    if not rows:
        raise InputError(f"{name} has no rows; a .csv time series needs {hint}.")

    def number(cell: str):
        try:
            return float(cell.strip())
        except ValueError:
            return None

    header = None
    if number(rows[0][1][-1]) is None:
        header, rows = rows[0][1], rows[1:]  # a header line
        if not rows:
            raise InputError(f"{name} has a header but no data rows; a .csv time series needs {hint}.")
    values, labels = [], []
    for line, row in rows:
        value = number(row[-1])
        if value is None:
            raise InputError(f"line {line} of {name} has {row[-1].strip()!r} where a number is expected; the last "
                             f"column must hold the series' numbers.")
        if not math.isfinite(value):
            raise InputError(f"line {line} of {name} holds {row[-1].strip()!r}; every value must be a finite number.")
        values.append(value)
        labels.append(row[0].strip() if len(row) > 1 else None)
    labels = labels if all(labels) else None
    return torch.tensor(values, dtype=torch.float64), labels, _column_notes(name, header, rows, labels is not None)


def _column_notes(name: str, header, rows, labelled: bool) -> list[str]:
    """One sentence naming the column read as the series and what happened to the others."""
    width = max(len(r) for _, r in rows)
    if width < 2 or (width == 2 and labelled):  # the documented shapes: nothing to choose
        return []

    def col(j: int) -> str:
        title = header[j].strip() if header is not None and j < len(header) and header[j].strip() else None
        return f"column {j + 1}" + (f" ({title!r})" if title else "")

    def missing(j: int) -> int:  # NaN, empty or not a number
        n = 0
        for _, r in rows:
            cell = r[j].strip() if j < len(r) else ""
            try:
                n += not math.isfinite(float(cell))
            except ValueError:
                n += 1
        return n

    unread = ([] if labelled else [0]) + list(range(1, width - 1))
    parts = [f"{name}: the series is the last of {width} columns, {col(width - 1)}"]
    if labelled:
        parts.append(f"{col(0)} labels its tokens")
    if unread:
        names = [col(j) for j in unread]
        gaps = sum(missing(j) for j in unread)
        parts.append(f"{', '.join(names[:-1]) + ' and ' if len(names) > 1 else ''}{names[-1]} "
                     f"{'is' if len(names) == 1 else 'are'} not read"
                     + (f" (the {gaps:,} NaN or empty cell{'s' * (gaps != 1)} there included)" if gaps else ""))
    return ["; ".join(parts) + "."]


def series_input(name: str, x: torch.Tensor, labels, seed: int, n_max: int | None = None,
                 notes: Sequence[str] = ()) -> SequenceInput:
    notices = list(notes)
    if n_max is not None and x.numel() > n_max:
        notices.append(f"{name} has {x.numel():,} values; only the first {n_max:,} are used.")
        x, labels = x[:n_max], (labels[:n_max] if labels else None)
    n = x.numel()
    check_size(n, SERIES_D, SERIES_HEADS, what=name)
    q, k, v = embed_series(x, SERIES_D, SERIES_HEADS, generator(seed, 11), window=8, logit_scale=8.0)
    tokens = labels or [f"t{i}" for i in range(n)]
    provenance = (f"{name}: time series of {n:,} values embedded with sinusoidal window features "
                  f"(window 8, {SERIES_HEADS} heads × d={SERIES_D}, seed {seed})")
    return SequenceInput(q=q, k=k, v=v, tokens=list(tokens), positions=torch.arange(n), provenance=provenance,
                         notices=notices, meta=dict(source="series", series=x.float()))


def read_csv(name: str, data: bytes, seed: int = 0) -> SequenceInput:
    x, labels, notes = parse_series(name, decode_text(name, data))
    return series_input(name, x, labels, seed, notes=notes)


def image_input(name: str, data: bytes, seed: int, n_max: int | None = None) -> SequenceInput:
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading images needs Pillow (pip install pillow); upload arrays instead.") from None
    try:
        im = Image.open(io.BytesIO(data))
        width, height = im.size
    except Exception:  # noqa: BLE001 — PIL raises many types for a bad file
        raise InputError(f"{name} is not a readable PNG or JPEG image; upload a .png file.") from None
    if width * height > _MAX_PIXELS:
        raise InputError(f"{name} is {width}×{height} pixels, more than the limit of {_MAX_PIXELS:,} pixels; "
                         f"use a smaller image.")
    try:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    except Exception:  # noqa: BLE001
        raise InputError(f"{name} is a damaged image (it could not be decoded); save it again as PNG.") from None
    budget = min(n_max or IMAGE_N, LIMITS["max_n"])
    patch = max(1, math.ceil(math.sqrt(width * height / budget)))
    while (height // patch) * (width // patch) > budget:
        patch += 1
    rows, cols = max(height // patch, 1), max(width // patch, 1)
    patch = min(patch, height, width)
    n = rows * cols
    check_size(n, IMAGE_D, IMAGE_HEADS, what=name)
    q, k, v, pos = embed_patches(torch.from_numpy(rgb), n, cols, patch, IMAGE_D, IMAGE_HEADS,
                                 generator(seed, 13), position_weight=0.4, logit_scale=6.0)
    provenance = (f"{name}: {width}×{height} image cut into {rows}×{cols} patches of {patch}×{patch} pixels, "
                  f"embedded as content + 2-D position ({IMAGE_HEADS} heads × d={IMAGE_D}, seed {seed})")
    return SequenceInput(q=q, k=k, v=v, tokens=[f"r{int(r)}c{int(c)}" for r, c in pos], positions=pos,
                         provenance=provenance, meta=dict(source="image", grid=(rows, cols), patch=patch))


def read_txt(name: str, data: bytes, seed: int = 0, model=None, layer: int = 0) -> SequenceInput:
    from .model import from_text

    text = decode_text(name, data)
    if not text.strip():
        raise InputError(f"{name} contains no text (it is empty or only whitespace); give at least one word.")
    seq = from_text(text, model=model, layer=layer)
    seq.provenance = f"{name}: {seq.provenance}"
    return seq


_READERS = {
    ".npz": lambda name, data, seed, model, layer: read_npz(name, data, seed),
    ".npy": lambda name, data, seed, model, layer: read_npy(name, data, seed),
    ".safetensors": lambda name, data, seed, model, layer: read_safetensors(name, data, seed),
    ".txt": lambda name, data, seed, model, layer: read_txt(name, data, seed, model, layer),
    ".csv": lambda name, data, seed, model, layer: read_csv(name, data, seed),
    ".png": lambda name, data, seed, model, layer: image_input(name, data, seed),
}


def load_upload(filename: str, data: bytes, *, seed: int = 0, model=None, layer: int = 0) -> SequenceInput:
    """Read an uploaded file (its name decides the type) into a SequenceInput; InputError on anything bad."""
    base = os.path.basename(str(filename))
    name = shown(base) if base else "the upload"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"the contents of {name} must be bytes, not {type(data).__name__}.")
    ext = os.path.splitext(base)[1].lower()
    if ext not in _READERS:
        what = f"the extension {shown(ext, 20)!r}" if ext else "no extension"
        raise InputError(f"{name} has {what}; accepted files are {ACCEPTED}.")
    if len(data) == 0:
        raise InputError(f"{name} is empty (0 bytes); upload a non-empty {ext} file.")
    if len(data) > LIMITS["max_upload_bytes"]:
        raise InputError(f"{name} is {fmt_bytes(len(data))}, over the upload limit of "
                         f"{fmt_bytes(LIMITS['max_upload_bytes'])}.")
    check_seed(seed, InputError)
    data = bytes(data)
    try:
        seq = _READERS[ext](name, data, seed, model, layer)
    except XvizError:
        raise
    except Exception as exc:  # the bytes are the user's: any parser's failure on them is a bad file, said once
        logging.getLogger(__name__).warning("reading %s failed", name, exc_info=True)  # details stay in the log
        raise InputError(f"{name} could not be read as a {ext} file ({type(exc).__name__}); save it again with "
                         f"the tool that made it.") from None
    seq.meta.setdefault("filename", name)
    return seq
