"""ETC global–local attention (Ainslie et al. 2020): a few global tokens beside the long input.

ETC's input is a long sequence of N tokens plus a separate global sequence of g tokens, and
attention is split into four pieces: g2g (global attends global), g2l (global attends long),
l2g (long attends global) — all three unrestricted — and l2l (long attends long) within a radius
r: |i − j| ≤ r. With only q, k, v of the long tokens given, we make the global tokens as ETC
makes its per-sentence global tokens, one per segment: the sequence is cut into g contiguous,
near-equal segments and global token t has the means of its segment's q, k and v (ETC learns
the global tokens' embeddings; the mean is the parameter-free summary of "its sentence").

out (the long tokens' outputs) = softmax over [the l2l band keys ; the g global keys]:
    out_i = Σ_{|i−j|≤r} e^{q_i·k_j s} v_j + Σ_t e^{q_i·k̄_t s} v̄_t, over the same sum of weights.
The global tokens' own outputs (g2g + g2l: each attends every global and long key) are the
``global_out`` artifact; in a deeper model they feed the next layer.
Effective N×N weights: a global token's weight is spread over its segment (v̄_t is the
segment's mean value), so they are non-negative with rows summing to one.

Identities (tested): r ≥ N makes the long query attend every long key plus the g global ones,
so ETC equals exact attention over the N + g keys [K; K̄] with values [V; V̄] (cross-attention
of Q to the augmented set); with g = 0 that is exact attention. With g = N every global token is
one token (K̄ = K, V̄ = V): each key appears twice, its weight doubles in numerator and
denominator, and r ≥ N is again exactly exact attention. g = 0 is the sliding window of reach r.
Not causal: ETC is an encoder, and a global token averages its whole segment, later tokens
included.
Compute: the band as band tiles (``kernels.patterns.window`` through ``kernels.tiles.part_tiles``,
no gather) merged by log-sum-exp with the l2g part (``global_tokens.shared_keys_part``):
O(N·(2r + 1 + g)·d); no N×N tensor.
Ainslie et al. 2020, ETC: Encoding Long and Structured Inputs in Transformers (EMNLP;
arXiv:2004.08483), §3 (global-local attention).
"""
import torch

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import Output, check_budget
from ..kernels import patterns
from ..kernels.tiles import part_tiles
from ..kernels.dense import masked_softmax, merge, work_dtype
from ..kernels.global_tokens import segment_tokens, shared_keys_part, spread


def band_part(q, k, v, scale: float, radius: int):
    """Each query attends the keys with |i − j| ≤ radius: (out, lse)."""
    band = patterns.window(q.shape[-2], back=radius, forward=radius)
    return part_tiles(q * scale, k, v, band.parts[0], band)


def etc(q, k, v, ctx, radius: int, num_global: int):
    b, h, n, d = q.shape
    cdt = work_dtype(q.dtype)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    g = num_global
    parts = [band_part(qc, kc, vc, ctx.scale, radius)]
    if g:
        (qg, seg), (kg, _), (vg, _) = (segment_tokens(x, g) for x in (qc, kc, vc))
        parts.append(shared_keys_part(qc, kg, vg, ctx.scale))
    else:
        seg = torch.zeros(n, dtype=torch.long, device=q.device)
    out = merge(parts)
    dt = v.dtype

    def matrix():
        check_budget((b, h, n, n), q.element_size(), "the ETC attention matrix")
        i = torch.arange(n, device=q.device)
        band = torch.matmul(qc, kc.transpose(-1, -2)) * ctx.scale
        band = band.masked_fill((i[:, None] - i[None, :]).abs() > radius, float("-inf"))
        if not g:
            return masked_softmax(band, None)[0].to(dt)
        probs, _ = masked_softmax(torch.cat([band, torch.matmul(qc, kg.transpose(-1, -2)) * ctx.scale], -1), None)
        return (probs[..., :n] + spread(probs[..., n:], seg, g)).to(dt)

    def global_out():  # g2g + g2l: each global token attends every global and long key
        keys, values = torch.cat([kg, kc], -2), torch.cat([vg, vc], -2)
        return torch.matmul(torch.softmax(torch.matmul(qg, keys.transpose(-1, -2)) * ctx.scale, -1), values).to(dt)

    artifacts = {"global_segment": seg, "pieces": lambda: pieces(n, g, radius, q.device)}
    if g:
        artifacts["global_out"] = global_out
        artifacts["global_tokens"] = kg.to(dt)  # (B, H, g, d) the global keys
    return Output(out=out.to(dt), matrix=matrix, artifacts=artifacts)


def pieces(n: int, g: int, radius: int, device) -> torch.Tensor:
    """(g + N, g + N) int8 over [global tokens ; long tokens]: 1 g2g, 2 g2l, 3 l2g, 4 l2l (|i − j| ≤ r),
    0 where nothing is attended."""
    check_budget((n + g, n + g), 1, "the ETC pieces map")
    out = torch.zeros(g + n, g + n, dtype=torch.int8, device=device)
    out[:g, :g], out[:g, g:], out[g:, :g] = 1, 2, 3
    i = torch.arange(n, device=device)
    out[g:, g:] = torch.where((i[:, None] - i[None, :]).abs() <= radius, 4, 0).to(torch.int8)
    return out


def cost(s, radius, num_global):
    r, g = min(radius, s.n), min(num_global, s.n)
    band = min(2 * r + 1, s.nk)
    flops = s.b * s.h * (2 * s.n * (band + g) * (s.d + s.dv) + 3 * s.n * (s.d + s.dv))
    nbytes = 4 * s.b * s.h * (s.n * (2 * s.d + 2 * s.dv) + s.n * (band + g) + g * (2 * s.d + s.dv))
    return Cost(float(flops), float(nbytes))


register_variant(VariantSpec(
    name="etc",
    display_name="ETC (global–local)",
    family="memory/downsampling",
    paper="Ainslie et al. 2020, ETC: Encoding Long and Structured Inputs in Transformers (EMNLP 2020; "
          "arXiv:2004.08483)",
    complexity="O(N·(2r + 1 + g)·d)",
    complexity_class="sparse",
    fn=etc,
    cost=cost,
    params=(
        Param("radius", "int", 32, "l2l radius r: long tokens attend long tokens with |i − j| ≤ r", low=0, high="N"),
        Param("num_global", "int", 16, "global tokens g: the means of g contiguous segments (0 = none)", low=0,
              high="N", log=True),
    ),
    causal=False,
    row_stochastic=True,
    artifacts=(Artifact("global_segment", "ids", ("N",), "the segment (global token) each long token belongs to"),
               Artifact("pieces", "matrix", ("g+N", "g+N"), "over [global; long] tokens: 1 g2g, 2 g2l, 3 l2g, "
                        "4 l2l (|i − j| ≤ r), 0 not attended"),
               Artifact("global_out", "tensor", ("B", "H", "g", "dv"), "the global tokens' outputs (g2g + g2l)"),
               Artifact("global_tokens", "points", ("B", "H", "g", "d"), "the global tokens' keys (segment means)")),
    exact_when=lambda n, d, h: {"radius": n, "num_global": 0},
    content_based=False,
    description="Long tokens attend a radius-r band and g segment-mean global tokens (ETC's four pieces).",
))
