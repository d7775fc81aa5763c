"""Prior-biased attention: softmax(QKᵀ·scale + B) with a fixed positional bias B.

- "alibi" (Press et al. 2022): B_ij = −m_h·|i − j| with per-head slopes m_h = 2^(−8(h+1)/H)
  (head h = 0…H−1), the geometric sequence of the ALiBi paper. ALiBi is defined for causal
  attention, where |i − j| = i − j; without the causal mask we use the symmetric distance.
- "gaussian": B_ij = −(i − j)²/(2σ²), a Gaussian prior centred on the query's own position
  (as in the Gaussian-prior attention of Guo et al. 2019), the same for every head.
``strength`` multiplies either bias; strength = 0 is exact attention. Nothing is learned: ALiBi's
slopes are fixed in the paper too, and σ is a parameter here.
Causal: the usual mask on top of the bias. Positional, so not content-based.
Compute: both biases depend on i − j only, so ``flex.toeplitz_attention`` runs one fused kernel:
SDPA with the bias as a zero-copy float ``attn_mask`` (a strided view of one vector per head, the
keys reversed), FlexAttention with a score_mod on CUDA. Quadratic time, O(N) memory; the N×N bias
exists only in the lazy "bias" artifact, and the weights only in the lazy matrix (query chunks).
Press et al. 2022, Train Short, Test Long: Attention with Linear Biases Enables Input Length
Extrapolation (ICLR; arXiv:2108.12409); Guo et al. 2019, Gaussian Transformer (AAAI).
"""
import torch

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import Output, check_budget
from ..kernels.costs import quadratic_cost
from ..kernels.flex import toeplitz_attention

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


def bias_vector(bias: str, n: int, heads: int, strength: float, sigma: float, dtype, device=None) -> torch.Tensor:
    """u[h, s] = B at i − j = s − (N − 1), s ∈ [0, 2N − 2]: (H, 2N − 1) for alibi, (1, 2N − 1) for gaussian
    (both biases are even in i − j, so row N − 1 of ``bias_rows`` over 2N − 1 columns is u reversed = u)."""
    return bias_rows(bias, torch.tensor([n - 1], device=device), 2 * n - 1, heads, strength, sigma, dtype)[:, 0]


def prior(q, k, v, ctx, bias: str, strength: float, sigma: float):
    b, h, n, _ = q.shape
    cdt = torch.promote_types(q.dtype, torch.float32)
    q_, k_ = q.to(cdt), k.to(cdt)
    out = toeplitz_attention(q, k, v, ctx.scale, ctx.causal, bias_vector(bias, n, h, strength, sigma, cdt, q.device))

    def matrix():
        dense = q_.new_empty(b, h, n, n)
        for start, stop, p in _weight_chunks(q_, k_, ctx, bias, strength, sigma):
            dense[:, :, start:stop] = p
        return dense.to(v.dtype)

    def bias_matrix():
        check_budget((1, h, n, n), q.element_size(), "the prior bias")
        full = bias_rows(bias, torch.arange(n, device=q.device), n, h, strength, sigma, cdt)
        return full.expand(h, n, n)[None].to(q.dtype)

    return Output(out=out, matrix=matrix, artifacts={"bias": bias_matrix})  # (1, H, N, N) B


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
