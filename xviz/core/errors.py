"""The package's exceptions: every bad input ends in one of these, with a sentence a user can act on."""


class XvizError(Exception):
    """Base class: a clear, user-facing problem (never a bug in xviz)."""


class UnknownVariantError(XvizError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ParameterError(XvizError, ValueError):
    """A parameter outside its valid range, or a combination the variant cannot do."""


class InputError(XvizError, ValueError):
    """Tensors of the wrong shape, dtype or content (NaN, Inf)."""


class BudgetError(XvizError, MemoryError):
    """A request that would allocate more than the configured budget (say, an N×N matrix at N = 65,536)."""


class VariantError(XvizError):
    """A variant returned something wrong (wrong shape, dtype, NaN for finite inputs, not an ``Output``):
    the message names the variant and the module it came from, so a broken plugin is named, not obeyed."""
