"""Sanity checks for one attention variant — a built-in or your own plugin.

``check_variant(name)`` runs a battery and returns one ``CheckResult`` per check: PASS / FAIL / SKIP
(or INFO for measurements that have no pass mark), with the measured number and the tolerance.
``python -m xviz check MODULE:NAME`` prints them, writes an HTML report, and exits 1 on any FAIL.
The registry tests run the same checks on every built-in variant.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core.engine import run
from ..core.errors import XvizError
from ..core.registry import VariantSpec, get_variant, list_variants, load_plugins
from .bench import measure

PASS, FAIL, SKIP, INFO = "PASS", "FAIL", "SKIP", "INFO"


@dataclass
class CheckResult:
    check: str
    status: str
    measured: float | str | None = None
    tolerance: float | str | None = None
    message: str = ""
    data: dict = field(default_factory=dict)  # series for the report's figures

    def line(self) -> str:
        m = "" if self.measured is None else f" measured={short_number(self.measured)}"
        t = "" if self.tolerance is None else f" tolerance={short_number(self.tolerance)}"
        return f"{self.status:4}  {self.check}:{m}{t}  {self.message}".rstrip()


def short_number(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def qkv(b=2, h=2, n=48, d=8, dv=11, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, c, generator=g, dtype=torch.float64).to(device, dtype) for c in (d, d, dv))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# --- the checks: each takes the spec and returns a CheckResult -------------------------------------

def check_shapes(spec: VariantSpec) -> CheckResult:
    q, k, v = qkv(b=2, h=3, n=40, d=8, dv=13)
    out = run(spec.name, q, k, v).out
    ok = tuple(out.shape) == (2, 3, 40, 13)
    return CheckResult("shapes", PASS if ok else FAIL, str(tuple(out.shape)), "(2, 3, 40, 13)",
                       "" if ok else "out must be (B, H, N, d_v)")


def check_dtype(spec: VariantSpec, dtype: torch.dtype) -> CheckResult:
    q, k, v = qkv(dtype=dtype)
    out = run(spec.name, q, k, v).out
    finite = bool(torch.isfinite(out.float()).all())
    ok = out.dtype == dtype and finite
    return CheckResult(f"dtype {str(dtype).removeprefix('torch.')}", PASS if ok else FAIL, str(out.dtype).removeprefix("torch."),
                       None, "" if ok else ("non-finite output" if not finite else "output dtype differs from input"))


def check_cuda(spec: VariantSpec) -> CheckResult:
    if not torch.cuda.is_available():
        return CheckResult("device cuda", SKIP, message="no CUDA device")
    q, k, v = qkv(dtype=torch.float32)
    cpu = run(spec.name, q, k, v).out
    gpu = run(spec.name, q.cuda(), k.cuda(), v.cuda()).out
    err = rel_err(gpu.cpu(), cpu)
    tol = 1e-3  # float32 on two devices: different kernels and summation orders (TF32 off by default)
    return CheckResult("device cuda", PASS if err < tol and gpu.is_cuda else FAIL, err, tol,
                       "" if err < tol else "CUDA result differs from CPU")


def repeatable(spec: VariantSpec) -> bool:
    """Two runs on the same inputs and seed agree: checks that compare runs need this."""
    q, k, v = qkv(dtype=torch.float32)
    return torch.equal(run(spec.name, q, k, v, seed=5).out, run(spec.name, q, k, v, seed=5).out)


NOT_REPEATABLE = "skipped: two identical runs differ (see the determinism check)"


def check_independence(spec: VariantSpec) -> CheckResult:
    """Perturbing batch element 1 and head 1 must leave batch 0 / head 0 unchanged."""
    if not repeatable(spec):
        return CheckResult("batch and head independence", SKIP, message=NOT_REPEATABLE)
    q, k, v = qkv()
    base = run(spec.name, q, k, v).out
    worst = 0.0
    dims = (0,) if spec.mixes_heads else (0, 1)  # shared-K/V variants mix heads by design; batch only
    for dim in dims:
        q2, k2, v2 = (t.clone() for t in (q, k, v))
        for t in (q2, k2, v2):
            t.select(dim, 1).mul_(-1.7).add_(0.3)
        out = run(spec.name, q2, k2, v2).out
        worst = max(worst, rel_err(out.select(dim, 0), base.select(dim, 0)))
    tol = 1e-9  # float64: the untouched slices must be bit-for-bit or near it
    return CheckResult("batch and head independence", PASS if worst < tol else FAIL, worst, tol,
                       ("" if worst < tol else "one batch element or head changes another's output")
                       + ("; heads not checked: the variant declares mixes_heads" if spec.mixes_heads else ""))


def check_causal(spec: VariantSpec, n: int = 12) -> CheckResult:
    """Jacobian test: the gradient of outputs ≤ t with respect to inputs > t must vanish."""
    if not spec.causal:
        return CheckResult("causality (Jacobian)", SKIP, message="variant does not claim causal support")
    q, k, v = (t.requires_grad_() for t in qkv(b=1, h=2, n=n, d=4, dv=5, seed=3))
    out = run(spec.name, q, k, v, causal=True).out
    w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    # positions in the order the variant generates them (token order unless it declares another)
    order = torch.arange(n) if spec.causal_order is None else spec.causal_order(n, spec.defaults())
    worst, where = 0.0, ""
    for t in range(n - 1):
        done, later = order[: t + 1], order[t + 1:]
        grads = torch.autograd.grad((out[..., done, :] * w[..., done, :]).sum(), (q, k, v),
                                    retain_graph=True, allow_unused=True)
        for which, g in zip("qkv", grads):
            if g is not None:
                leak = g[..., later, :].abs().max().item()
                if leak > worst:
                    worst, where = leak, f"output {int(order[t])} depends on a later {which}"
    tol = 1e-12  # masked terms are exp(-inf) = 0 or never enter the graph: exactly zero
    return CheckResult("causality (Jacobian)", PASS if worst < tol else FAIL, worst, tol,
                       "" if worst < tol else f"leaks the future: {where}")


def check_prefix(spec: VariantSpec, lengths=((37, 38), (37, 45), (50, 64))) -> CheckResult:
    """Causal means no output depends on a later token: appending tokens must not move any earlier output.
    The lengths end inside blocks of the defaults (16, 32, 64), where a block read before it is complete
    shows; the Jacobian test cannot see a choice that depends on N itself (draws, centroids, M = N)."""
    label = "appending tokens moves no earlier output"
    if not spec.causal:
        return CheckResult(label, SKIP, message="variant does not claim causal support")
    if spec.causal_order is not None:
        return CheckResult(label, SKIP, message="its causal order is not the token order (the Jacobian test "
                                                 "checks it in its own order)")
    q, k, v = qkv(b=1, h=2, n=max(m for _, m in lengths), d=8, dv=5, seed=4)
    worst, where = 0.0, ""
    for n0, n1 in lengths:
        short = run(spec.name, q[:, :, :n0], k[:, :, :n0], v[:, :, :n0], causal=True, seed=3).out
        longer = run(spec.name, q[:, :, :n1], k[:, :, :n1], v[:, :, :n1], causal=True, seed=3).out[:, :, :n0]
        err = rel_err(longer, short)
        if err > worst:
            worst, where = err, f"N = {n0} → {n1}"
    tol = 1e-10  # float64: the same outputs, at most summed in other chunks
    return CheckResult(label, PASS if worst < tol else FAIL, worst, tol,
                       "" if worst < tol else f"earlier outputs move when tokens are appended ({where})")


def check_matrix(spec: VariantSpec, causal: bool = False) -> CheckResult:
    label = "matrix() @ v == out" + (" (causal)" if causal else "")
    if not spec.has_matrix:
        return CheckResult(label, SKIP, message="variant declares no matrix")
    if causal and not spec.causal:
        return CheckResult(label, SKIP, message="not causal")
    q, k, v = qkv()
    r = run(spec.name, q, k, v, causal=causal)
    err = rel_err(r.matrix() @ v, r.out)
    tol = 1e-9  # float64: the same weights summed in another order
    return CheckResult(label, PASS if err < tol else FAIL, err, tol,
                       "" if err < tol else "the effective matrix does not reproduce the output")


def check_rows(spec: VariantSpec) -> CheckResult:
    """Declared row-stochastic: every row of the matrix is a distribution, at ordinary logits and at
    logits 900× larger (inputs ×30), where an unstabilised exp underflows to all-zero rows."""
    label = "rows are distributions"
    if not (spec.is_row_stochastic() and spec.has_matrix):
        return CheckResult(label, SKIP, message="variant does not declare row-stochastic weights")
    q, k, v = qkv()
    worst, msg = 0.0, ""
    for gain in (1.0, 30.0):
        a = run(spec.name, q * gain, k * gain, v).matrix()
        dev = (a.sum(-1) - 1).abs().max().item()
        neg = max(0.0, -a.min().item())
        if max(dev, neg) > worst:
            worst = max(dev, neg)
            where = "" if gain == 1 else f" with inputs ×{gain:g}"
            msg = (f"rows sum to {1 + dev if a.sum(-1).max() > 1 else 1 - dev:.4g} at worst{where}" if dev >= neg
                   else f"negative weights{where}")
    tol = 1e-9  # float64 sums of N terms
    return CheckResult(label, PASS if worst < tol else FAIL, worst, tol, msg if worst >= tol else "")


def check_sign(spec: VariantSpec) -> CheckResult:
    """Not declared signed: no negative weight (figures then use a sequential scale)."""
    if not spec.has_matrix or spec.is_signed():
        return CheckResult("weights non-negative", SKIP, message="variant declares signed weights or no matrix")
    q, k, v = qkv()
    neg = max(0.0, -run(spec.name, q, k, v).matrix().min().item())
    tol = 1e-12  # float64: a non-negative construction has no negative entry at all
    return CheckResult("weights non-negative", PASS if neg < tol else FAIL, neg, tol,
                       "" if neg < tol else "negative weights: declare signed=True in the spec")


def check_cross(spec: VariantSpec) -> CheckResult:
    """Declared cross-attention: N_q ≠ N_k runs, the matrix is (B, H, N_q, N_k) and reproduces out."""
    if not spec.cross:
        return CheckResult("cross-attention (N_q ≠ N_k)", SKIP, message="variant does not declare cross")
    q, _, _ = qkv(n=40)
    _, k, v = qkv(n=56, seed=1)
    r = run(spec.name, q, k, v)
    if tuple(r.out.shape) != (2, 2, 40, v.shape[-1]):
        return CheckResult("cross-attention (N_q ≠ N_k)", FAIL, str(tuple(r.out.shape)), None, "wrong output shape")
    if not spec.has_matrix:
        return CheckResult("cross-attention (N_q ≠ N_k)", PASS, message="no matrix declared")
    err = rel_err(r.matrix() @ v, r.out)
    tol = 1e-9  # float64: the same weights summed in another order
    return CheckResult("cross-attention (N_q ≠ N_k)", PASS if err < tol else FAIL, err, tol,
                       "" if err < tol else "the (N_q, N_k) matrix does not reproduce the output")


def check_permutation(spec: VariantSpec) -> CheckResult:
    if not repeatable(spec):
        return CheckResult("permuting keys and values", SKIP, message=NOT_REPEATABLE)
    n = 512  # beyond default windows, so positional patterns are not the whole matrix
    q, k, v = qkv(b=1, h=2, n=n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    err = rel_err(run(spec.name, q, k[:, :, perm], v[:, :, perm]).out, run(spec.name, q, k, v).out)
    tol = 1e-8  # float64: within it the output is unchanged (content-based, equivariant)
    invariant = err < tol
    ok = invariant == spec.content_based
    if invariant:
        return CheckResult("permuting keys and values", PASS if ok else FAIL, err, tol, "content-based: the output "
                           "does not change" + ("" if ok else "; the spec declares content_based=False"))
    # a positional pattern is expected to change: the change is reported, no tolerance applies to it
    return CheckResult("permuting keys and values", PASS if ok else FAIL, err, None,
                       f"positional: the output changes (relative {err:.3g}; content-based would stay under {tol:g})"
                       + ("" if ok else "; the spec declares content_based=True"))


def check_limit(spec: VariantSpec, causal: bool = False) -> CheckResult:
    label = "declared limit equals exact" + (" (causal)" if causal else "")
    if spec.exact_when is None:
        return CheckResult(label, SKIP, message="no limit declared")
    if causal and not spec.causal:
        return CheckResult(label, SKIP, message="not causal")
    q, k, v = qkv()
    params = spec.exact_when(q.shape[-2], q.shape[-1], q.shape[1])
    ref_causal = causal or spec.causal_only  # a recurrence always computes causally: its limit is causal exact
    err = rel_err(run(spec.name, q, k, v, causal=causal, **params).out, run("exact", q, k, v, causal=ref_causal).out)
    tol = 1e-6  # float64; algebraic identities, room for a pseudo-inverse of a dense softmax matrix
    return CheckResult(label, PASS if err < tol else FAIL, err, tol, f"with {params}" if err < tol else f"with {params}: differs")


def check_determinism(spec: VariantSpec) -> CheckResult:
    # N = 512: long enough that seeded patterns at their defaults (BigBird's random blocks) do not
    # already cover every key, where the seed could not matter.
    q, k, v = qkv(n=512, dtype=torch.float32)
    a = run(spec.name, q, k, v, seed=5).out
    same = torch.equal(a, run(spec.name, q, k, v, seed=5).out)
    if not same:
        return CheckResult("determinism (fixed seed)", FAIL, message="two runs with seed 5 differ")
    if spec.stochastic and torch.equal(a, run(spec.name, q, k, v, seed=6).out):
        return CheckResult("determinism (fixed seed)", FAIL, message="declared stochastic, but the seed changes nothing")
    return CheckResult("determinism (fixed seed)", PASS)


def check_half_precision(spec: VariantSpec) -> CheckResult:
    q, k, v = qkv(dtype=torch.bfloat16)
    q, k = q * 30, k * 30  # logits in the thousands: overflow without a max-subtraction
    try:
        out = run(spec.name, q, k, v).out
    except XvizError as exc:
        return CheckResult("large logits in bfloat16", FAIL, message=str(exc))
    bad = (~torch.isfinite(out.float())).sum().item()
    return CheckResult("large logits in bfloat16", PASS if bad == 0 else FAIL, bad, 0,
                       "" if bad == 0 else "NaN/Inf outputs")


def check_logit_scale(spec: VariantSpec, scales=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0)) -> CheckResult:
    """Error against exact as attention sharpens (inputs multiplied by √scale)."""
    q, k, v = qkv(b=1, h=2, n=256, d=16, dv=16, dtype=torch.float32)
    errs = []
    for s in scales:
        f = math.sqrt(s)
        c = spec.causal_only  # a recurrence is held to causal exact attention
        errs.append(rel_err(run(spec.name, q * f, k * f, v, causal=c).out, run("exact", q * f, k * f, v, causal=c).out))
    return CheckResult("error vs logit scale", INFO, errs[scales.index(1.0)], None,
                       "relative output error at scales " + ", ".join(f"{s:g}: {e:.3g}" for s, e in zip(scales, errs)),
                       data={"x": list(scales), "y": errs, "xlabel": "logit scale", "ylabel": "relative output error"})


def nearest_builtins(spec: VariantSpec, limit: int = 2) -> list[str]:
    same = [s.name for s in list_variants(spec.family) if s.name != spec.name and s.name != "exact"]
    return same[:limit]


def check_error_vs_n(spec: VariantSpec, ns=(128, 256, 512, 1024)) -> CheckResult:
    series = {}
    for name in [spec.name] + nearest_builtins(spec):
        errs = []
        for n in ns:
            q, k, v = qkv(b=1, h=2, n=n, d=16, dv=16, dtype=torch.float32)
            c = get_variant(name).causal_only  # each series against exact attention of its own causality
            errs.append(rel_err(run(name, q, k, v, causal=c).out, run("exact", q, k, v, causal=c).out))
        series[name] = errs
    mine = series[spec.name]
    return CheckResult("error vs N", INFO, mine[-1], None,
                       "; ".join(f"{name}: " + ", ".join(f"{e:.3g}" for e in errs) for name, errs in series.items())
                       + f" at N = {', '.join(map(str, ns))}",
                       data={"x": list(ns), "series": series, "xlabel": "N", "ylabel": "relative output error"})


def fit_exponent(ns, values) -> float:
    """Least-squares slope of log(value) against log(N)."""
    xs, ys = [math.log(n) for n in ns], [math.log(max(v, 1e-12)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def check_complexity(spec: VariantSpec, ns=(2048, 4096, 8192)) -> CheckResult:
    """Peak memory (and time, reported) at growing N; fitted exponents against the claimed class."""
    times, mems = [], []
    for n in ns:
        q, k, v = qkv(b=1, h=1, n=n, d=32, dv=32, dtype=torch.float32)
        t, m = measure(lambda: run(spec.name, q, k, v).out, torch.device("cpu"), repeats=2)
        times.append(t)
        io_bytes = 4 * q.numel() * 4  # q, k, v, out: a floor, so tiny noisy peaks do not fake an exponent
        mems.append(max(m, io_bytes))
    # Memory: the slope between the two largest N, where fixed overheads (allocator, chunk buffers)
    # weigh least; time: the fit over all points (reported only).
    mem_exp, time_exp = fit_exponent(ns[-2:], mems[-2:]), fit_exponent(ns, times)
    claimed = 1.0 if spec.subquadratic else 2.0
    # 1.5: halfway between linear and quadratic; memory is the reliable signal (time on a shared CPU is not).
    ok = mem_exp < 1.5 if spec.subquadratic else True
    return CheckResult("complexity (memory exponent)", PASS if ok else FAIL, mem_exp, "< 1.5" if spec.subquadratic else None,
                       f"claims {spec.complexity} (exponent ~{claimed:g}); time exponent {time_exp:.2f}; peak MB "
                       + ", ".join(f"{m / 2**20:.1f}" for m in mems) + f" at N = {', '.join(map(str, ns))}"
                       + ("" if ok else ": memory grows like N², an N×N tensor on the compute path?"),
                       data={"x": list(ns), "series": {"peak MB": [m / 2**20 for m in mems],
                                                        "time ms": [t * 1e3 for t in times]},
                             "xlabel": "N", "ylabel": "", "log": True})


def battery(spec: VariantSpec, quick: bool = False) -> list[tuple[str, Callable[[], CheckResult]]]:
    checks = [
        ("shapes", lambda: check_shapes(spec)),
        ("dtype float32", lambda: check_dtype(spec, torch.float32)),
        ("dtype bfloat16", lambda: check_dtype(spec, torch.bfloat16)),
        ("device cuda", lambda: check_cuda(spec)),
        ("batch and head independence", lambda: check_independence(spec)),
        ("causality (Jacobian)", lambda: check_causal(spec)),
        ("appending tokens moves no earlier output", lambda: check_prefix(spec)),
        ("matrix() @ v == out", lambda: check_matrix(spec)),
        ("matrix() @ v == out (causal)", lambda: check_matrix(spec, causal=True)),
        ("rows are distributions", lambda: check_rows(spec)),
        ("weights non-negative", lambda: check_sign(spec)),
        ("cross-attention (N_q ≠ N_k)", lambda: check_cross(spec)),
        ("permuting keys and values", lambda: check_permutation(spec)),
        ("declared limit equals exact", lambda: check_limit(spec)),
        ("declared limit equals exact (causal)", lambda: check_limit(spec, causal=True)),
        ("determinism (fixed seed)", lambda: check_determinism(spec)),
        ("large logits in bfloat16", lambda: check_half_precision(spec)),
    ]
    if not quick:
        checks += [("error vs logit scale", lambda: check_logit_scale(spec)),
                   ("error vs N", lambda: check_error_vs_n(spec)),
                   ("complexity (memory exponent)", lambda: check_complexity(spec))]
    return checks


def check_variant(name: str, quick: bool = False, progress: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Run every check on variant ``name``; an exception inside a check becomes that check's FAIL."""
    spec = get_variant(name)
    results = []
    for label, fn in battery(spec, quick):
        t = time.perf_counter()
        try:
            r = fn()
        except Exception as exc:  # the variant under test raised: report it as a failure, keep going
            r = CheckResult(label, FAIL, message=f"raised {type(exc).__name__}: {exc}")
        r.data.setdefault("seconds", time.perf_counter() - t)
        results.append(r)
        if progress:
            progress(r)
    return results


def load_target(target: str) -> str:
    """``MODULE:NAME`` imports MODULE (which registers its variants) and returns NAME;
    a plain ``NAME`` is a variant already in the catalog."""
    if ":" in target:
        module, name = target.split(":", 1)
        load_plugins([module])
    else:
        name = target
    get_variant(name)  # raises UnknownVariantError naming the catalog
    return name
