"""MLA, multi-head latent attention (DeepSeek-AI 2024, DeepSeek-V2 §2.1): keys and values of every
head are up-projections of one shared rank-r latent per token, which is all the KV cache holds.

    c_t = W_DKV h_t (r numbers per token),  k_t^h = W_UK^h c_t,  v_t^h = W_UV^h c_t.

With only q, k, v given, the best such latent for *this input* is its principal subspace: stack
each token's keys and values across heads, x_t = [k_t^1 … k_t^H | v_t^1 … v_t^H] (length
H·(d + d_v)), and keep the top-r right singular vectors U_r of X (N × H(d + d_v), per batch
element; uncentred, as MLA's projections have no bias): c_t = U_rᵀ x_t, [K̂ | V̂] = X U_r U_rᵀ,
the best rank-r reconstruction (Eckart–Young). Attention is then exact softmax on (Q, K̂, V̂). The
subspace is fitted to this input, not learned: it is the least lossy latent of width r, the
paper's learned one can only do worse on this input. DeepSeek-V2's decoupled RoPE key (d_h^R extra
dimensions per token, shared by the heads) is not modelled: there are no positions here.
r ≥ rank(X) (at most H·(d + d_v)) reconstructs K and V exactly: exact attention.
The latent spans all heads, so a head's output depends on the other heads' keys and values
(``mixes_heads``); there is no matrix A with A·v = out (A acts on V̂, not V): the ``weights``
artifact is each head's softmax over K̂. Not causal: the subspace is fitted to every token, so a
causal run would let later tokens shape earlier ones' keys (a learned projection would not).
Artifacts: ``latent_dim`` (r as used), ``kv_bytes_per_token`` — the KV cache per token and layer
at this dtype for MHA (H·(d + d_v)), GQA (G·(d + d_v), G = max(1, H/4) groups), MQA (d + d_v) and
MLA (r), as
the paper's Table 1 compares them — ``energy`` (the cumulative share of ‖X‖² the top-i
directions keep) and ``latent`` (c, (B, N, r)).
Compute: the Gram matrix XᵀX (H(d + d_v) square, float64) and its eigendecomposition, then exact
attention: O(N·(H(d + d_v))² + H·N²·d).
DeepSeek-AI 2024, DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model
(arXiv:2405.04434), §2.1.
"""
import torch
import torch.nn.functional as F

from ..core.registry import Artifact, Cost, Param, VariantSpec, register_variant
from ..core.result import Output, check_budget
from ..kernels.costs import quadratic_cost
from ..kernels.dense import dense_weights, work_dtype

MAX_RANK = 65_536


def stacked(k, v) -> torch.Tensor:
    """(B, N, H·(d + d_v)): each token's keys and values across heads."""
    b, h, n, _ = k.shape
    return torch.cat([k.transpose(1, 2).reshape(b, n, -1), v.transpose(1, 2).reshape(b, n, -1)], -1)


def principal_subspace(x: torch.Tensor, rank: int):
    """Top-``rank`` right singular vectors of x (B, N, D): U (B, D, r), and the eigenvalues (B, D) of x's
    Gram matrix over max|x|², in decreasing order (only their ratios are used). A thin float64 SVD:
    O(N·D·min(N, D)), so a head size of 1e5 costs no D × D matrix. Beyond min(N, D) directions x has no
    energy: those columns of U are 0 (x's reconstruction is exact there already)."""
    x = x.double()
    top = x.abs().amax((-2, -1), keepdim=True).clamp(min=1e-300)
    xs = x / top  # the subspace does not depend on x's scale, and values near 1e300 would square to inf
    _, sv, vh = torch.linalg.svd(xs, full_matrices=False)  # sv decreasing, vh (B, m, D)
    big_d, m = x.shape[-1], sv.shape[-1]
    u = F.pad(vh.transpose(-1, -2)[..., :rank], (0, max(0, rank - m)))
    return u, F.pad(sv * sv, (0, big_d - m))


def mla(q, k, v, ctx, rank: int):
    b, h, n, d = q.shape
    nk, dv = k.shape[-2], v.shape[-1]
    x = stacked(k, v)
    r = min(rank, x.shape[-1])
    u, evals = principal_subspace(x, r)
    latent = x.double() @ u  # (B, N, r)
    x_hat = (latent @ u.transpose(-1, -2)).to(k.dtype)
    k_hat = x_hat[..., :h * d].reshape(b, nk, h, d).transpose(1, 2)
    v_hat = x_hat[..., h * d:].reshape(b, nk, h, dv).transpose(1, 2)
    cdt = work_dtype(q.dtype)
    out = F.scaled_dot_product_attention(q.to(cdt), k_hat.to(cdt), v_hat.to(cdt), scale=ctx.scale).to(v.dtype)
    groups = max(1, h // 4)
    per_token = torch.tensor([h * (d + dv), groups * (d + dv), d + dv, r], dtype=torch.float64) * k.element_size()
    energy = evals.cumsum(-1) / evals.sum(-1, keepdim=True).clamp(min=1e-300)

    def weights():
        check_budget((b, h, n, nk), q.element_size(), "the MLA weights")
        return dense_weights(q, k_hat, ctx.scale, False)

    return Output(out=out, matrix=None, artifacts={
        "latent_dim": r,  # an int: the page prints it
        "kv_bytes_per_token": per_token,  # (4,) MHA, GQA, MQA, MLA
        "energy": energy.to(q.dtype),  # (B, D)
        "latent": lambda: latent.to(q.dtype),  # (B, N_k, r)
        "weights": weights,  # (B, H, N, N) softmax(Q K̂ᵀ)
    })


def cost(s, rank):
    big_d = s.h * (s.d + s.dv)
    r, m = min(rank, big_d), min(s.nk, big_d)
    base = quadratic_cost(s)
    fit = s.b * (4 * s.nk * big_d * m + 8 * m ** 3 + 4 * s.nk * big_d * r)  # thin SVD, then project
    nbytes = base.bytes + 8 * s.b * (3 * s.nk * big_d + m * m + big_d * r + s.nk * r)
    return Cost(base.flops + fit, float(nbytes))


register_variant(VariantSpec(
    name="mla",
    display_name="MLA (latent KV, DeepSeek-V2)",
    family="low rank",
    paper="DeepSeek-AI 2024, DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model "
          "(arXiv:2405.04434), §2.1 multi-head latent attention",
    complexity="O(N·(H(d + d_v))² + H·N²·d)",
    complexity_class="quadratic",
    fn=mla,
    cost=cost,
    params=(Param("rank", "int", 64, "latent width r per token, shared by every head's K and V (≥ H·(d + d_v): "
                  "full rank, exact)", low=1, high=MAX_RANK, log=True),),
    causal=False,
    cross=True,
    mixes_heads=True,
    row_stochastic=True,
    has_matrix=False,
    artifacts=(Artifact("latent_dim", "tensor", (), "the latent width r used (an int; at most H·(d + d_v))"),
               Artifact("kv_bytes_per_token", "curve", ("4",), "KV-cache bytes per token and layer: MHA, GQA "
                        "(H/4 groups), MQA, MLA"),
               Artifact("energy", "curve", ("B", "D"), "cumulative share of ‖[K | V]‖² kept by the top directions"),
               Artifact("latent", "matrix", ("B", "N", "r"), "the latent c of each token"),
               Artifact("weights", "matrix", ("B", "H", "N", "N"), "each head's softmax over the reconstructed keys")),
    exact_when=lambda n, d, h: {"rank": MAX_RANK},
    content_based=True,
    description="Keys and values through one rank-r latent per token (the input's principal subspace).",
))
