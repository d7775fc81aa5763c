"""Captured model inputs kept on disk: a text's Q, K, V (and the model's own attention) through a model
folder, and the model's facts (layers, heads, …), so a restarted server — or a script run again — serves
the same text without loading the model: loading transformers and the weights is most of a cold start.

An entry is keyed on the model folder's files (relative names, sizes, modification times), the text, the
layer, the options and the limits that shape a capture, and ``CAPTURE_VERSION`` (raised whenever what a
capture holds changes). Tensors are safetensors, the rest JSON: nothing is ever unpickled. Written to a
temporary file and renamed into place, so a concurrent reader never sees half an entry; a damaged or
unreadable entry is a miss. The folder is ``<xviz cache>/captures`` (``bundled.cache_dir()``).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

from .bundled import cache_dir
from .sequence import SequenceInput

CAPTURE_VERSION = 1
MAX_ENTRY_BYTES = 64 * 2**20  # longer texts are captured again each time rather than filling the disk
MAX_FOLDER_BYTES = 512 * 2**20  # beyond this, the least recently written entries go (a server sees many texts)
_MAX_STAMP_FILES = 500
_TENSORS = ("q", "k", "v", "positions", "reference_attention")


def folder_stamp(path: str) -> list | None:
    """(relative name, size, modification time) of every file under a model folder; None when it cannot
    be read (no caching then)."""
    if not os.path.isdir(path):
        return None
    try:
        files = []
        for root, _, names in os.walk(path):
            for name in names:
                full = os.path.join(root, name)
                st = os.stat(full)
                files.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
                if len(files) > _MAX_STAMP_FILES:
                    return None
        return sorted(files)
    except OSError:
        return None


def entry_key(kind: str, path: str, **options: Any) -> str | None:
    """The entry's name for ``kind`` ("capture", "info") of the model at ``path`` with ``options``."""
    stamp = folder_stamp(path)
    if stamp is None:
        return None
    text = json.dumps({"version": CAPTURE_VERSION, "kind": kind, "path": path, "stamp": stamp, **options},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _folder() -> str:
    return os.path.join(cache_dir(), "captures")


def _write(name: str, data: bytes) -> None:
    os.makedirs(_folder(), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=_folder(), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(_folder(), name))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _trim(keep=name)


def _trim(keep: str) -> None:
    """Oldest entries removed until the folder is within MAX_FOLDER_BYTES (never the one just written)."""
    entries = sorted((e.stat().st_mtime_ns, e.stat().st_size, e.path) for e in os.scandir(_folder())
                     if e.is_file() and e.name != keep)
    total = sum(size for _, size, _ in entries) + os.path.getsize(os.path.join(_folder(), keep))
    for _, size, path in entries:
        if total <= MAX_FOLDER_BYTES:
            break
        try:
            os.unlink(path)
        except OSError:  # another process removed it first
            pass
        total -= size


def _read(name: str) -> bytes | None:
    try:
        with open(os.path.join(_folder(), name), "rb") as f:
            return f.read()
    except OSError:
        return None


def save_info(key: str | None, info: dict) -> None:
    if key is not None:
        try:
            _write(key + ".json", json.dumps(info, default=str).encode())
        except (OSError, TypeError, ValueError):  # a read-only or full disk: the cache is only a shortcut
            pass


def load_info(key: str | None) -> dict | None:
    raw = None if key is None else _read(key + ".json")
    try:
        info = json.loads(raw) if raw else None
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def save_capture(key: str | None, seq: SequenceInput) -> None:
    from safetensors.torch import save

    if key is None:
        return
    tensors = {name: getattr(seq, name).contiguous() for name in _TENSORS if getattr(seq, name) is not None}
    if sum(t.numel() * t.element_size() for t in tensors.values()) > MAX_ENTRY_BYTES:
        return
    rest = {"tokens": list(seq.tokens), "provenance": seq.provenance, "causal": seq.causal,
            "notices": list(seq.notices), "meta": seq.meta, "key_tokens": seq.key_tokens}
    try:
        _write(key + ".safetensors", save(tensors, metadata={"xviz": json.dumps(rest)}))
    except (OSError, TypeError, ValueError):
        pass


def load_capture(key: str | None) -> SequenceInput | None:
    """The stored capture, or None (none stored, or unreadable: captured again)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    raw = None if key is None else _read(key + ".safetensors")
    if not raw:
        return None
    try:
        tensors = load(raw)
        rest = json.loads(_metadata(raw)["xviz"])
        seq = SequenceInput(q=tensors["q"], k=tensors["k"], v=tensors["v"], tokens=list(rest["tokens"]),
                            positions=tensors["positions"], provenance=str(rest["provenance"]),
                            causal=bool(rest["causal"]), reference_attention=tensors.get("reference_attention"),
                            notices=list(rest["notices"]), meta=dict(rest["meta"]), key_tokens=rest["key_tokens"])
    except (SafetensorError, KeyError, TypeError, ValueError):
        return None
    return seq


def _metadata(raw: bytes) -> dict:
    """The safetensors header's ``__metadata__`` (8-byte little-endian length, then JSON)."""
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]).get("__metadata__") or {}
