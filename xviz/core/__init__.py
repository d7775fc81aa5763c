"""The engine core: the catalog (``registry``), ``run`` (``engine``), results and budgets (``result``)
and the exceptions (``errors``). Variants and kernels build on this; nothing here knows a variant."""
