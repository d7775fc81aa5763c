"""Inputs: every source returns a ``SequenceInput`` (q, k, v of shape (B, H, N, d), tokens, provenance, …).

    from xviz import inputs
    inputs.synthetic("clustered", n=256, d=64, heads=4, seed=0, clusters=8)
    inputs.load_sample("Gettysburg Address", layer=3)       # texts go through the real model
    inputs.load_upload("qkv.npz", data)                     # .npz .npy .safetensors .txt .csv .png
    inputs.from_text("Attention is all you need.", layer=0)  # the model's own Q, K, V and probabilities

Loaders: ``synthetic`` (seeded generators), ``samples`` (sample_inputs/), ``files`` (uploads) and ``model``
(a real pretrained model, default all-MiniLM-L6-v2; the bundled decoder ``"smollm2-135m"``; offline). The app and the CLI reach them through the
source catalog (``catalog``: ``SourceSpec``, ``register_source``; the built-ins in ``sources``) and
``InputSpec`` (a source and its settings: parsed, keyed, loaded). Every bad input raises ``xviz.InputError``
with one sentence naming the problem and what is accepted. ``LIMITS`` holds the configured limits.
This package never imports streamlit; torch and numpy are imported here, transformers only when a model
is first used.
"""
from .sequence import SequenceInput
from ._common import LIMITS, fmt_bytes
from .files import load_upload
from .model import default_model_path, from_text, from_text_layers, model_info, stored_model_info
from .samples import Sample, list_samples, load_sample
from .synthetic import SYNTHETIC_KINDS, synthetic, synthetic_params
from .catalog import Field, SourceSpec, get_source, list_sources, register_source, unregister_source
from . import sources  # noqa: F401,E402  (the built-in sources register on import)
from .spec import InputSpec  # noqa: E402

__all__ = [
    "SequenceInput", "LIMITS", "fmt_bytes", "SYNTHETIC_KINDS", "synthetic", "synthetic_params", "Sample", "list_samples",
    "load_sample", "load_upload", "from_text", "from_text_layers", "default_model_path", "model_info",
    "stored_model_info", "InputSpec",
    "Field", "SourceSpec", "register_source", "unregister_source", "get_source", "list_sources",
]
