"""Import paths that moved in the layered reorganisation (0.2), kept for one release.

``import xviz.result`` (say, in a plugin written for 0.1) gets the module where the name lives now,
with a DeprecationWarning naming the new path. Remove a line when its release has passed.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "xviz.result": "xviz.core.result",
    "xviz.errors": "xviz.core.errors",
    "xviz.registry": "xviz.core.registry",
    "xviz.engine": "xviz.core.engine",
    "xviz.sparse": "xviz.kernels.sparse",
    "xviz.patterns": "xviz.kernels.patterns",
    "xviz.clustering": "xviz.kernels.clustering",
    "xviz.kernel": "xviz.kernels.feature",
    "xviz.metrics": "xviz.analysis.metrics",
    "xviz.spectra": "xviz.analysis.spectra",
    "xviz.sweeps": "xviz.analysis.sweeps",
    "xviz.check": "xviz.analysis.check",
    "xviz.bench": "xviz.analysis.bench",
    "xviz.lsh_analysis": "xviz.analysis.lsh",
    "xviz.sequence": "xviz.inputs.sequence",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old names only; their module is the new one itself (one module object, two names)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {MOVED[spec.name]}; the old import path goes in the next release.",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass  # already executed under its new name


def install() -> None:
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.append(MovedModules())
