"""Property-based fuzzing of every upload loader in xviz.inputs (hypothesis).

Generated files — .npz/.npy/.safetensors with zero and negative dimensions, lying headers, wrong
dtypes and truncations, .txt of control characters or 100k tokens, .csv with huge or malformed
numbers, .png that are not images — must each either load into valid engine inputs (finite q, k, v
the engine accepts) or be refused with one sentence: an ``InputError`` whose message is one line,
under 300 characters, echoing at most a short prefix of user-supplied names. Anything else escapes.
"""
from __future__ import annotations

import io
import json
import struct
import traceback
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import xviz
from xviz import inputs
from xviz.core.errors import InputError

from .test_fuzz_registry import Outcome, fuzz_settings, one_sentence

MAX_MESSAGE = 300


def npy_bytes(shape, descr="<f4", fortran=False, data: bytes | None = None, version=(1, 0)) -> bytes:
    """A .npy file with the header we want, lying or not (numpy would refuse to write some of these)."""
    header = repr({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}).encode("latin1")
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + b" " * pad + b"\n"
    magic = b"\x93NUMPY" + bytes(version)
    lenfield = struct.pack("<H", len(header)) if version == (1, 0) else struct.pack("<I", len(header))
    if data is None:
        count = 1
        for s in shape:
            count *= max(int(s), 0)
        data = np.zeros(min(count, 4096), dtype=np.dtype(descr) if descr[1:2] in "fiu" else np.float32).tobytes()
    return magic + lenfield + header + data


def npz_bytes(members: dict[str, bytes], compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name + ".npy", data)
    return buf.getvalue()


def safetensors_bytes(entries: dict[str, dict], body: bytes) -> bytes:
    header = json.dumps(entries).encode()
    return struct.pack("<Q", len(header)) + header + body


dims = st.one_of(st.integers(0, 6), st.sampled_from([-1, -7, 0, 2**31, 2**62]))
shapes = st.lists(dims, min_size=0, max_size=5)
descrs = st.sampled_from(["<f4", "<f8", ">f4", "<f2", "<i4", "|u1", "|b1", "<c8", "|O", "<U3", "|V8", "<M8[s]"])
names = st.one_of(st.sampled_from(["q", "k", "v", "x", "Q", "tokens", "w"]),
                  st.text(min_size=0, max_size=300).map(lambda s: "m" + s.replace("/", "_").replace("\\", "_")))


@st.composite
def npy_files(draw):
    shape = draw(shapes)
    if draw(st.booleans()):
        shape = [3] + shape[:4]
    data = draw(st.one_of(st.none(), st.binary(max_size=512)))
    values = draw(st.sampled_from([None, 0.0, 1e308, float("nan"), 1e-320]))
    descr = draw(descrs)
    if values is not None and data is None and all(isinstance(s, int) and 0 < s < 8 for s in shape):
        data = np.full(shape, values, dtype="<f8").tobytes()
        descr = "<f8"
    raw = npy_bytes(shape, descr, draw(st.booleans()), data, draw(st.sampled_from([(1, 0), (2, 0), (3, 0)])))
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    return raw[:cut] if cut is not None else raw


@st.composite
def npz_files(draw):
    members = {}
    for _ in range(draw(st.integers(0, 4))):
        members[draw(names)[:60] or "q"] = draw(npy_files())
    if draw(st.booleans()):  # a well-formed q, k, v with one member replaced
        n, d = draw(st.integers(0, 5)), draw(st.integers(0, 5))
        for r in "qkv":
            members.setdefault(r, npy_bytes((n, d), "<f4"))
    raw = npz_bytes(members, draw(st.booleans()))
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    return raw[:cut] if cut is not None else raw


@st.composite
def safetensors_files(draw):
    entries, body = {}, b""
    for role in draw(st.lists(st.sampled_from(["q", "k", "v", "x", "__metadata__", "other"]), max_size=4)):
        shape = draw(shapes)
        dtype = draw(st.sampled_from(["F32", "F64", "F16", "BF16", "I8", "BOOL", "C64", "F8_E4M3", "Q4", 7]))
        begin = len(body)
        size = draw(st.integers(0, 256))
        body += draw(st.binary(min_size=size, max_size=size))
        end = draw(st.sampled_from([begin + size, begin - 1, begin + size + 8, -5]))
        entry = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
        if draw(st.integers(0, 9)) == 0:
            entry = draw(st.sampled_from([[], "x", {"dtype": "F32"}, {"dtype": "F32", "shape": "ab", "data_offsets": [0]}]))
        entries[role] = entry if role != "__metadata__" else {"a": "b"}
    raw = safetensors_bytes(entries, body)
    if draw(st.integers(0, 5)) == 0:
        raw = struct.pack("<Q", draw(st.integers(0, 2**64 - 1))) + raw[8:]
    return raw


def _control_text(draw):
    return "".join(draw(st.lists(st.sampled_from(["\x00", "\x01", "\x07", "\x1b", "\u200b", "\ufeff", "\x7f",
                                                  "\u202e", "\u0085", "\t", "\r"]), min_size=1, max_size=60)))


@st.composite
def text_files(draw):
    kind = draw(st.sampled_from(["control", "long", "random", "bytes", "emoji"]))
    if kind == "control":
        return _control_text(draw).encode("utf-8")
    if kind == "long":
        return ("word " * 100_000).encode()
    if kind == "emoji":
        return ("\U0001f600" * draw(st.integers(1, 3000))).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")


@st.composite
def csv_files(draw):
    cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                      st.sampled_from(["1e308", "-1e308", "1.7976931348623157e308", "1e309", "nan", "",
                                       "abc", "1,5", "0x10", "1_000", "٣", "1e-400"]),
                      st.integers(-10**30, 10**30).map(str))
    rows = draw(st.lists(st.lists(cells, min_size=1, max_size=3), min_size=0, max_size=60))
    sep = draw(st.sampled_from([",", ";", "\t"]))
    text = "\n".join(sep.join(r) for r in rows)
    if draw(st.booleans()):
        text = "time,value\n" + text
    return text.encode("utf-8")


@st.composite
def png_files(draw):
    kind = draw(st.sampled_from(["garbage", "tiny", "truncated", "header-only"]))
    if kind == "garbage":
        return b"\x89PNG\r\n\x1a\n" + draw(st.binary(max_size=200))
    from PIL import Image

    w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    buf = io.BytesIO()
    Image.new(draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1", "I;16"])), (w, h)).save(buf, format="PNG")
    raw = buf.getvalue()
    if kind == "truncated":
        return raw[: draw(st.integers(8, len(raw)))]
    if kind == "header-only":
        return raw[:33]
    return raw


HEADER_BYTES = b"'\"(){}[],: \\\n\x00#<>|0123456789abcdefLSTU"  # what a literal-dict parser trips on
TRIPLE = b"'" * 3


@st.composite
def mutated_npy(draw):
    """A valid .npy whose header bytes are mutated: replaced, inserted or deleted (an unterminated or
    triple-quoted string, an unbalanced bracket, a NUL), as a damaged or hostile file would have them."""
    raw = bytearray(npy_bytes((draw(st.integers(1, 4)), draw(st.integers(1, 4))), draw(st.sampled_from(["<f4", "<f8"]))))
    end = 10 + struct.unpack("<H", bytes(raw[8:10]))[0]
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(10, end - 1))
        op = draw(st.sampled_from(["replace", "insert", "delete", "triple"]))
        byte = draw(st.sampled_from(HEADER_BYTES))
        if op == "replace":
            raw[at] = byte
        elif op == "insert":
            raw[at:at] = bytes([byte])
        elif op == "delete":
            del raw[at]
        else:
            raw[at:at] = TRIPLE
    return bytes(raw)


@st.composite
def mutated_npz(draw):
    members = {r: npy_bytes((3, 2)) for r in "qkv"}
    members[draw(st.sampled_from("qkv"))] = draw(mutated_npy())
    return npz_bytes(members, draw(st.booleans()))


FILES = {".npy": st.one_of(npy_files(), mutated_npy()), ".npz": st.one_of(npz_files(), mutated_npz()),
         ".safetensors": safetensors_files(), ".txt": text_files(),
         ".csv": csv_files(), ".png": png_files()}


@st.composite
def uploads(draw):
    ext = draw(st.sampled_from(sorted(FILES)))
    stem = draw(st.one_of(st.just("upload"), st.text(min_size=0, max_size=400)))
    return stem + ext, draw(FILES[ext])


def outcome(filename: str, data: bytes) -> Outcome:
    """Load one generated upload: valid engine inputs, a one-sentence InputError, or an escape."""
    try:
        seq = inputs.load_upload(filename, data, layer=0)
    except InputError as exc:
        msg = str(exc)
        why = one_sentence(msg, MAX_MESSAGE)
        stem = filename.rsplit("/", 1)[-1]
        if why is None and len(stem) > 80 and stem[:-10] in msg:
            why = "echoes a long user-supplied name"
        return Outcome("escape", f"InputError {why}: {msg[:500]!r}") if why else Outcome("error", "InputError")
    except Exception as exc:  # noqa: BLE001
        return Outcome("escape", f"{type(exc).__name__}: {exc} @ {traceback.format_exc(limit=-3)}")
    try:
        xviz.core.engine.as_4d(seq.q, seq.k, seq.v, cross=True)  # uploads may be cross-attention (N_q ≠ N_k)
        if not (torch.isfinite(seq.q).all() and torch.isfinite(seq.k).all() and torch.isfinite(seq.v).all()):
            return Outcome("escape", "loaded non-finite q, k or v")
        if len(seq.tokens) != seq.n:
            return Outcome("escape", f"{len(seq.tokens)} tokens for N = {seq.n}")
        if seq.meta.get("source") == "model" and not seq.notices:
            special = set(getattr(_tokenizer(), "all_special_ids", []))
            if all(i in special for i in seq.meta["token_ids"]):
                return Outcome("escape", f"text became only special tokens {seq.tokens} without a notice")
    except Exception as exc:  # noqa: BLE001
        return Outcome("escape", f"loaded inputs the engine refuses: {exc}")
    return Outcome("result")


def _tokenizer():
    from xviz.inputs import model

    return model._load(None).tokenizer


def check(filename: str, data: bytes) -> None:
    o = outcome(filename, data)
    assert o.kind != "escape", f"{filename[:80]!r} ({len(data)} bytes): {o.detail}"


# Escapes found by this suite, kept as regression cases (each was an escape before its fix).
REGRESSIONS = [
    ("zero.npy", npy_bytes((0, 4))),  # refused before too: kept as a guard
    ("zero-dv.npz", npz_bytes({"q": npy_bytes((3, 2)), "k": npy_bytes((3, 2)), "v": npy_bytes((3, 0))})),  # d_v = 0 loaded
    ("zero-batch.npz", npz_bytes({r: npy_bytes((0, 1, 3, 2)) for r in "qkv"})),  # B = 0 loaded
    ("zero-dv.safetensors", safetensors_bytes(  # ValueError: both buffer length (0) and count (-1)…
        {"q": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 24]},
         "k": {"dtype": "F32", "shape": [3, 2], "data_offsets": [24, 48]},
         "v": {"dtype": "F32", "shape": [3, 0], "data_offsets": [48, 48]}}, bytes(48))),
    ("neg.safetensors", safetensors_bytes({r: {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 0]}
                                           for r in "qkv"}, b"")),  # a guard, as zero.npy
    ("huge.csv", b"1.7e308\n1.7e308\n1\n2\n"),  # NaN q, k, v from the overflowing mean
    ("huge.npy", npy_bytes((3, 2), "<f8", data=np.full((3, 2), 1.7e308).tobytes())),  # NaN after the layer norm
    ("ctrl.txt", "\x00\x01\x07\x1b".encode()),
    # tokenize.TokenError (an unterminated triple-quoted string in the header's dict) reached the app
    ("triple.npy", npy_bytes((4, 3)).replace(b"'<f4'", TRIPLE + b"<f4'", 1)),
    ("triple-end.npy", npy_bytes((4, 3)).replace(b"}", b"} " + TRIPLE, 1)),
    ("triple.npz", npz_bytes({"q": npy_bytes((3, 2)).replace(b"'<f4'", TRIPLE + b"<f4'", 1), "k": npy_bytes((3, 2)),
                              "v": npy_bytes((3, 2))})),
]


@pytest.mark.parametrize("filename,data", REGRESSIONS, ids=[r[0] for r in REGRESSIONS])
def test_regressions(filename, data):
    check(filename, data)


UPLOAD_EXAMPLES, ARRAY_EXAMPLES = 800, 500  # quick profile; the long one runs 25× as many


@fuzz_settings(UPLOAD_EXAMPLES)
@given(uploads())
def test_any_upload(upload):
    check(*upload)


@fuzz_settings(ARRAY_EXAMPLES)
@given(st.one_of(mutated_npy().map(lambda d: ("m.npy", d)), mutated_npz().map(lambda d: ("m.npz", d))))
def test_mutated_array_headers(upload):
    """Byte-level mutations of .npy headers, alone and inside an .npz (the suite that finds TokenError)."""
    check(*upload)


ARRAY_UPLOADS = st.sampled_from([".npy", ".npz", ".safetensors"]).flatmap(
    lambda ext: FILES[ext].map(lambda d: ("a" + ext, d)))


@fuzz_settings(ARRAY_EXAMPLES)
@given(ARRAY_UPLOADS)
def test_arrays(upload):
    """The array formats alone, where lying headers and dimensions matter most."""
    check(*upload)
