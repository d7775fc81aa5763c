"""Decoding step by step under KV-cache policies (no streamlit).

    import xviz.decode as dec
    r = dec.simulate("h2o", q, k, v, budget=256, prefill=512, recent=0.5)
    r.summary(), r.mass, r.error, r.cache_bytes, r.kept_at(1000)
    dec.simulate_many(["full", "window", ("sinks", {"sinks": 4})], q, k, v, budget=256)
    dec.budget_sweep(["window", "h2o", "tova"], [64, 128, 256], q, k, v)
    dec.needle_found(r, needle=40)
    dec.generate("h2o", "Once upon a time", model="smollm2-135m", max_new_tokens=32, budget=64)  # a real decoder

``registry`` (PolicySpec, register/get/list), ``policies`` (the built-ins), ``replay`` (simulate and
the shared chunked pass), ``result`` (DecodeResult, needle_found), ``reference`` (plain per-step
forms for the tests), ``generate`` (a real decoder generating under a policy), ``cli`` (``python -m xviz decode``).
"""
from .registry import PolicySpec, get_policy, list_policies, register_policy, unregister_policy
from . import policies  # noqa: F401  (the built-ins register on import)
from .replay import Chunk, Replay, budget_sweep, simulate, simulate_many
from .result import DecodeResult, needle_found
from .generate import GenerationResult, generate, generate_many

__all__ = [
    "PolicySpec", "get_policy", "list_policies", "register_policy", "unregister_policy", "Chunk", "Replay",
    "budget_sweep", "simulate", "simulate_many", "DecodeResult", "needle_found", "GenerationResult", "generate",
    "generate_many",
]
