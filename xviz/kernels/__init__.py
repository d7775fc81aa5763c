"""The kernel layer: the building blocks every variant (built-in or plugin) is made of.

A variant imports ``xviz.core`` (registry, Output, errors) and these modules, never another
variant. Each module is one mechanism:

- ``dense``      the reference softmax(QKᵀ·scale + bias) (``dense_weights``), the one empty-row-safe
                 ``masked_softmax`` (probabilities and log-normaliser), ``merge`` of partial softmaxes,
                 ``causal_mask``, ``work_dtype`` (float32 for half inputs).
- ``sparse``     attention from per-query key lists ``keys_for(rows) -> (idx, valid)``: gather,
                 dedupe (unions are set unions), chunked softmax; the dense matrix and mask on request.
- ``patterns``   the fixed and combined sparse patterns as pure key-list functions (window, blocks,
                 strides, BigBird, random, axial, top-k) and ``dense_mask``.
- ``band``       a band of keys [i − back, i + forward] without a gather (contiguous spans).
- ``blocks``     gather-free block kernels (key blocks, residue classes, columns, dense rows) that
                 return partial softmaxes to ``merge``, and ``lazy_views`` (fast out, pattern views).
- ``feature``    kernelised attention φ(Q)(φ(K)ᵀV) with a chunked causal prefix sum, its implicit matrix.
- ``hashing``    ``unit`` rows and angular LSH ``lsh_buckets``.
- ``clustering`` k-means, grouping tables, attention of query groups against key tables.
- ``segments``   contiguous segments and their means (landmarks, pooling).
- ``recurrent``  linear recurrences drawn as attention: chunked decayed linear attention (per-head or
                 per-step decays) and the chunked (gated) delta rule (UT transform) through one ``scan``,
                 their implicit matrices, state norms, and the STATE / STATE_NORM / DECAY artifacts.
- ``recurrent_naive`` their plain references: token-by-token loops and dense forms.
- ``segments_memory`` segment-level recurrence with a cache (Transformer-XL) and its compressed
                 memory (Compressive Transformer): strided per-segment views, slots per segment.
- ``global_tokens`` segment-mean global tokens attended by every query (ETC), their spread weights.
- ``grid``       2-D local attention on a raster grid (Image Transformer) from 2-D unfold windows.
- ``routed``     query-routed key blocks (MoBA, NSA): top-k choice, block-dispatched attention,
                 NSA's overlapping compressed blocks.
- ``costs``      cost models at a ``Shape``: quadratic, sparse (keys per row), linear (features).
"""
