import os

import pytest
import torch

# Two xdist workers on two cores: one thread each avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def make_qkv(b=2, h=2, n=24, d=8, dv=None, seed=0, dtype=torch.float64, unit=False):
    """Random q, k, v. ``unit``: q = k = unit-norm rows scaled by 2 (shared-QK variants hash q itself),
    so an LSH variant's keys equal the k the reference uses."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, d, generator=g, dtype=dtype)
    k = torch.randn(b, h, n, d, generator=g, dtype=dtype)
    v = torch.randn(b, h, n, dv or d + 3, generator=g, dtype=dtype)
    if unit:
        q = q / q.norm(dim=-1, keepdim=True)
        k = q.clone()
    return q, k, v


@pytest.fixture
def qkv():
    return make_qkv()


def plain(text: str) -> str:
    """A page's markdown with its escapes removed (the app escapes every message that may echo a user's
    value), for assertions on what the reader sees."""
    import re

    return re.sub(r"\\(.)", r"\1", text)


@pytest.fixture(scope="session")
def smollm2():
    """The bundled decoder, loaded once per test session. Its one-time conversion from GGUF (~20 s) lands in
    xviz's model cache ($XVIZ_CACHE_DIR, else ~/.cache/xviz), so later sessions load it in about a second."""
    from xviz import inputs

    return inputs.model_info("smollm2-135m")
