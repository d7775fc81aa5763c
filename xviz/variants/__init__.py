"""Built-in variants: one module per mechanism, each registering itself as its last statement.

Every module in this package is imported, so a new file here joins the catalog by existing.
"""
import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_info.name}")
