"""The kernel layer: the building blocks every variant (built-in or plugin) is made of.

A variant imports ``xviz.core`` (registry, Output, errors) and these modules, never another
variant. Each module is one mechanism:

- ``dense``      the reference softmax(QKᵀ·scale + bias) (``dense_weights``), the one empty-row-safe
                 ``masked_softmax`` (probabilities and log-normaliser), ``merge`` of partial softmaxes,
                 ``causal_mask``, ``work_dtype`` (float32 for half inputs).
- ``sparse``     attention from per-query key lists ``keys_for(rows) -> (idx, valid)``: gather,
                 dedupe (unions are set unions), chunked softmax; the dense matrix and mask on request.
- ``blocks``     ``BlockPattern``: a sparse pattern written once (block tables in a layout, an element
                 predicate, shared columns, global rows); its key lists, lazy matrix/mask, the cross rule.
- ``patterns``   every fixed and combined pattern as a ``BlockPattern`` constructor (window, blocks,
                 dilation, strides, BigBird, random, axial), top-k key lists, ``dense_mask``.
- ``tiles``      the CPU (any device) executor of block patterns: 3-D matmuls over strided views or
                 gathered blocks, masks as matmul biases, parts merged by log-sum-exp.
- ``flex``       FlexAttention (CUDA) for block patterns, and fused biased / masked attention
                 (Toeplitz biases through SDPA's float mask or a score_mod; SDPA with its lse).
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
