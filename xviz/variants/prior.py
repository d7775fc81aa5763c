"""Prior-biased attention: softmax(QKᵀ·scale + B) with a fixed positional bias B.

- "alibi" (Press et al. 2022): B_ij = −m_h·|i − j| with per-head slopes m_h = 2^(−8(h+1)/H)
  (head h = 0…H−1), the geometric sequence of the ALiBi paper. ALiBi is defined for causal
  attention, where |i − j| = i − j; without the causal mask we use the symmetric distance.
- "gaussian": B_ij = −(i − j)²/(2σ²), a Gaussian prior centred on the query's own position
  (as in the Gaussian-prior attention of Guo et al. 2019), the same for every head.
``strength`` multiplies either bias; strength = 0 is exact attention. Nothing is learned: ALiBi's
slopes are fixed in the paper too, and σ is a parameter here.
Causal: the usual mask on top of the bias. Positional, so not content-based.
Computed in query chunks: quadratic time, O(c·N) memory; the N×N bias exists only in the lazy
"bias" artifact.
Press et al. 2022, Train Short, Test Long: Attention with Linear Biases Enables Input Length
Extrapolation (ICLR; arXiv:2108.12409); Guo et al. 2019, Gaussian Transformer (AAAI).
"""
import torch

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import Output, check_budget
from ..kernels.costs import quadratic_cost

CHUNK_ELEMENTS = 1 << 24


def bias_rows(bias: str, rows: torch.Tensor, n: int, heads: int, strength: float, sigma: float, dtype) -> torch.Tensor:
    """B for the query positions ``rows``: (H, c, N) for alibi, (1, c, N) for gaussian."""
    dist = (rows[:, None] - torch.arange(n, device=rows.device)[None, :]).to(dtype)
    if bias == "alibi":
        slopes = 2.0 ** (-8.0 * torch.arange(1, heads + 1, device=rows.device, dtype=dtype) / heads)
        return -(strength * slopes)[:, None, None] * dist.abs()
    return (-strength / (2 * sigma**2)) * dist.square()[None]


def _weight_chunks(q, k, ctx, bias, strength, sigma):
    b, h, n, _ = q.shape
    step = max(1, min(n, CHUNK_ELEMENTS // (b * h * n)))
    for start in range(0, n, step):
        stop = min(n, start + step)
        rows = torch.arange(start, stop, device=q.device)
        logits = q[:, :, start:stop] @ k.transpose(-1, -2) * ctx.scale
        logits = logits + bias_rows(bias, rows, n, h, strength, sigma, q.dtype)
        if ctx.causal:
            logits = logits.masked_fill(torch.arange(n, device=q.device) > rows[:, None], float("-inf"))
        yield start, stop, torch.softmax(logits, dim=-1)


def prior(q, k, v, ctx, bias: str, strength: float, sigma: float):
    b, h, n, _ = q.shape
    cdt = torch.promote_types(q.dtype, torch.float32)
    q_, k_, v_ = q.to(cdt), k.to(cdt), v.to(cdt)
    out = v_.new_empty(b, h, n, v.shape[-1])
    for start, stop, p in _weight_chunks(q_, k_, ctx, bias, strength, sigma):
        out[:, :, start:stop] = p @ v_

    def matrix():
        dense = q_.new_empty(b, h, n, n)
        for start, stop, p in _weight_chunks(q_, k_, ctx, bias, strength, sigma):
            dense[:, :, start:stop] = p
        return dense.to(v.dtype)

    def bias_matrix():
        check_budget((1, h, n, n), q.element_size(), "the prior bias")
        full = bias_rows(bias, torch.arange(n, device=q.device), n, h, strength, sigma, cdt)
        return full.expand(h, n, n)[None].to(q.dtype)

    return Output(out=out.to(v.dtype), matrix=matrix, artifacts={"bias": bias_matrix})  # (1, H, N, N) B


def prior_cost(s, bias, strength, sigma):
    base = quadratic_cost(s)
    return Cost(base.flops + 3 * s.b * s.h * s.n * s.n, base.bytes + 4 * min(CHUNK_ELEMENTS, s.b * s.h * s.n * s.n))


register_variant(VariantSpec(
    name="prior",
    display_name="Prior bias (ALiBi / Gaussian)",
    family="prior",
    paper="Press et al. 2022, ALiBi (ICLR 2022; arXiv:2108.12409); "
          "Guo et al. 2019, Gaussian Transformer (AAAI 2019)",
    complexity="O(N²·d)",
    complexity_class="quadratic",
    fn=prior,
    cost=prior_cost,
    params=(
        Param("bias", "choice", "alibi", "alibi: −m_h·|i − j| with per-head slopes; "
              "gaussian: −(i − j)²/(2σ²)", choices=("alibi", "gaussian")),
        Param("strength", "float", 1.0, "multiplier on the bias (0 = exact attention)", low=0.0, high=100.0),
        Param("sigma", "float", 16.0, "width σ of the Gaussian prior, in tokens", low=0.1, high="N", log=True),
    ),
    causal=True,
    row_stochastic=True,
    artifacts=(Artifact("bias", "matrix", ("1", "H", "N", "N"), "the positional bias B added to the logits"),),
    exact_when=lambda n, d, h: {"strength": 0.0},
    content_based=False,
    description="softmax(QKᵀ/√d + B) with an ALiBi or Gaussian positional bias B.",
))
