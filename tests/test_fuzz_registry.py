"""Property-based fuzzing of every registered variant through ``xviz.run`` (hypothesis).

The property, for any generated case (shapes with zeros, every parameter at and beyond its bounds,
float32/float64/bfloat16/float16, causal on and off, N_q ≠ N_k for cross variants, logit scales
1e-4…1e4, inputs from tiny to overflow-adjacent): either a finished, finite result whose declared
identities hold (``matrix() @ v == out`` within a dtype-aware tolerance, rows summing to 1 and
non-negative where the spec declares row-stochastic weights), or an ``XvizError`` whose message is
one line naming the parameter or input at fault. Anything else is an escape.

Profiles (``XVIZ_FUZZ``): ``quick`` (default, CI: derandomized, a fixed number of examples, no
example database) and ``long`` (``make fuzz``: many more examples, still derandomized so a run can be
repeated). ``benchmarks/reliability.py`` runs the same strategies and outcomes and tallies them
into docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import os
import resource
import traceback
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xviz
from xviz.core.errors import BudgetError, InputError, ParameterError, XvizError

PROFILES = {"quick": 1, "long": 25}  # examples per property = base × this factor


def profile() -> str:
    name = os.environ.get("XVIZ_FUZZ", "quick")
    return name if name in PROFILES else "quick"


def fuzz_settings(base_examples: int):
    """Deterministic settings: derandomized, no database in the repo, no deadline on a shared CPU."""
    return settings(max_examples=base_examples * PROFILES[profile()], derandomize=True, database=None,
                    deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@dataclass(frozen=True)
class Outcome:
    kind: str  # "result" | "error" | "escape"
    detail: str = ""


def one_sentence(msg: str, limit: int = 400) -> str | None:
    """Why ``msg`` is not a user-facing sentence, or None when it is one."""
    if not msg or "\n" in msg:
        return "empty or several lines"
    if len(msg) > limit:
        return f"{len(msg)} characters"
    if "Traceback" in msg or "File \"" in msg:
        return "shows a traceback"
    return None


# ------------------------------------------------------------------ cases

SPECS = {s.name: s for s in xviz.list_variants() if s.builtin}
NAMES = sorted(SPECS)
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Input magnitudes: zero, tiny, ordinary, sharp (×30 gives logits in the thousands), huge and
# overflow-adjacent (the engine must refuse logits beyond float32, never compute garbage).
MAGNITUDES = (0.0, 1e-30, 1e-4, 1.0, 3.0, 30.0, 1e3, 1e6, 1e18, 1e150, 3e38)
V_MAGNITUDES = (0.0, 1e-30, 1.0, 1e4, 1e30, 1e300)


@dataclass(frozen=True)
class Case:
    name: str
    b: int = 1
    h: int = 1
    n: int = 8
    nk: int = -1  # keys; -1: as many as queries (self-attention)
    d: int = 4
    dv: int = 3
    dtype: str = "float64"
    causal: bool = False
    scale: float | None = None
    magnitude: float = 1.0
    v_magnitude: float = 1.0
    params: tuple = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.nk < 0:
            object.__setattr__(self, "nk", self.n)

    def tensors(self):
        g = torch.Generator().manual_seed(self.seed)
        dt = DTYPES[self.dtype]
        q = torch.randn(self.b, self.h, self.n, self.d, generator=g, dtype=torch.float64) * self.magnitude
        k = torch.randn(self.b, self.h, self.nk, self.d, generator=g, dtype=torch.float64) * self.magnitude
        v = torch.randn(self.b, self.h, self.nk, self.dv, generator=g, dtype=torch.float64) * self.v_magnitude
        return q.to(dt), k.to(dt), v.to(dt)


def _rarely(draw, bad, good, one_in: int = 12):
    """``bad`` about once in ``one_in`` draws, else ``good``: most cases must be valid to test anything."""
    return draw(bad) if draw(st.integers(0, one_in - 1)) == 0 else draw(good)


def _param_values(p, n: int, d: int):
    """(valid values, invalid values) of a parameter: default, bounds and inside; one past each
    bound and wrong types."""
    low, high = p.bounds(n, d)
    if p.kind == "choice":
        return st.sampled_from(p.choices), st.sampled_from(["no-such-choice", 3, None])
    if p.kind == "bool":
        return st.sampled_from([True, False, "true", "0", 1]), st.sampled_from(["maybe", None, 2.5])
    edges = [p.default] + [b for b in (low, high) if b is not None]
    bad = [b + s for b, s in ((low, -1), (high, 1)) if b is not None]
    if p.kind == "int":
        bad += [2**40, -2**40, 2.5, "abc", None]
        inner = st.integers(int(low if low is not None else 0), int(high if high is not None else 4 * n))
    else:
        bad += [float("nan"), float("inf"), 1e300, "abc"]
        inner = st.floats(float(low if low is not None else -10), float(high if high is not None else 1e3),
                          allow_nan=False)
    return st.one_of(st.sampled_from(edges), inner), st.sampled_from(bad)


@st.composite
def cases(draw, names=None):
    name = draw(st.sampled_from(names or NAMES))
    spec = SPECS[name]
    size = lambda hi: _rarely(draw, st.just(0), st.integers(1, hi), 40)  # noqa: E731  (zero dims, rarely)
    b, h, n, d = size(2), size(3), size(40), size(8)
    nk = draw(st.integers(1, 40)) if spec.cross and draw(st.booleans()) else n
    dv = size(6)
    causal = draw(st.booleans())
    scale = _rarely(draw, st.sampled_from([0.0, -1.0, float("nan"), float("inf")]),
                    st.one_of(st.none(), st.floats(1e-4, 1e4), st.sampled_from([1e-4, 1e4])))
    params = {}
    for p in spec.params:
        if draw(st.integers(0, 3)) > 0:  # leave some parameters at their defaults
            good, bad = _param_values(p, max(nk, 1), max(d, 1))
            params[p.name] = _rarely(draw, bad, good, 10)
    magnitude = _rarely(draw, st.sampled_from(MAGNITUDES[-4:]), st.sampled_from(MAGNITUDES[:-4]), 6)
    return Case(name=name, b=b, h=h, n=n, nk=nk, d=d, dv=dv, dtype=draw(st.sampled_from(list(DTYPES))),
                causal=causal, scale=scale, magnitude=magnitude,
                v_magnitude=_rarely(draw, st.sampled_from(V_MAGNITUDES[-2:]), st.sampled_from(V_MAGNITUDES[:-2]), 8),
                params=tuple(sorted(params.items())), seed=draw(st.integers(0, 2**63 - 1)))


# ------------------------------------------------------------------ the property

# Tolerance of matrix() @ v == out, relative to ‖|A|·|v|‖ (the scale of the rounding error of a
# weighted sum, whatever the cancellation). Half precision: both sides are float32 work rounded to
# the input dtype once (out) or per weight (the matrix): 2 ulps of the dtype, with room ×4. float32 /
# float64: sums of ≤ 40 terms and, for Nyström-like factorisations, products computed in another
# order: ~10³ ulps. Plus a term for large logits (see logit_tolerance).
MATRIX_TOL = {"float64": 1e-10, "float32": 2e-4, "bfloat16": 3.2e-2, "float16": 4e-3}


def subnormal_tolerance(out: torch.Tensor, vd: torch.Tensor) -> float:
    """Below the normal range a value keeps no relative precision: each weight of matrix() and each
    element of out is rounded to a multiple of the dtype's smallest subnormal (2^−24 in float16, 2^−149
    in float32). So weights too small for the dtype may round to 0 while out, formed at float32, keeps
    their sum: allowed up to 4 quanta per weight (times |v|) and per output element."""
    fi = torch.finfo(out.dtype)
    quantum = fi.tiny * fi.eps
    per_row = vd.abs().sum(-2, keepdim=True).expand(*out.shape[:-2], out.shape[-2], -1)  # Σ_j |v_j|
    return 4 * quantum * (per_row.norm().item() + out.numel() ** 0.5) + 1e-300


def logit_tolerance(case: Case, q: torch.Tensor, k: torch.Tensor) -> float:
    """Out and matrix() may form the same logit in two orders (a fast kernel and a gathered view):
    each carries a rounding error ≤ d·ε·‖q‖‖k‖ at the work dtype (float32 for half inputs, as every
    variant must compute), and a softmax weight moves by the logit's error in relative terms: so
    4·d·ε_work·L with L = scale·max‖q‖·max(‖k‖, ‖q‖, 1) (shared-QK variants use unit-norm queries as keys)."""
    eps = torch.finfo(torch.float64 if case.dtype == "float64" else torch.float32).eps
    if q.numel() == 0 or k.numel() == 0:
        return 0.0
    scale = case.scale if case.scale is not None else 1 / max(case.d, 1) ** 0.5
    qn, kn = q.double().norm(dim=-1).max().item(), k.double().norm(dim=-1).max().item()
    return 4 * max(case.d, 1) * eps * scale * qn * max(kn, qn, 1.0)
ROW_TOL = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 3.2e-2, "float16": 4e-3}


def _names_culprit(msg: str, case: Case) -> bool:
    words = {"q", "k", "v", "input", "logits", "scale", "seed", "causal", "shape", "heads", "length", "N",
             "cross-attention", "budget", "GiB", "parameter"}
    words |= {p.name for p in SPECS[case.name].params}
    low = msg.replace(",", " ").replace(".", " ").replace("(", " ").replace(")", " ").split()
    return any(w in low for w in words) or any(p.name in msg for p in SPECS[case.name].params)


def outcome(case: Case) -> Outcome:
    """Run one case; classify it as a clean result, a clean error, or an escape."""
    spec = SPECS[case.name]
    q, k, v = case.tensors()
    try:
        r = xviz.run(case.name, q, k, v, causal=case.causal, seed=case.seed, scale=case.scale, **dict(case.params))
    except (ParameterError, InputError, BudgetError) as exc:
        msg = str(exc)
        why = one_sentence(msg)
        if why is None and not _names_culprit(msg, case):
            why = "names neither a parameter nor an input"
        return Outcome("escape", f"{type(exc).__name__} {why}: {msg}") if why else Outcome("error", type(exc).__name__)
    except XvizError as exc:  # VariantError from a built-in is a bug in xviz
        return Outcome("escape", f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 — anything else escaped
        return Outcome("escape", f"{type(exc).__name__}: {exc} @ {traceback.format_exc(limit=-3)}")
    out = r.out
    if out.shape != (case.b, case.h, case.n, case.dv) or out.dtype != v.dtype or not torch.isfinite(out).all():
        return Outcome("escape", f"bad out {tuple(out.shape)} {out.dtype}")
    if not r.has_matrix:
        return Outcome("result")
    try:
        a = r.matrix().double()
    except BudgetError:
        return Outcome("result")
    except (InputError, ParameterError) as exc:  # weights the input dtype cannot hold, said in one line
        why = one_sentence(str(exc))
        return Outcome("escape", f"matrix() {why}: {exc}") if why else Outcome("error", type(exc).__name__)
    except Exception as exc:  # noqa: BLE001
        return Outcome("escape", f"matrix() raised {type(exc).__name__}: {exc}")
    if not torch.isfinite(a).all():
        return Outcome("escape", "matrix() has NaN or Inf")
    vd = v.double()
    scale_ = (a.abs() @ vd.abs()).norm().item()
    resid = (a @ vd - out.double()).norm().item()
    if resid > (MATRIX_TOL[case.dtype] + logit_tolerance(case, q, k)) * scale_ + subnormal_tolerance(out, vd):
        return Outcome("escape", f"matrix() @ v differs from out: {resid:.3g} vs scale {scale_:.3g}")
    if spec.is_row_stochastic(r.params) and case.nk > 0:
        dev = (a.sum(-1) - 1).abs().max().item() if a.numel() else 0.0
        neg = max(0.0, -a.min().item()) if a.numel() else 0.0
        if max(dev, neg) > ROW_TOL[case.dtype]:
            return Outcome("escape", f"declared row-stochastic, but rows deviate by {dev:.3g} (negative {neg:.3g})")
    return Outcome("result")


# Escapes found by this suite, kept as regression cases (each was an escape before its fix).
REGRESSIONS = [
    Case("performer", n=48, d=8, dv=8, dtype="float32", magnitude=30.0),  # exact-zero rows at large logits
    Case("performer", n=48, d=8, dv=8, dtype="float32", magnitude=30.0, causal=True),
    Case("nystrom", n=62, d=5, dv=3, magnitude=0.002, params=(("landmarks", 29), ("pinv_iterations", 100))),
    Case("topk", h=2, n=21, nk=21, d=4, dv=2, dtype="float16", causal=True, scale=1e4, magnitude=3.0,
         params=(("top_k", 3),), seed=1),  # float16 logits overflowed while choosing: empty rows (long profile)
    Case("clustered", h=2, n=33, nk=33, d=1, dv=6, dtype="float16", scale=5379.0, magnitude=30.0,
         params=(("iterations", 50),), seed=270),  # float16 centroid logits: NaN out
    Case("linformer", b=2, h=2, n=3, nk=3, d=4, dv=4, scale=1e4, params=(("projection", "pool"), ("rank", 1))),
    Case("cosformer", b=2, h=2, n=3, nk=3, d=1, dv=2, dtype="bfloat16", scale=1e-4, magnitude=1e-30,
         v_magnitude=1e30, seed=402),  # products underflowed: matrix() @ v ≠ out
    Case("linear", b=2, h=3, n=28, nk=28, d=4, dv=4, causal=True, scale=1e-4, magnitude=1e6, seed=2173),  # zero rows
    Case("sinkhorn", b=2, h=3, n=5, nk=5, d=3, dv=2, dtype="float16", scale=1e4, magnitude=1e3,
         params=(("iterations", 40), ("temperature", 0.01)), seed=9223372036854775806),  # float16 block logits: NaN
    # outputs beyond float16's range became inf (now an InputError naming the output and the range)
    Case("linformer", n=40, d=4, dv=3, dtype="float16", v_magnitude=1e4, params=(("rank", 1),), seed=1),
    Case("nystrom", n=21, d=3, dv=2, dtype="float16", magnitude=3.0, params=(("landmarks", 13), ("pinv_iterations", 100)),
         seed=2),
    # float16 logits ~1e5 in the block/band kernels overflowed to inf (tiles now form logits at float32)
    Case("sliding_window", h=2, n=30, d=8, dv=2, dtype="float16", magnitude=100.0),
    Case("bigbird", h=2, n=30, d=8, dv=2, dtype="float16", magnitude=100.0),
    # long profile, final code: float16 LSH logits beyond 65,504 (now at float32), a causal row of
    # unstabilised features that underflowed (now refused), weights below float16's normal range
    Case("reformer", h=3, n=16, d=1, dv=1, dtype="float16", scale=4893.7194290788, magnitude=30.0,
         params=(("buckets", 1), ("chunk", 16)), seed=9226894950),
    Case("performer", b=2, h=3, n=5, d=5, dv=3, dtype="float64", causal=True, scale=1e-4, magnitude=1000.0,
         v_magnitude=1e-30, params=(("orthogonal", "0"), ("stabilize", "0")), seed=29795832644),
    Case("mamba2", b=2, h=3, n=3, d=3, dv=3, dtype="float16", scale=0.75, magnitude=1e-4, params=(("gate", "fixed"),),
         seed=7146),
    Case("gated_deltanet", n=33, d=1, dv=2, dtype="float32", causal=True, scale=0.25, magnitude=1e-4,
         v_magnitude=1e-30, params=(("beta", 1.7547808768326899e-15), ("decay", 0.7887950300504629)), seed=546983),
]


classify = outcome  # benchmarks/reliability.py tallies the same classification


def check(case: Case) -> None:
    o = outcome(case)
    assert o.kind != "escape", f"{case}: {o.detail}"


@pytest.mark.parametrize("case", REGRESSIONS, ids=lambda c: c.name)
def test_regressions(case):
    check(case)


ANY_CASE_EXAMPLES = 3000  # quick profile; the long one runs 25× as many


@fuzz_settings(ANY_CASE_EXAMPLES)
@given(cases())
def test_any_variant_any_case(case):
    check(case)


def bound_cases(pick):
    """Each variant, each parameter alone at its default, at each bound and one past it, causal on and
    off, at a fixed small shape; ``pick(options)`` chooses the dtype and the magnitude."""
    for name in NAMES:
        spec = SPECS[name]
        for p in spec.params:
            values = [p.default] + ([b for b in p.bounds(12, 4) if b is not None] if p.kind in ("int", "float") else [])
            for value in values + [v + s for v in values[1:] for s in (-1, 1)]:
                for causal in (False, True) if spec.causal else (False,):
                    yield Case(name, b=1, h=2, n=12, nk=12, d=4, dv=3, dtype=pick(list(DTYPES)), causal=causal,
                               params=((p.name, value),), magnitude=pick([1.0, 30.0]))


@fuzz_settings(2)
@given(st.data())
def test_every_variant_at_every_bound(data):
    for case in bound_cases(lambda options: data.draw(st.sampled_from(options))):
        check(case)


# ------------------------------------------------------------------ honest costs

def _bound_settings(spec, n: int, d: int):
    out = [{}]
    for p in spec.params:
        if p.kind in ("int", "float"):
            out += [{p.name: int(b) if p.kind == "int" else b} for b in p.bounds(n, d) if b is not None]
        elif p.kind == "choice":
            out += [{p.name: c} for c in p.choices if c != p.default]
        else:
            out.append({p.name: not p.default})
    return out


@pytest.mark.parametrize("name", NAMES)
def test_cost_is_honest_at_every_bound(name):
    """A parameter at its declared bound (a stride of 1, landmarks = N, 16 rounds) must not run far more
    work than its Cost says, or callers cannot warn or refuse before starting. The matrix products torch
    really runs (FlopCounterMode counts matmuls, not elementwise work) stay within 4× of cost.flops —
    4: causal kernels compute whole blocks where the cost counts the triangle (2×), blocks overlap —
    plus 128 keys per query, the granularity of the block and band kernels (a band tile of 32 queries
    meets its own and both neighbouring blocks, 96 keys, even for a window of 1; the Cost counts the
    algorithm's keys, which the budget pages match).
    And ``estimate`` gives run's own cost without running."""
    from torch.utils.flop_counter import FlopCounterMode

    spec, n, d = SPECS[name], 384, 8
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, d, generator=g) for _ in range(3))
    for causal in (False, True) if spec.causal else (False,):
        for params in _bound_settings(spec, n, d):
            try:
                counter = FlopCounterMode(display=False)
                with counter:
                    r = xviz.run(name, q, k, v, causal=causal, **params)
            except ParameterError:  # a bound that another parameter's rule forbids
                continue
            ran = counter.get_total_flops()
            block = 2 * 2 * n * 128 * (d + d)  # b·h·2·N·128·(d + d_v)
            assert ran <= 4 * r.cost.flops + block, f"{params} causal={causal}: ran {ran:.3g} FLOPs, cost {r.cost.flops:.3g}"
            shape = xviz.core.registry.Shape(1, 2, n, d, d, causal=spec.causal_only or causal)
            assert xviz.core.engine.estimate(name, shape, **params) == r.cost


# ------------------------------------------------------------------ huge head sizes

@contextlib.contextmanager
def address_space_cap(extra_bytes: int):
    """Cap this process's address space at its current size plus ``extra_bytes`` for the block, so an
    allocation far beyond what a run declared fails at once (a RuntimeError: an escape) instead of
    swapping the machine. Restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize("name", NAMES)
def test_huge_head_size_is_refused_or_runs(name):
    """d up to 1e5 for every variant: the work budget must count what a variant allocates (projections
    included) and refuse before allocating. Performer once drew a d × d orthogonal block (40 GB at
    d = 1e5) before any check. Work budget 1 GiB; the address space may grow 3 GiB beyond it (room for
    the allocator and torch's workspaces, far below what an uncounted d × d tensor needs)."""
    budget = xviz.work_budget()
    xviz.set_work_budget(2**30)
    try:
        with address_space_cap(4 * 2**30):
            for d in (10_000, 100_000):
                for causal in (False, True) if SPECS[name].causal else (False,):
                    check(Case(name, n=5, d=d, dv=3, dtype="float32", causal=causal))
    finally:
        xviz.set_work_budget(budget)
