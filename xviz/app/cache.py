"""A thread-safe cache bounded by bytes, not entries: what a server keeps for all its sessions.

``get(key, make, nbytes)`` returns the cached value or makes it (once, even when several threads ask
at the same moment), then evicts the least recently used entries until the total is under the bound.
A value larger than the bound is returned but not kept. ``nbytes(value)`` measures what an entry holds.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable

import torch

from ..core.memory import release_memory


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors reachable in ``value`` (tensors, containers, objects with ``nbytes``)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if hasattr(value, "nbytes") and not isinstance(value, type):
        nb = value.nbytes
        return int(nb() if callable(nb) else nb)
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    if hasattr(value, "__dict__"):
        return sum(tensor_bytes(v) for v in vars(value).values() if isinstance(v, (torch.Tensor, dict, list, tuple)))
    return 0


_LOCK = threading.Lock()
_RELEASER: threading.Thread | None = None


def release_memory_every(seconds: float, caches: tuple["BoundedCache", ...] = (),
                         max_idle_s: float | None = None) -> threading.Thread:
    """Start (once per process) a daemon thread that every ``seconds`` drops the entries of ``caches``
    unused for ``max_idle_s`` (when given) and calls ``release_memory``."""
    global _RELEASER
    with _LOCK:
        if _RELEASER is None:
            def loop():
                while True:
                    time.sleep(seconds)
                    if max_idle_s is not None:
                        for c in caches:
                            c.expire(max_idle_s)
                    release_memory()

            _RELEASER = threading.Thread(target=loop, name="xviz-release-memory", daemon=True)
            _RELEASER.start()
    return _RELEASER


class BoundedCache:
    def __init__(self, max_bytes: int, nbytes: Callable[[Any], int] = tensor_bytes):
        self.max_bytes = int(max_bytes)
        self._nbytes = nbytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[Hashable, threading.Lock] = {}
        self._used: dict[Hashable, float] = {}  # key -> time.monotonic() of its last get or put
        self.total = 0

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                return self._hit(key)
            gate = self._making.setdefault(key, threading.Lock())
        with gate:  # one maker per key; the others wait for its value
            with self._lock:
                if key in self._items:
                    return self._hit(key)
            try:
                value = make()
            finally:
                with self._lock:
                    self._making.pop(key, None)
            self.put(key, value)
            return value

    def _hit(self, key: Hashable) -> Any:
        """A hit: most recently used now, and measured again (a result grows as its lazy artifacts
        are built), evicting others if it grew past the bound. Holds the lock."""
        value, old = self._items[key]
        self._used[key] = time.monotonic()
        size = self._nbytes(value)
        self._items[key] = (value, size)
        self._items.move_to_end(key)
        self.total += size - old
        self._evict(keep=key)
        return value

    def _evict(self, keep: Hashable | None = None) -> None:
        while self.total > self.max_bytes and len(self._items) > (1 if keep is not None else 0):
            oldest = next(iter(self._items))
            if oldest == keep:
                self._items.move_to_end(keep)
                oldest = next(iter(self._items))
            self.total -= self._items.pop(oldest)[1]
            self._used.pop(oldest, None)

    def put(self, key: Hashable, value: Any) -> None:
        size = self._nbytes(value)
        with self._lock:
            if key in self._items:
                self.total -= self._items.pop(key)[1]
            if size > self.max_bytes:
                self._used.pop(key, None)
                return
            self._items[key] = (value, size)
            self._used[key] = time.monotonic()
            self.total += size
            self._evict()

    def peek(self, key: Hashable, default: Any = None) -> Any:
        """The cached value, or ``default`` — never makes one."""
        with self._lock:
            return self._hit(key) if key in self._items else default

    def expire(self, max_idle_s: float) -> int:
        """Drop the entries unused for ``max_idle_s`` seconds (so a server left alone returns its memory);
        returns how many went."""
        cutoff = time.monotonic() - max_idle_s
        with self._lock:
            old = [k for k in self._items if self._used.get(k, 0.0) < cutoff]
            for k in old:
                self.total -= self._items.pop(k)[1]
                self._used.pop(k, None)
        return len(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._used.clear()
            self.total = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items
