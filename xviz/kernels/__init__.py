"""The kernel layer: the building blocks every variant (built-in or plugin) is made of.

A variant imports ``xviz.core`` (registry, Output, errors) and these modules, never another
variant. Each module is one mechanism:

- ``dense``      the reference softmax(QKᵀ·scale + bias) (``dense_weights``), the one empty-row-safe
                 ``masked_softmax`` (probabilities and log-normaliser), ``merge`` of partial softmaxes,
                 ``causal_mask``, ``work_dtype`` (float32 for half inputs).
- ``sparse``     attention from per-query key lists ``keys_for(rows) -> (idx, valid)``: gather,
                 dedupe (unions are set unions), chunked softmax; the dense matrix and mask on request.
- ``block_pattern`` ``BlockPattern``: a sparse pattern written once (block tables in a layout, an element
                 predicate, shared columns, global rows); its key lists and the cross rule. It imports no
                 executor: ``tiles`` and ``flex`` import it.
- ``patterns``   every fixed and combined pattern as a ``BlockPattern`` constructor (window, blocks,
                 dilation, strides, BigBird, random, axial), top-k key lists, ``dense_mask``.
- ``tiles``      the CPU (any device) executor of block patterns: tile plans, 3-D matmuls over strided
                 views or gathered blocks, masks as matmul biases, parts merged by log-sum-exp.
- ``flex``       FlexAttention (CUDA) for block patterns (built on the tiles' plans), and fused biased /
                 masked attention (Toeplitz biases through SDPA's float mask or a score_mod; SDPA with its lse).
- ``blocks``     the entry a pattern variant calls: ``pattern_output`` (the fast output, matrix and mask on
                 request) and ``execute`` (tiles, or FlexAttention on CUDA); re-exports the pattern.
- ``lazy``       ``lazy_views``: a fast kernel's output with its matrix and artifacts taken from a reference
                 call only when asked for (any family: patterns, routing, LSH, top-k, 2-D windows).
- ``feature``    kernelised attention φ(Q)(φ(K)ᵀV) with a chunked causal prefix sum, its implicit matrix.
- ``logfeature`` feature attention from log features (Performer's positive features, elu + 1), shifted so
                 no row underflows or overflows; ``scaled_feature_attention`` for plain features.
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
- ``draws``      random draws that do not depend on how many are drawn (row by row from one stream,
                 uniforms filled serially, normals by Box–Muller): a causal prefix draws the same values.
- ``costs``      cost models at a ``Shape``: quadratic, sparse (keys per row), linear (features).
"""
