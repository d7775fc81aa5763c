"""Uploaded arrays: .npz / .npy / .safetensors (q, k, v, where k and v may be another length than q
for cross-attention, or a hidden-state matrix x), read without unpickling.

Safety: NumPy data is parsed from the .npy header (``numpy.lib.format``, a literal parser) and read as raw
bytes — ``allow_pickle`` never comes into it and nothing is unpickled; object and structured dtypes are
refused. Sizes are checked before anything large is allocated: the upload's length, an .npz member's
declared uncompressed size (so a zip bomb is refused before decompression; a member that lies about its size
stops at the declared size and fails its CRC check), the shape in each .npy header and the offsets in a
.safetensors header. Every problem ends in an ``InputError`` with one sentence naming it and what is accepted.

Hidden states x (N, D) become q, k, v by seeded random projections after a per-token layer norm:
W ~ N(0, 1/D), so q, k, v entries have unit variance; heads = clamp(D // 64, 1, 8), d = min(D, 64).
"""
from __future__ import annotations

import io
import json
import math
import zipfile
import zlib

import numpy as np
import torch

from ..core.engine import generator
from ..core.errors import InputError
from .sequence import SequenceInput
from ._common import LIMITS, as_4d, check_finite, check_qkv_shapes, check_size, fmt_bytes, plural, shown


# ------------------------------------------------------------------ NumPy arrays without unpickling


def _check_dtype(dtype: np.dtype, label: str) -> None:
    if dtype.hasobject:
        raise InputError(f"{label} holds Python objects (dtype object), which would need unpickling; only plain "
                         f"numeric arrays are accepted and nothing is ever unpickled.")
    if dtype.fields is not None or dtype.kind == "V":
        raise InputError(f"{label} has a structured dtype ({dtype}); save a plain numeric array of floats.")
    if dtype.kind == "c":
        raise InputError(f"{label} has complex dtype {dtype}; attention needs real numbers (float or int).")
    if dtype.kind not in "fiu":
        raise InputError(f"{label} has dtype {dtype}, which is not numeric; arrays must hold real numbers "
                         f"(float or int).")


def _npy_header(fp, label: str, strict: bool = True) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read a .npy header (magic, version, literal dict). strict: the dtype must be numeric; otherwise only
    object dtypes (pickles) are refused — for arrays that are not used as numbers."""
    try:
        version = np.lib.format.read_magic(fp)
    except (ValueError, EOFError, OSError):
        raise InputError(f"{label} is not a NumPy .npy array (it does not start with the .npy magic bytes); "
                         f"save arrays with numpy.save or numpy.savez.") from None
    if version not in ((1, 0), (2, 0)):
        raise InputError(f"{label} uses .npy format version {version[0]}.{version[1]}, which xviz does not read; "
                         f"save plain numeric arrays with numpy.save (format 1.0 or 2.0).")
    try:
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fp)
    except Exception:  # numpy parses the header's dict with tokenize/ast: any of their errors means damaged
        raise InputError(f"{label} has a damaged .npy header; save the array again with numpy.save.") from None
    if strict or dtype.hasobject:
        _check_dtype(dtype, label)
    return tuple(int(s) for s in shape), bool(fortran), dtype


def _npy_data(fp, shape, fortran, dtype, label: str) -> torch.Tensor:
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    try:
        buf = fp.read(nbytes)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise InputError(f"{label} is truncated or corrupt ({exc}); save it again with numpy.savez.") from None
    if len(buf) < nbytes:
        raise InputError(f"{label} is truncated: its header promises {fmt_bytes(nbytes)} of data but only "
                         f"{fmt_bytes(len(buf))} follow; save it again.")
    arr = np.frombuffer(buf, dtype=dtype, count=count)
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    target = np.float64 if dtype.kind == "f" and dtype.itemsize >= 8 else np.float32
    t = torch.from_numpy(np.array(arr, dtype=target, order="C", copy=True))  # a writable copy, native order
    check_finite(label, t)
    return t


def _pick(names, what: str) -> tuple[str, dict[str, str]]:
    """Map lower-cased array names to q/k/v or x; returns (mode, {role: original name})."""
    lower = {}
    for n in names:
        lower.setdefault(n.lower(), n)
    if all(r in lower for r in ("q", "k", "v")):
        return "qkv", {r: lower[r] for r in ("q", "k", "v")}
    if "x" in lower:
        return "x", {"x": lower["x"]}
    listed = sorted(names)
    text = ", ".join(shown(n, 30) for n in listed[:6]) + (f" and {len(listed) - 6} more" if len(listed) > 6 else "")
    raise InputError(f"{what} holds {text or 'no arrays'}; expected arrays named q, k and v (or one hidden-state "
                     f"matrix x).")


def _check_x_shape(shape, label: str) -> None:
    if len(shape) != 2:
        raise InputError(f"{label} has {plural(len(shape), 'dimension')} (shape {str(tuple(shape))[:80]}); a "
                         f"hidden-state matrix x must be 2-D, (N, D).")
    n, dim = shape
    if dim < 1:
        raise InputError(f"{label} has D = {dim} features; a hidden-state matrix x needs at least 1.")
    check_size(n, min(dim, 64), 1, what=label)
    if dim > LIMITS["max_d"] * LIMITS["max_heads"]:
        raise InputError(f"{label} has D = {dim:,} features, more than the limit of "
                         f"{LIMITS['max_d'] * LIMITS['max_heads']:,}.")


def _check_bytes(nbytes: int, what: str) -> None:
    limit = LIMITS["max_upload_bytes"]
    if nbytes > limit:
        raise InputError(f"{what} would take {fmt_bytes(nbytes)} once decompressed, over the {fmt_bytes(limit)} "
                         f"limit; refusing to decompress it (upload fewer or smaller arrays).")


# ------------------------------------------------------------------ building the SequenceInput


def project_hidden(x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Hidden states x (N, D) -> q, k, v (1, H, N, d) by seeded Gaussian projections after a layer norm."""
    n, dim = x.shape
    d = min(dim, 64)
    heads = max(1, min(8, dim // 64))
    g = generator(seed, 7)
    xd = x.to(torch.float64)
    # the layer norm is scale-invariant per token: divide by the token's largest |x| first, so values
    # near the float64 maximum (1e308) cannot overflow its sums into NaN q, k, v
    xd = xd / xd.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    xd = (xd - xd.mean(-1, keepdim=True)) / xd.std(-1, keepdim=True, unbiased=False).clamp_min(1e-12)
    w = torch.randn(3, dim, heads * d, generator=g, dtype=torch.float64) / math.sqrt(dim)
    q, k, v = (torch.matmul(xd, w[i]).reshape(n, heads, d).transpose(0, 1)[None].to(x.dtype) for i in range(3))
    how = (f"x ({n}, {dim}) projected to {heads} heads × d={d} by seeded random Gaussian projections "
           f"(seed {seed}) after a per-token layer norm")
    return q.contiguous(), k.contiguous(), v.contiguous(), how


def _qkv_input(arrays: dict[str, torch.Tensor], mode: str, source: str, seed: int,
               tokens: list[str] | None = None, notices: list[str] | None = None) -> SequenceInput:
    if mode == "x":
        q, k, v, how = project_hidden(arrays["x"], seed)
        provenance = f"{source}: {how}"
    else:
        q, k, v = (as_4d(arrays[r]) for r in ("q", "k", "v"))
        dt = torch.float64 if torch.float64 in (q.dtype, k.dtype, v.dtype) else torch.float32
        q, k, v = q.to(dt), k.to(dt), v.to(dt)
        provenance = f"{source}: q, k, v of shape {tuple(q.shape)}, v dim {v.shape[-1]}, {str(dt).replace('torch.', '')}"
    n, nk = q.shape[-2], k.shape[-2]
    if tokens is None or len(tokens) != n:
        tokens = [f"t{i}" for i in range(n)]
    key_tokens = None
    if nk != n:  # cross-attention: the keys are another sequence
        key_tokens = [f"k{j}" for j in range(nk)]
        provenance += f"; keys and values of length N_k = {nk} (cross-attention)"
    return SequenceInput(q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), tokens=list(tokens),
                         positions=torch.arange(n), provenance=provenance, causal=False, key_tokens=key_tokens,
                         notices=list(notices or []), meta=dict(source="arrays", mode=mode))


# ------------------------------------------------------------------ one reader per file type


def read_npz(name: str, data: bytes, seed: int = 0) -> SequenceInput:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError):
        raise InputError(f"{name} is not a valid .npz archive (not a zip file, or truncated); save the arrays "
                         f"with numpy.savez(file, q=q, k=k, v=v).") from None
    members = {}
    for info in infos:
        if info.filename.endswith(".npy") and not info.is_dir():
            members[info.filename[:-4]] = info
    mode, roles = _pick(list(members), name)
    used = set(roles.values())
    _check_bytes(sum(members[m].file_size for m in used), f"the arrays in {name}")
    token_member = next((m for m in members if m.lower() == "tokens"), None)
    headers, notices = {}, []
    for m, info in members.items():  # only headers here: unused members are never decompressed further
        label = f"array {shown(m, 30)} in {name}"
        try:
            with zf.open(info) as fp:
                # every member's header is read: object arrays are refused even where unused
                headers[m] = _npy_header(fp, label, strict=m in used)
        except InputError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
            raise InputError(f"{name} is truncated or corrupt ({exc}); save the arrays again with "
                             f"numpy.savez.") from None
    ignored = sorted(set(members) - used - {token_member})
    if ignored:
        notices.append(f"{name}: arrays {', '.join(shown(m, 30) for m in ignored[:6])}"
                       f"{' and more' if len(ignored) > 6 else ''} were ignored (xviz reads q, k, v or x, and tokens).")
    shapes = {r: headers[m][0] for r, m in roles.items()}
    if mode == "qkv":
        check_qkv_shapes(shapes, name)
    else:
        _check_x_shape(shapes["x"], f"x in {name}")
    arrays = {}
    for role, m in roles.items():
        try:
            with zf.open(members[m]) as fp:
                shape, fortran, dtype = _npy_header(fp, f"array {shown(m, 30)} in {name}")
                arrays[role] = _npy_data(fp, shape, fortran, dtype, f"{role} in {name}")
        except InputError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as exc:
            raise InputError(f"{name} is truncated or corrupt ({exc}); save the arrays again with "
                             f"numpy.savez.") from None
    tokens = _read_tokens(zf, members.get(token_member), headers.get(token_member), name, notices)
    return _qkv_input(arrays, mode, name, seed, tokens, notices)


def _read_tokens(zf, info, header, name, notices) -> list[str] | None:
    """An optional 1-D array of strings (dtype U or S, never object) naming the tokens."""
    if info is None:
        return None
    shape, fortran, dtype = header
    if dtype.kind not in "US" or len(shape) != 1 or info.file_size > 16 * 2**20:
        notices.append(f"{name}: the tokens array was ignored (expected a 1-D array of strings).")
        return None
    with zf.open(info) as fp:
        _npy_header(fp, f"tokens in {name}", strict=False)
        buf = fp.read(math.prod(shape) * dtype.itemsize)
    arr = np.frombuffer(buf, dtype=dtype, count=len(buf) // dtype.itemsize)
    return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in arr.tolist()]


def read_npy(name: str, data: bytes, seed: int = 0) -> SequenceInput:
    fp = io.BytesIO(data)
    shape, fortran, dtype = _npy_header(fp, name)
    if len(shape) == 2:
        _check_x_shape(shape, name)
        x = _npy_data(fp, shape, fortran, dtype, name)
        return _qkv_input({"x": x}, "x", name, seed)
    if len(shape) in (3, 4, 5) and shape[0] == 3:
        inner = shape[1:]
        check_qkv_shapes({"q": inner, "k": inner, "v": inner}, name)
        t = _npy_data(fp, shape, fortran, dtype, name)
        return _qkv_input({"q": t[0], "k": t[1], "v": t[2]}, "qkv", name, seed)
    raise InputError(f"{name} has shape {str(shape)[:80]}; a .npy must hold one hidden-state matrix x (N, D) or q, k, v "
                     f"stacked on a first axis of length 3: (3, N, d), (3, H, N, d) or (3, B, H, N, d).")


_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def read_safetensors(name: str, data: bytes, seed: int = 0) -> SequenceInput:
    bad = f"{name} is not a valid .safetensors file"
    hint = "save tensors with safetensors.torch.save_file({'q': q, 'k': k, 'v': v}, path)"
    if len(data) < 8:
        raise InputError(f"{bad} (too short to hold a header); {hint}.")
    hlen = int.from_bytes(data[:8], "little")
    if hlen > len(data) - 8 or hlen > 100 * 2**20:
        raise InputError(f"{bad}, or it is truncated: its header claims {hlen:,} bytes but the file has "
                         f"{len(data):,}; {hint}.")
    try:
        header = json.loads(data[8:8 + hlen].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{bad} (its header is not JSON); {hint}.") from None
    body = len(data) - 8 - hlen
    entries = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = entry["dtype"], [int(s) for s in entry["shape"]], entry["data_offsets"]
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{bad} (the header entry for {shown(key, 30)!r} is malformed); {hint}.") from None
        if any(s < 0 for s in shape):
            raise InputError(f"{bad}: {shown(key, 30)} has a negative dimension in its shape "
                             f"{str(tuple(shape))[:80]}; {hint}.")
        entries[key] = (dtype_name, shape, begin, end)
    mode, roles = _pick(list(entries), name)
    for role, key in roles.items():
        dtype_name, shape, begin, end = entries[key]
        label = f"{shown(key, 30)} in {name}"
        if not isinstance(dtype_name, str):
            raise InputError(f"{bad} (the dtype of {label} is not a name); {hint}.")
        if dtype_name in ("C64", "C128", "COMPLEX64"):
            raise InputError(f"{label} has complex dtype {dtype_name}; attention needs real numbers (float or int).")
        if dtype_name not in _ST_DTYPES:
            raise InputError(f"{label} has dtype {dtype_name}, which is not numeric; arrays must hold real "
                             f"numbers (float or int).")
        size = math.prod(shape) * _ST_DTYPES[dtype_name].itemsize
        if end - begin != size or begin < 0:
            raise InputError(f"{bad}: {label} has shape {str(tuple(shape))[:80]} but {end - begin:,} bytes of data; "
                             f"{hint}.")
        if end > body:
            raise InputError(f"{name} is truncated: {shown(key, 30)} ends at byte {end:,} of a {body:,}-byte data section; "
                             f"save it again.")
    shapes = {r: tuple(entries[k][1]) for r, k in roles.items()}
    if mode == "qkv":
        check_qkv_shapes(shapes, name)
    else:
        _check_x_shape(shapes["x"], f"x in {name}")
    view = memoryview(data)[8 + hlen:]
    arrays = {}
    for role, key in roles.items():
        dtype_name, shape, begin, end = entries[key]
        t = torch.frombuffer(bytearray(view[begin:end]), dtype=_ST_DTYPES[dtype_name]).reshape(shape)
        t = t.to(torch.float64) if t.dtype == torch.float64 else t.to(torch.float32)
        check_finite(role, t, f" in {name}")
        arrays[role] = t
    ignored = sorted(set(entries) - set(roles.values()))
    notices = ([f"{name}: tensors {', '.join(shown(t, 30) for t in ignored[:6])}{' and more' if len(ignored) > 6 else ''} "
                f"were ignored (xviz reads q, k, v or x)."] if ignored else [])
    return _qkv_input(arrays, mode, name, seed, notices=notices)
