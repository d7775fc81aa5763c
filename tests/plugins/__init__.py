"""Plugin fixtures. ``fresh(module)`` (re)imports a plugin module so its variants are registered
anew (a test's teardown unregisters them; registering a taken name would raise)."""
import importlib
import sys


def fresh(module: str):
    if module in sys.modules:
        return importlib.reload(sys.modules[module])
    return importlib.import_module(module)
