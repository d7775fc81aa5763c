"""Linear recurrences drawn as attention: chunked decayed linear attention and the chunked delta rule.

Both keep a fast-weight state M_t (d_k × d_v, keys on the rows) and read it with the query:

    decayed linear attention   M_t = a_t M_{t−1} + k_t v_tᵀ                          o_t = M_tᵀ q_t
    (gated) delta rule         M_t = a_t (I − β_t k_t k_tᵀ) M_{t−1} + β_t k_t v_tᵀ      o_t = M_tᵀ q_t

with a per-step decay a_t = exp(log_decay_t) ∈ (0, 1] (per head, or per head and step) and, for
the delta rule, a write strength β_t. (DeltaNet writes its state as S = Mᵀ, o = S q.) The parallel
form of the first is o = (QKᵀ ⊙ D) V with the 1-semiseparable D_ij = ∏_{t=j+1..i} a_t (j ≤ i).

Compute is chunked (c tokens a chunk, fla style): inside a chunk everything is parallel with the
in-chunk cumulative log-decay b (Γ_r = exp(b_r)), between chunks a sequential pass carries M.
For the delta rule the chunk's pseudo-values e_r = β_r (v_r − a_r M_{r−1}ᵀ k_r) come from the UT
transform (Yang et al. 2024, arXiv:2406.06484, §3; with gates: Yang, Kautz & Hatamizadeh 2024,
arXiv:2412.06464, §3.3): with L̃_rt = (Γ_r/Γ_t) k_r·k_t for t < r,

    T = (I + diag(β) L̃)⁻¹ diag(β),   U = T V,   W = T diag(Γ) K,   E = U − W M_0,

after which the delta rule IS decayed linear attention with values E:
    O = diag(Γ) Q M_0 + (tril(QKᵀ) ⊙ Γ_r/Γ_t) E,    M_next = Γ_c M_0 + (K ⊙ Γ_c/Γ)ᵀ E.
Every exponent is a b_r − b_t ≤ 0 (masked to −∞ before the exp, so neither the values nor the
gradients see an overflow). Memory: the c × c blocks of every chunk (N·c) and one state per chunk
(N/c · d_k · d_v); never N × N. The plain references are in ``recurrent_naive`` (token loops and
dense forms); the tests hold these to them.

Implicit matrices (display): ``decay_matrix`` forms QKᵀ ⊙ D from a float64 cumulative sum;
``delta_rule_matrix`` runs the chunked delta rule on identity values (o is linear in v, so the
output for V = I is the matrix A with o = A v; its entries can be negative).

State analysis: ``Scan`` keeps each chunk's start state and pseudo-values, from which the final
state and ‖M_t‖_F at every step follow without storing N states (a Gram identity, O(N·c) memory).
Variants declare the artifacts ``STATE``, ``STATE_NORM`` and ``DECAY`` (``xviz.analysis.state``
reads them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import InputError
from ..core.registry import Artifact, Cost, Param, Shape
from ..core.result import Output, all_finite
from .dense import cast_checked, work_dtype

CHUNK = 64  # tokens a chunk: c × c blocks stay small; N / c sequential steps stay few
MATRIX_BLOCK = 512  # rows (decay) or columns (delta rule) of an implicit matrix built at a time

# The artifacts every recurrence declares (xviz.analysis.state reads them by name).
STATE = Artifact("state", "matrix", ("B", "H", "d_k", "d_v"),
                 "the fast-weight state M_N after the last token (keys on rows, values on columns)")
STATE_NORM = Artifact("state_norm", "curve", ("B", "H", "N"), "‖M_t‖_F, the state's Frobenius norm after token t")
DECAY = Artifact("decay", "curve", ("B", "H", "N"), "a_t, the factor the state is multiplied by at token t")
RECURRENT_ARTIFACTS = (STATE, STATE_NORM, DECAY)


def _writes(value, n, d):
    return None if value > 0 else "must be greater than 0 (β = 0 never writes)."


# The delta rule's write strength, shared by DeltaNet and Gated DeltaNet: fixed, where the papers
# learn a gate β_t = σ(W_β x_t); 0.5 = σ(0), that gate untrained (zero-initialised W_β).
BETA = Param("beta", "float", 0.5, "β, the delta rule's write strength (the papers' learned σ(·) gate, fixed "
             "here; 0.5 = σ(0))", low=0.0, high=1.0, rule=_writes)


def head_decays(heads: int, decay: float) -> torch.Tensor:
    """(H,) float64 decays: ``decay`` for every head, or for decay = 0 RetNet's per-head
    γ_h = 1 − 2^(−5−h) (Sun et al. 2023, §2.3: memory lengths 32 to 2^(4+H) tokens)."""
    if decay == 0:
        return 1 - 2.0 ** (-5 - torch.arange(heads, dtype=torch.float64))
    return torch.full((heads,), float(decay), dtype=torch.float64)


def per_step(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A scalar, a per-head (H,) or a per-step (B, H, N) quantity as (B, H, N) at ``like``'s device and dtype."""
    b, h, n = like.shape[:3]
    x = torch.as_tensor(x).to(like.device, like.dtype)
    return (x[None, :, None] if x.dim() == 1 else x).expand(b, h, n)


# ----------------------------------------------------------------------------------------- chunking
def _split(x: torch.Tensor, c: int) -> torch.Tensor:
    """(B, H, N, …) zero-padded to a multiple of c and viewed as (B, H, N/c, c, …). Padding is
    inert: zero keys and values write nothing, zero log-decay keeps the state."""
    n = x.shape[2]
    pad = (-n) % c
    if pad:
        x = F.pad(x, (0, 0) * (x.dim() - 3) + (0, pad))
    return x.reshape(*x.shape[:2], -1, c, *x.shape[3:])


def _in_chunk_decays(log_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """b: in-chunk cumulative log-decay (…, c); D_rt = exp(b_r − b_t) for t ≤ r, else 0 (…, c, c)."""
    b = log_c.cumsum(-1)
    c = b.shape[-1]
    lower = torch.ones(c, c, dtype=torch.bool, device=b.device).tril()
    diff = torch.where(lower, b[..., :, None] - b[..., None, :], torch.full_like(b[..., :1, None], float("-inf")))
    return b, diff.exp()


@dataclass
class Scan:
    """One chunked pass over the keys and values: what the output, the states and their norms need."""

    k: torch.Tensor  # (B, H, nc, c, d_k) keys
    e: torch.Tensor  # (B, H, nc, c, d_v) values written (the delta rule's pseudo-values)
    b: torch.Tensor  # (B, H, nc, c) in-chunk cumulative log-decay
    d: torch.Tensor  # (B, H, nc, c, c) in-chunk decay ratios, lower triangular
    starts: torch.Tensor  # (B, H, nc, d_k, d_v) state before each chunk
    final: torch.Tensor  # (B, H, d_k, d_v) state after the last token
    n: int  # true sequence length (before padding)


def _carry(starts: list, m: torch.Tensor, g: torch.Tensor, write: torch.Tensor) -> torch.Tensor:
    starts.append(m)
    return g[..., None, None] * m + write


def scan(k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, beta: torch.Tensor | None = None,
         chunk: int = CHUNK) -> Scan:
    """Chunked pass of decayed linear attention (beta None) or of the gated delta rule (beta: (B, H, N)).
    k: (B, H, N, d_k), v: (B, H, N, d_v), log_decay: (B, H, N) with log a_t ≤ 0."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}.")
    n = k.shape[2]
    c = min(int(chunk), n)
    kc, vc = _split(k, c), _split(v, c)
    b, d = _in_chunk_decays(_split(log_decay, c))
    tail = torch.exp(b[..., -1:] - b)  # Γ_c / Γ_t: what is left of token t's write at the chunk's end
    g = torch.exp(b[..., -1])  # Γ_c: what is left of the start state
    kt = (kc * tail[..., None]).mT  # (B, H, nc, d_k, c)
    m = k.new_zeros(*k.shape[:2], k.shape[-1], v.shape[-1])
    starts: list[torch.Tensor] = []
    if beta is None:
        writes = kt @ vc  # every chunk's own contribution at once; only the carry is sequential
        for i in range(kc.shape[2]):
            m = _carry(starts, m, g[:, :, i], writes[:, :, i])
        e = vc
    else:
        bc = _split(beta, c)[..., None]
        lower = (kc @ kc.mT) * d
        a = torch.eye(c, dtype=k.dtype, device=k.device) + bc * lower.tril(-1)
        x = torch.linalg.solve_triangular(a, bc * torch.cat([vc, b.exp()[..., None] * kc], -1),
                                          upper=False, unitriangular=True)
        u, w = x.split([v.shape[-1], k.shape[-1]], -1)
        es = []
        for i in range(kc.shape[2]):
            es.append(u[:, :, i] - w[:, :, i] @ m)
            m = _carry(starts, m, g[:, :, i], kt[:, :, i] @ es[-1])
        e = torch.stack(es, 2)
    return Scan(k=kc, e=e, b=b, d=d, starts=torch.stack(starts, 2), final=m, n=n)


def scan_output(q: torch.Tensor, s: Scan) -> torch.Tensor:
    """o_t = M_tᵀ q_t for every t: (B, H, N, d_v)."""
    qc = _split(q, s.k.shape[3])
    out = ((qc @ s.k.mT) * s.d) @ s.e + s.b.exp()[..., None] * (qc @ s.starts)
    return out.flatten(2, 3)[:, :, : s.n]


def scan_state_norms(s: Scan) -> torch.Tensor:
    """‖M_t‖_F after every token, (B, H, N), from M_t = Γ_t M_0 + Σ_{j≤t} D_tj k_j e_jᵀ:
    ‖M_t‖² = Γ_t²‖M_0‖² + 2Γ_t Σ_j D_tj k_jᵀM_0e_j + Σ_jl D_tj D_tl (k_j·k_l)(e_j·e_l),
    so no per-step state is formed (O(N·c) memory). Cancellation-prone in float32: call in float64."""
    gam = s.b.exp()
    start_sq = (s.starts * s.starts).sum((-1, -2))[..., None]
    cross = ((s.k @ s.starts) * s.e).sum(-1)  # k_jᵀ M_0 e_j
    gram = (s.k @ s.k.mT) * (s.e @ s.e.mT)
    own = ((s.d @ gram) * s.d).sum(-1)
    sq = gam**2 * start_sq + 2 * gam * (s.d @ cross[..., None])[..., 0] + own
    return sq.clamp_min(0).sqrt().flatten(2, 3)[:, :, : s.n]


# ----------------------------------------------------------------------------------------- public forms
def decay_attention(q, k, v, log_decay, chunk: int = CHUNK) -> torch.Tensor:
    """o_i = Σ_{j≤i} (∏_{t=j+1..i} a_t) (q_i·k_j) v_j, chunked: (B, H, N, d_v)."""
    return scan_output(q, scan(k, v, log_decay, None, chunk))


def delta_rule(q, k, v, beta, log_decay, chunk: int = CHUNK) -> torch.Tensor:
    """The gated delta rule's outputs o_t = M_tᵀ q_t, chunked (UT transform): (B, H, N, d_v)."""
    return scan_output(q, scan(k, v, log_decay, beta, chunk))


def decay_matrix(q, k, log_decay) -> torch.Tensor:
    """(QKᵀ ⊙ D), D_ij = exp(Σ_{t=j+1..i} log a_t) for j ≤ i: (B, H, N, N), at q's dtype. The
    cumulative sum is taken in float64 (differences of long sums lose digits in float32), a block of
    rows at a time so the float64 temporaries stay a fraction of the matrix."""
    cum = log_decay.double().cumsum(-1)
    n = q.shape[-2]
    a = q @ k.mT
    cols = torch.arange(n, device=q.device)
    for r0 in range(0, n, MATRIX_BLOCK):
        rows = slice(r0, r0 + MATRIX_BLOCK)
        diff = cum[..., rows, None] - cum[..., None, :]
        future = cols > cols[rows, None]
        a[..., rows, :] *= diff.masked_fill_(future, float("-inf")).exp_().to(a.dtype)
    return a


def delta_rule_matrix(q, k, beta, log_decay, chunk: int = CHUNK) -> torch.Tensor:
    """The delta rule's implicit weights A (o = A v, lower triangular, signed): its output for V = I,
    a block of identity columns j ∈ [j0, j1) at a time. Tokens before j0 carry zero values, so they
    leave the state zero and the scan for that block starts at j0; memory stays O(N · block)
    besides A."""
    b, h, n = q.shape[:3]
    a = q.new_zeros(b, h, n, n)
    for j0 in range(0, n, MATRIX_BLOCK):
        width = min(MATRIX_BLOCK, n - j0)
        eye = torch.eye(n - j0, width, dtype=q.dtype, device=q.device).expand(b, h, n - j0, width)
        tail = slice(j0, n)
        a[..., tail, j0:j0 + width] = delta_rule(q[..., tail, :], k[..., tail, :], eye, beta[..., tail],
                                                 log_decay[..., tail], chunk)
    return a


def recurrent_output(q, k, v, log_decay, beta=None, artifacts: dict | None = None) -> Output:
    """A recurrence variant's Output from its prepared q, k (at the work dtype) and v (any dtype):
    out at v's dtype, the lazy implicit matrix, and the STATE / STATE_NORM / DECAY artifacts."""
    log_decay, beta = per_step(log_decay, q), None if beta is None else per_step(beta, q)
    out = scan_output(q, scan(k, v.to(q.dtype), log_decay, beta))
    _check_overflow(out, q, k, v)

    def matrix():
        a = decay_matrix(q, k, log_decay) if beta is None else delta_rule_matrix(q, k, beta, log_decay)
        # the weights are unbounded: at half precision they (and the output) can leave the range
        return cast_checked(a, v.dtype, "the weights")

    return Output(out=cast_checked(out, v.dtype, "the output"), matrix=matrix,
                  artifacts={**state_artifacts(k, v, log_decay, beta), **(artifacts or {})})


def _check_overflow(out, q, k, v) -> None:
    """InputError when ``out`` is not finite because its true values are beyond the dtype: the weights
    q_i·k_j are unbounded, so |out| may reach N·max‖q‖·max‖k‖·max|v| (a bug would stay a VariantError)."""
    if all_finite(out):
        return
    bound = q.shape[-2] * float(q.norm(dim=-1).amax()) * float(k.norm(dim=-1).amax()) * float(v.abs().amax())
    if bound >= torch.finfo(out.dtype).max:
        raise InputError(f"the output overflows {str(out.dtype).removeprefix('torch.')} (beyond "
                         f"{torch.finfo(out.dtype).max:.3g}): these weights are unbounded, so |out| can reach "
                         f"N·max‖q‖·max‖k‖·max|v|; rescale q, k or v.")


def state_artifacts(k, v, log_decay, beta=None) -> dict:
    """The STATE / STATE_NORM / DECAY artifacts of the recurrence that writes k, v with ``log_decay``
    (B, H, N) and, for the delta rule, ``beta``: computed on request, in float64 (the norm identity cancels)."""
    def wide_scan():
        dd = torch.float64
        return scan(k.to(dd), v.to(dd), log_decay.to(dd), None if beta is None else beta.to(dd))

    return {"state": lambda: wide_scan().final.to(v.dtype),
            "state_norm": lambda: scan_state_norms(wide_scan()).to(v.dtype),
            "decay": lambda: log_decay.exp().to(v.dtype)}


def work(x: torch.Tensor) -> torch.Tensor:
    """x at the dtype the recurrences compute in (float32 for half inputs)."""
    return x.to(work_dtype(x.dtype))


def recurrent_cost(s: Shape, delta: bool, extra_flops_per_token: float = 0.0) -> Cost:
    """Chunked recurrence at ``s``: in-chunk c × c blocks (QKᵀ, the decay ratios and, for the delta
    rule, KKᵀ and its triangular solve), one state product per token, the carries between chunks.
    Bytes: inputs, output, the c × c blocks of every chunk and one state per chunk, 4 bytes each."""
    n, d, dv = s.n, s.d, s.dv
    c = min(CHUNK, n)
    per_token = 2 * c * (d + dv) + 4 * d * dv + 3 * c + extra_flops_per_token
    blocks = 3 * c
    if delta:
        per_token += 2 * c * d + c * (d + dv) + 2 * (d + dv) * d + 4 * d * dv
        blocks += 3 * c + d + dv
    states = math.ceil(n / c) * d * dv
    flops = s.b * s.h * n * per_token
    nbytes = 4 * s.b * s.h * (n * (2 * d + 2 * dv + 1 + blocks) + states)
    return Cost(float(flops), float(nbytes))
