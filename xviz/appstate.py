"""The old name of ``xviz.app.settings`` (kept so that code written against it still imports)."""
from .app.settings import *  # noqa: F401,F403
from .app.settings import DEFAULT_TEXT, Field, parse_value, shown  # noqa: F401
