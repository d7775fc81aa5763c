"""The process's heap: the C library, loaded once, and handing freed pages back to the kernel (the
app's cache sweeper and the benchmark's peak-memory readings use them)."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.lru_cache(maxsize=1)
def libc():
    """The C library (glibc on Linux), loaded once, or None where there is none to load."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the kernel. glibc keeps freed blocks of a
    few MB in its arenas (its mmap threshold rises after the first large free), so without the trim
    a server's resident memory stays at its peak after the tensors are gone."""
    gc.collect()
    c = libc()
    if c is not None and hasattr(c, "malloc_trim"):
        c.malloc_trim(0)
