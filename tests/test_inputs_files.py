"""Uploads and sample files: good files round-trip exactly; every bad input gets one clear sentence."""
import io
import os
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import xviz
from xviz import inputs
from xviz.inputs.samples import samples_dir


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz_compressed(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def npy(a, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def qkv(h=2, n=10, d=8, dv=None, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((h, n, dv or d if name == "v" else d)).astype(dtype) for name in "qkv"}


# ------------------------------------------------------------------ good files


@pytest.mark.parametrize("lead", [(), (3,), (1, 3)])
def test_npz_qkv_roundtrip(lead):
    rng = np.random.default_rng(1)
    arrays = {x: rng.standard_normal((*lead, 12, 6)).astype(np.float32) for x in "qkv"}
    seq = inputs.load_upload("a.npz", npz(**arrays))
    h = lead[-1] if lead else 1
    assert seq.q.shape == (1, h, 12, 6) and seq.q.dtype == torch.float32
    for x in "qkv":  # bit-exact: nothing is converted except adding leading axes
        assert np.array_equal(getattr(seq, x).reshape(-1, 12, 6).numpy(), arrays[x].reshape(-1, 12, 6))
    assert "a.npz" in seq.provenance and len(seq.tokens) == 12 and seq.notices == []


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_keys_and_values_of_another_length_are_cross_attention(fmt):
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 9, 8, generator=g), torch.randn(2, 14, 8, generator=g), torch.randn(2, 14, 6, generator=g)
    data = (npz(q=q.numpy(), k=k.numpy(), v=v.numpy()) if fmt == "npz"
            else safetensors.torch.save({"q": q, "k": k, "v": v}))
    seq = inputs.load_upload(f"cross.{fmt}", data)
    assert seq.cross and seq.q.shape == (1, 2, 9, 8) and seq.k.shape == (1, 2, 14, 8) and seq.v.shape == (1, 2, 14, 6)
    assert len(seq.tokens) == 9 and len(seq.key_labels) == 14 and "N_k = 14" in seq.provenance
    r = xviz.run("exact", seq.q, seq.k, seq.v)
    # float32 exact attention two ways: the engine's against SDPA, well inside 1e-5
    ref = torch.nn.functional.scaled_dot_product_attention(seq.q, seq.k, seq.v)
    assert torch.allclose(r.out, ref, atol=1e-5) and r.matrix().shape == (1, 2, 9, 14)


def test_npz_dtypes_tokens_and_ignored_members():
    a = qkv(dtype=np.float64)
    seq = inputs.load_upload("x.npz", npz(**a, tokens=np.array([f"w{i}" for i in range(10)]), extra=np.zeros(3)))
    assert seq.q.dtype == torch.float64 and np.array_equal(seq.k[0].numpy(), a["k"])  # float64 kept
    assert seq.tokens == [f"w{i}" for i in range(10)]
    assert any("extra" in n for n in seq.notices)
    ints = inputs.load_upload("i.npz", npz(q=np.arange(12).reshape(3, 4), k=np.ones((3, 4), np.int8),
                                           v=np.ones((3, 2), np.float16)))
    assert ints.q.dtype == torch.float32 and ints.q[0, 0, 2, 3] == 11 and ints.v.shape == (1, 1, 3, 2)


def test_npz_uppercase_names_and_compressed():
    a = qkv()
    seq = inputs.load_upload("c.NPZ", npz_compressed(Q=a["q"], K=a["k"], V=a["v"]))
    assert np.array_equal(seq.v[0].numpy(), a["v"])


def test_npy_hidden_states_projected_with_seed():
    x = np.random.default_rng(0).standard_normal((20, 128)).astype(np.float32)
    s0, s0b, s1 = (inputs.load_upload("h.npy", npy(x), seed=s) for s in (0, 0, 1))
    assert s0.q.shape == (1, 2, 20, 64)  # D = 128: 2 heads of d = 64
    assert torch.equal(s0.q, s0b.q) and not torch.equal(s0.q, s1.q)
    assert "random" in s0.provenance and "seed 0" in s0.provenance
    # W ~ N(0, 1/D) on layer-normed rows: unit-variance entries (20·128 samples: 15 % is generous).
    assert abs(s0.q.var().item() - 1) < 0.15


def test_npy_stacked_fortran_and_big_endian():
    a = np.random.default_rng(2).standard_normal((3, 2, 7, 5))
    seq = inputs.load_upload("s.npy", npy(np.asfortranarray(a).astype(">f8")))
    assert seq.q.shape == (1, 2, 7, 5) and seq.q.dtype == torch.float64
    assert np.array_equal(seq.k[0].numpy(), a[1]) and np.array_equal(seq.v[0].numpy(), a[2])


def test_safetensors_qkv_and_x():
    t = {x: torch.randn(2, 9, 4) for x in "qkv"}
    seq = inputs.load_upload("t.safetensors", safetensors.torch.save(t))
    assert all(torch.equal(getattr(seq, x)[0], t[x]) for x in "qkv")
    b = {x: torch.randn(9, 4).bfloat16() for x in "qkv"}
    seq = inputs.load_upload("b.safetensors", safetensors.torch.save(b))
    assert seq.q.dtype == torch.float32 and torch.equal(seq.q[0, 0], b["q"].float())
    x = inputs.load_upload("x.safetensors", safetensors.torch.save({"x": torch.randn(5, 16)}))
    assert x.q.shape == (1, 1, 5, 16)


@pytest.mark.parametrize("text,labels", [
    ("t,value\n0,1.5\n1,2.5\n2,0.5\n", ["0", "1", "2"]),
    ("1.5\n2.5\n0.5\n", ["t0", "t1", "t2"]),
    ("day;v\nmon;1.5\ntue;2.5\n\nwed;0.5\n", ["mon", "tue", "wed"]),
])
def test_csv_series(text, labels):
    seq = inputs.load_upload("s.csv", text.encode())
    assert seq.q.shape == (1, 4, 3, 64) and seq.tokens == labels
    assert seq.meta["series"].tolist() == [1.5, 2.5, 0.5]


def test_csv_names_the_column_it_reads_and_the_nan_it_leaves():
    seq = inputs.load_upload("s.csv", b"time,a,b,c\n0,1,nan,0.5\n1,,2,0.7\n2,nan,NaN,0.9\n")
    assert seq.meta["series"].tolist() == [0.5, 0.699999988079071, 0.8999999761581421]  # stored as float32
    assert seq.notices == ["s.csv: the series is the last of 4 columns, column 4 ('c'); column 1 ('time') labels "
                           "its tokens; column 2 ('a') and column 3 ('b') are not read (the 4 NaN or empty cells "
                           "there included)."]
    assert inputs.load_upload("s.csv", b"1\n2\n").notices == []  # one column: nothing to choose


def test_png_upload():
    png = (samples_dir() / "harbour.png").read_bytes()
    seq = inputs.load_upload("p.png", png)
    assert seq.q.shape == (1, 4, 256, 64) and seq.positions.shape == (256, 2)
    assert seq.meta["grid"] == (16, 16) and seq.tokens[17] == "r1c1"


def test_uploads_are_valid_engine_inputs():
    for name, data in [("a.npz", npz(**qkv())), ("s.csv", b"1\n2\n3\n4\n")]:
        seq = inputs.load_upload(name, data)
        xviz.core.engine.as_4d(seq.q, seq.k, seq.v)  # raises InputError if the engine would refuse them


# ------------------------------------------------------------------ bad inputs


def _zip_bomb(tmp_path, mp):
    mp.setitem(inputs.LIMITS, "max_upload_bytes", 2**20)
    data = npz_compressed(q=np.zeros((1024, 1024), np.float32), k=np.zeros((1024, 1024), np.float32),
                          v=np.zeros((1024, 1024), np.float32))
    assert len(data) < 100_000  # 12 MiB of zeros in a few KiB
    return "bomb.npz", data, {}


def _object_npz(tmp_path, mp):
    a = qkv()
    a["q"] = np.array([[{"x": 1}]], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=True, **a)
    return "o.npz", buf.getvalue(), {}


def _structured(tmp_path, mp):
    a = qkv()
    a["k"] = np.zeros(3, dtype=[("a", "f4"), ("b", "i4")])
    return "st.npz", npz(**a), {}


def _limit(key, value, data_fn, name="big.npz"):
    def make(tmp_path, mp):
        mp.setitem(inputs.LIMITS, key, value)
        return name, data_fn(), {}
    return make


def _plain(name, data, **kw):
    return lambda tmp_path, mp: (name, data() if callable(data) else data, kw)


def _allowed(tmp_path, mp):
    mp.setenv("XVIZ_MODEL_DIRS", str(tmp_path))


def _folder_without_weights(tmp_path, mp):
    _allowed(tmp_path, mp)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    return "t.txt", b"hello", {"model": str(tmp_path)}


def _folder_with_bad_config(tmp_path, mp):
    _allowed(tmp_path, mp)
    (tmp_path / "config.json").write_text("{ not json")
    (tmp_path / "model.safetensors").write_bytes(safetensors.torch.save({"w": torch.zeros(1)}))
    return "t.txt", b"hello", {"model": str(tmp_path)}


def _folder_with_empty_weights(tmp_path, mp):
    _allowed(tmp_path, mp)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "model.safetensors").write_bytes(safetensors.torch.save({}))
    return "t.txt", b"hello", {"model": str(tmp_path)}


def _nan(x):
    a = qkv()
    a[x][0, 1, 2] = np.nan if x != "v" else np.inf
    return a


BAD = [
    # (id, factory(tmp_path, monkeypatch) -> (filename, data, kwargs), pattern the message must contain)
    ("empty file", _plain("a.npz", b""), r"a\.npz is empty \(0 bytes\); upload a non-empty \.npz file"),
    ("wrong extension", _plain("notes.docx", b"PK\x03\x04"), r"extension '\.docx'; accepted files are \.npz"),
    ("no extension", _plain("README", b"hello"), r"has no extension; accepted files are"),
    ("npy with text inside", _plain("a.npy", b"just some text, not an array"), r"not a NumPy \.npy array"),
    ("npz that is not a zip", _plain("a.npz", b"PK\x03\x04 definitely not a zip"), r"not a valid \.npz archive"),
    ("safetensors garbage", _plain("a.safetensors", b"\xff" * 64), r"not a valid \.safetensors file"),
    ("safetensors bad json", _plain("a.safetensors", (5).to_bytes(8, "little") + b"{oops"),
     r"not a valid \.safetensors file \(its header is not JSON\)"),
    ("npz without q k v", _plain("a.npz", lambda: npz(a=np.zeros(3))),
     r"holds a; expected arrays named q, k and v \(or one hidden-state matrix x\)"),
    ("pickled object npy", _plain("o.npy", lambda: npy(np.array([{"a": 1}], dtype=object), allow_pickle=True)),
     r"holds Python objects \(dtype object\).*nothing is ever unpickled"),
    ("pickled object in npz", _object_npz, r"array q in o\.npz holds Python objects"),
    ("structured dtype", _structured, r"structured dtype"),
    ("string dtype", _plain("s.npz", lambda: npz(q=np.array([["a", "b"]]), k=np.zeros((1, 2)), v=np.zeros((1, 2)))),
     r"array q in s\.npz has dtype <U1, which is not numeric"),
    ("bool dtype", _plain("b.npy", lambda: npy(np.zeros((4, 4), bool))), r"has dtype bool, which is not numeric"),
    ("complex npz", _plain("c.npz", lambda: npz(**{**qkv(), "k": qkv()["k"].astype(np.complex64)})),
     r"array k in c\.npz has complex dtype complex64; attention needs real numbers"),
    ("complex safetensors", _plain("c.safetensors", lambda: safetensors.torch.save(
        {"q": torch.zeros(2, 2, dtype=torch.complex64), "k": torch.zeros(2, 2), "v": torch.zeros(2, 2)})),
     r"q in c\.safetensors has complex dtype C64"),
    ("bool safetensors", _plain("b.safetensors", lambda: safetensors.torch.save({"x": torch.zeros(2, 2, dtype=bool)})),
     r"x in b\.safetensors has dtype BOOL, which is not numeric"),
    ("nan in q", _plain("n.npz", lambda: npz(**_nan("q"))), r"q in n\.npz contains NaN or Inf values"),
    ("inf in v", _plain("n.npz", lambda: npz(**_nan("v"))), r"v in n\.npz contains NaN or Inf values"),
    ("nan in safetensors", _plain("n.safetensors", lambda: safetensors.torch.save(
        {x: torch.full((3, 2), float("nan")) for x in "qkv"})), r"q in n\.safetensors contains NaN or Inf"),
    ("1-D q", _plain("d.npz", lambda: npz(q=np.zeros(4), k=np.zeros(4), v=np.zeros(4))),
     r"q in d\.npz has 1 dimension \(shape \(4,\)\); expected \(N, d\), \(H, N, d\) or \(B, H, N, d\)"),
    ("5-D q", _plain("d.npz", lambda: npz(**{x: np.zeros((1, 1, 1, 2, 2)) for x in "qkv"})),
     r"has 5 dimensions"),
    ("3-D x", _plain("x.npz", lambda: npz(x=np.zeros((2, 3, 4)))), r"x in x\.npz has 3 dimensions.*must be 2-D"),
    ("npy of wrong rank", _plain("w.npy", lambda: npy(np.zeros((2, 3, 4)))),
     r"w\.npy has shape \(2, 3, 4\); a \.npy must hold one hidden-state matrix x"),
    ("q and k of different d", _plain("d.npz", lambda: npz(q=np.zeros((5, 8)), k=np.zeros((5, 4)), v=np.zeros((5, 8)))),
     r"q and k in d\.npz must have the same head dimension d; got 8 and 4"),
    ("k and v of different N", _plain("n.npz", lambda: npz(q=np.zeros((10, 4)), k=np.zeros((10, 4)), v=np.zeros((12, 4)))),
     r"k and v in n\.npz must have the same length N; got 10 and 12"),
    ("N_k beyond the limit", _limit("max_n", 16, lambda: npz(q=np.zeros((4, 2)), k=np.zeros((20, 2)), v=np.zeros((20, 2)))),
     r"big\.npz has N = 20 tokens, more than the limit of 16"),
    ("N beyond the limit", _limit("max_n", 16, lambda: npz(**qkv(n=20))),
     r"big\.npz has N = 20 tokens, more than the limit of 16; use a shorter sequence"),
    ("d beyond the limit", _limit("max_d", 4, lambda: npz(**qkv(d=8))),
     r"has head dimension d = 8, more than the limit of 4"),
    ("heads beyond the limit", _limit("max_heads", 1, lambda: npz(**qkv(h=2))), r"has 2 heads, more than the limit of 1"),
    ("csv too long", _limit("max_n", 3, lambda: b"1\n2\n3\n4\n", "s.csv"), r"s\.csv has N = 4 tokens, more than the limit of 3"),
    ("file over the upload limit", _limit("max_upload_bytes", 100, lambda: npz(**qkv())),
     r"big\.npz is [\d.]+ KiB, over the upload limit of 100 bytes"),
    ("truncated npz", _plain("t.npz", lambda: npz(**qkv())[:700]), r"t\.npz is not a valid \.npz archive \(not a zip file, or truncated\)"),
    ("truncated npy", _plain("t.npy", lambda: npy(np.zeros((10, 10)))[:300]), r"t\.npy is truncated: its header promises"),
    ("truncated safetensors", _plain("t.safetensors", lambda: safetensors.torch.save({x: torch.zeros(8, 8) for x in "qkv"})[:-40]),
     r"t\.safetensors is truncated: v ends at byte"),
    ("zip bomb npz", _zip_bomb, r"the arrays in bomb\.npz would take 12\.0 MiB once decompressed, over the 1\.0 MiB "
                                r"limit; refusing to decompress it"),
    ("non-UTF-8 text", _plain("t.txt", b"caf\xe9 au lait"), r"t\.txt is not UTF-8 text \(byte 0xe9 at position 3 is invalid\); save it as UTF-8"),
    ("empty text", _plain("t.txt", b"  \n\t \n"), r"t\.txt contains no text \(it is empty or only whitespace\)"),
    ("non-UTF-8 csv", _plain("s.csv", b"1\n\xff\n"), r"s\.csv is not UTF-8 text"),
    ("non-numeric csv", _plain("s.csv", b"t,v\n0,1\n1,abc\n"), r"line 3 of s\.csv has 'abc' where a number is expected"),
    ("nan in csv", _plain("s.csv", b"1\nnan\n"), r"line 2 of s\.csv holds 'nan'; every value must be a finite number"),
    ("csv with only a header", _plain("s.csv", b"time,value\n"), r"s\.csv has a header but no data rows"),
    ("csv of blank lines", _plain("s.csv", b"\n\n,\n"), r"s\.csv has no rows"),
    ("not an image", _plain("p.png", b"\x89PNG but broken"), r"p\.png is not a readable PNG or JPEG image"),
    ("model folder not allowed", _plain("t.txt", b"hello", model="/nonexistent/model/folder"),
     r"the model folder '/nonexistent/model/folder' is not one this server allows; an operator allows model "
     r"folders by listing their parent folders in XVIZ_MODEL_DIRS"),
    ("server file not disclosed", _plain("t.txt", b"hello", model="/etc/passwd"),
     r"the model folder '/etc/passwd' is not one this server allows"),
    ("relative path not disclosed", _plain("t.txt", b"hello", model="../../" + "x" * 300),
     r"the model folder '\.\./\.\./x{50,}…' is not one this server allows"),
    ("model folder missing", lambda tmp, mp: (_allowed(tmp, mp), ("t.txt", b"hello", {"model": str(tmp / "gone")}))[1],
     r"the model folder '.*gone' does not exist; give the path of a local Hugging Face model folder"),
    ("model folder that is a file", lambda tmp, mp: (_allowed(tmp, mp), (tmp / "w.png").write_bytes(b"x"),
                                                     ("t.txt", b"hello", {"model": str(tmp / "w.png")}))[2],
     r"w\.png' is a file, not a model folder"),
    ("folder that is not a model", lambda tmp, mp: (_allowed(tmp, mp), ("t.txt", b"hello", {"model": str(tmp)}))[1],
     r"is not a Hugging Face model folder \(it has no config\.json\)"),
    ("model folder with empty weights", _folder_with_empty_weights,
     r"the weights in the model folder '.*' hold no tensors; loading it would give a model with random weights"),
    ("text of control characters", _plain("c.txt", "\x00\x01\x07\x1b\u200b".encode()),
     r"the text has no characters the all-MiniLM-L6-v2 tokenizer reads as words"),
    ("file name with a newline", _plain("evil\nname" + "y" * 200 + ".npz", b"junk"),
     r"^evil\?namey{40,}…"),
    ("model folder without safetensors", _folder_without_weights,
     r"has no \.safetensors weights; xviz loads only safetensors weights, so that nothing is unpickled"),
    ("model folder with a broken config", _folder_with_bad_config, r"the config\.json in .* is not one transformers can read"),
    ("bad seed", _plain("a.npz", lambda: npz(**qkv()), seed=-1), r"seed = -1 must be an integer in \[0, 2\^63 - 1\]"),
]


@pytest.mark.parametrize("factory,pattern", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_gets_one_clear_sentence(factory, pattern, tmp_path, monkeypatch):
    name, data, kwargs = factory(tmp_path, monkeypatch)
    with pytest.raises(xviz.InputError) as info:
        inputs.load_upload(name, data, **kwargs)
    msg = str(info.value)
    assert re.search(pattern, msg), msg
    # One sentence: a single line ending in a full stop, no chained traceback shown to the user.
    assert "\n" not in msg and msg.endswith(".") and msg.count(". ") == 0, msg
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)
    # Never a server path the user did not type: no working directory, no resolved folder.
    assert os.getcwd() not in msg.replace(str(tmp_path), ""), msg


def test_lying_zip_member_stops_at_declared_size():
    # A member whose header declares fewer bytes than it holds: reading stops at the declared size
    # and the CRC check fails, so nothing beyond the declared (checked) size is ever produced.
    good = npz(**qkv())
    zf = zipfile.ZipFile(io.BytesIO(good))
    info = zf.getinfo("q.npy")
    raw = bytearray(good)
    # Patch the central directory's uncompressed size of q.npy (stored: equal to compressed size) down by 64.
    cd = raw.rfind(b"PK\x01\x02", 0, raw.rfind(b"q.npy") + 1)
    size_at = cd + 24
    assert int.from_bytes(raw[size_at:size_at + 4], "little") == info.file_size
    raw[size_at:size_at + 4] = (info.file_size - 64).to_bytes(4, "little")
    with pytest.raises(xviz.InputError, match=r"truncat|corrupt"):
        inputs.load_upload("lie.npz", bytes(raw))


# ------------------------------------------------------------------ samples


def test_samples_exist_are_small_and_documented():
    readme = (samples_dir() / "README.md").read_text(encoding="utf-8")
    samples = inputs.list_samples()
    kinds = {s.kind for s in samples}
    assert kinds == {"text", "csv", "image", "npz"} and sum(s.kind == "text" for s in samples) >= 2
    for s in samples:
        path = samples_dir() / s.filename
        assert path.is_file() and path.stat().st_size < 1_000_000, s.filename
        assert f"`{s.filename}`" in readme, f"{s.filename} has no line in sample_inputs/README.md"
        assert s.name and s.description
    words = [len((samples_dir() / s.filename).read_text(encoding="utf-8").split()) for s in samples if s.kind == "text"]
    assert min(words) < 150 and max(words) > 2000  # a short paragraph and one of several thousand words


@pytest.mark.parametrize("name", [s.name for s in inputs.list_samples() if s.kind != "text"])
def test_non_text_samples_load(name):
    seq = inputs.load_sample(name)
    assert seq.q.dim() == 4 and seq.n > 50 and torch.isfinite(seq.q).all() and seq.provenance.startswith("sample ")
    short = inputs.load_sample(name, n_max=40)
    assert short.n <= 40
    if seq.n > 40 and seq.positions.dim() == 1:
        assert short.notices and "first 40" in short.notices[0]
        assert torch.equal(short.q, seq.q[..., :40, :]) or name == "Hourly demand series"


def test_sample_npz_is_the_captured_model():
    seq = inputs.load_sample("MiniLM Q/K/V")
    assert seq.q.shape[:2] == (1, 4) and seq.q.shape[-1] == 32 and seq.tokens[0] == "[CLS]"


def test_unknown_sample():
    with pytest.raises(xviz.InputError, match="there is no sample 'nope'; the samples are: Short paragraph"):
        inputs.load_sample("nope")
    with pytest.raises(xviz.InputError, match="n_max = 0 must be a whole number of at least 1"):
        inputs.load_sample("harbour.png", n_max=0)


def test_library_does_not_import_streamlit():
    import subprocess
    import sys

    code = "import sys, xviz.inputs; assert 'streamlit' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
