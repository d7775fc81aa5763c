"""Resumable work: a list of items, the results so far, and stop / resume / run again. Sweeps and the
cost benchmark keep one per session; a rerun (a new widget value, a stop click) continues where the
last one stopped, and a change of settings (a new signature) starts afresh."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Iterator


@dataclass
class Job:
    sig: Hashable  # the settings the results belong to
    items: list  # every item to compute, in order
    results: dict = field(default_factory=dict)  # item -> result
    stopped: bool = False

    @classmethod
    def current(cls, old: "Job | None", sig: Hashable, items: Iterable) -> "Job":
        """``old`` when it belongs to ``sig``, else a fresh job over ``items``."""
        items = list(items)
        if old is not None and old.sig == sig:
            old.items = items
            return old
        return cls(sig, items)

    @property
    def pending(self) -> list:
        return [i for i in self.items if i not in self.results]

    @property
    def done(self) -> bool:
        return not self.pending

    @property
    def running(self) -> bool:
        return not self.done and not self.stopped

    def stop(self) -> None:
        if not self.done:
            self.stopped = True

    def resume(self) -> None:
        self.stopped = False

    def restart(self) -> None:
        self.results.clear()
        self.stopped = False

    def run(self, compute: Callable[[Any], Any], progress: Callable[[int, int, Any], None] | None = None) -> Iterator:
        """Compute the pending items one by one (unless stopped), recording each result as it arrives;
        yields (item, result). A caller interrupted between items (a rerun, the session ending) loses
        nothing already recorded."""
        todo = self.pending if not self.stopped else []
        total = len(self.items)
        for item in todo:
            if progress is not None:
                progress(total - len(self.pending), total, item)
            result = compute(item)
            self.results[item] = result
            yield item, result

    def ordered(self) -> list:
        """The results so far, in item order."""
        return [self.results[i] for i in self.items if i in self.results]
