"""Analysis: the numbers behind the pages, as data (no plotly): ``metrics`` (errors against exact),
``spectra`` (singular values, Eckart–Young), ``lsh`` (collisions, missed keys, recall), ``sweeps``
(seeded error curves that stream and stop), ``keys_per_query`` (parameters matched to a keys-per-query
budget), ``exact_chunks`` (exact attention in query chunks, interruptible), ``bench`` (time and memory),
``check`` (the sanity-check battery). The app's own helpers (settings, caches, jobs, the allowance, the
LSH page's views) are in ``xviz.app``."""
