"""xviz: efficient-attention approximations ("X-formers") beside exact softmax attention.

    import torch, xviz
    q, k, v = torch.randn(3, 1, 4, 512, 64).unbind(0)
    r = xviz.run("bigbird", q, k, v, block=32)
    r.out, r.matrix(), dict(r.artifacts), r.cost
"""
from .engine import Context, run
from .errors import BudgetError, InputError, ParameterError, UnknownVariantError, XvizError
from .registry import (
    FAMILIES,
    Cost,
    Param,
    VariantSpec,
    get_variant,
    list_variants,
    load_plugins,
    register_variant,
    unregister_variant,
)
from .result import AttentionResult, Output, matrix_budget, set_matrix_budget

__all__ = [
    "run", "list_variants", "get_variant", "register_variant", "unregister_variant", "load_plugins",
    "AttentionResult", "Output", "Context", "VariantSpec", "Param", "Cost", "FAMILIES",
    "XvizError", "InputError", "ParameterError", "UnknownVariantError", "BudgetError",
    "set_matrix_budget", "matrix_budget",
]
