"""xviz: efficient-attention approximations ("X-formers") beside exact softmax attention.

    import torch, xviz
    q, k, v = torch.randn(3, 1, 4, 512, 64).unbind(0)
    r = xviz.run("bigbird", q, k, v, block=32)
    r.out, r.matrix(), dict(r.artifacts), r.cost

Layers: ``xviz.core`` (catalog, engine, results), ``xviz.kernels`` (the building blocks variants are
made of), ``xviz.variants`` (one module per mechanism), ``xviz.inputs`` (where Q/K/V come from),
``xviz.analysis`` (metrics, spectra, LSH, sweeps, budgets, bench, check: data, no plotly) and
``xviz.figures`` (plotly figures as pure functions).
"""
from .core.engine import Context, generator, run, set_work_budget, work_budget
from .core.errors import BudgetError, InputError, ParameterError, UnknownVariantError, VariantError, XvizError
from .core.registry import (
    ARTIFACT_KINDS,
    FAMILIES,
    Artifact,
    Cost,
    Param,
    Shape,
    VariantSpec,
    get_variant,
    list_variants,
    load_plugins,
    plugin_errors,
    register_variant,
    unregister_variant,
)
from .core.result import AttentionResult, Output, matrix_budget, set_matrix_budget
from .moved import install as _install_moved_paths

_install_moved_paths()  # `import xviz.result` and the other 0.1 paths, with a DeprecationWarning

__all__ = [
    "run", "list_variants", "get_variant", "register_variant", "unregister_variant", "load_plugins",
    "plugin_errors", "AttentionResult", "Output", "Context", "VariantSpec", "Param", "Artifact", "Shape",
    "Cost", "FAMILIES", "ARTIFACT_KINDS", "XvizError", "InputError", "ParameterError", "UnknownVariantError",
    "BudgetError", "VariantError", "set_matrix_budget", "matrix_budget", "set_work_budget", "work_budget",
    "generator",
]
