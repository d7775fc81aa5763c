"""Analysis: the numbers behind the pages, as data (no plotly): ``metrics`` (errors against exact),
``spectra`` (singular values, Eckart–Young), ``lsh`` (collisions, missed keys, recall), ``sweeps``
(seeded error curves that stream and stop), ``budget`` (parameters matched to a FLOP budget),
``bench`` (time and memory), ``check`` (the sanity-check battery). The app's own helpers (settings,
caches, jobs, the allowance, the LSH page's views) are in ``xviz.app``."""
