"""The benchmark's targets: pure functions of its rows (``bench.Row``, ``bench.PeerRow``), each a
``Target`` with its measured value and met / MISS, so they are tested on synthetic rows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.registry import list_variants

if TYPE_CHECKING:
    from .bench import PeerRow, Row

PEAK_SHARE_GOAL = 0.30  # sparse, block and learnable-pattern variants, in their own FLOPs, at N ≥ 4K
SPEEDUP_GOALS = {"window": 4.0, "kernel": 3.0}  # at N = 4K, over fused exact
WINDOW_LIKE = ("sliding_window", "blocked_local", "sparse_strided", "longformer", "bigbird")
KERNEL_LINEAR = ("performer", "linear", "cosformer")  # linear-time kernel variants
BIASED = ("prior", "prior[bias=gaussian]")  # quadratic with a bias: within BIAS_GOAL of fused exact
BIAS_GOAL = 1.2
PEER_GOAL = 1.25  # no variant slower than this × its best peer implementation
PATTERN_FAMILIES = ("fixed pattern", "combined pattern", "learnable pattern")


@dataclass
class Target:
    what: str
    measured: float | None
    goal: str
    met: bool | None  # None: could not be measured
    note: str = ""

    def line(self) -> str:
        mark = "met " if self.met else ("MISS" if self.met is False else "n/a ")
        val = "—" if self.measured is None else f"{self.measured:.3g}"
        return f"  {mark} {self.what}: {val} (target {self.goal}){' — ' + self.note if self.note else ''}"


MIN_PEAK_BYTES = 1 << 20  # below a MiB the CPU high-water mark is page noise: no ratio from it


def memory_growth(rows: list[Row], n_from: int, n_to: int) -> dict[str, float]:
    """Peak memory at ``n_to`` over peak memory at ``n_from``, per variant (where the smaller one
    is at least MIN_PEAK_BYTES: a ratio of page noise means nothing)."""
    at = {(r.variant, r.n): r.peak_bytes for r in rows if r.peak_bytes}
    return {v: at[(v, n_to)] / at[(v, n_from)] for (v, n) in at
            if n == n_from and (v, n_to) in at and at[(v, n_from)] >= MIN_PEAK_BYTES}


def peak_share_targets(rows: list[Row], min_n: int = 4096) -> list[Target]:
    """Every sparse, block and learnable-pattern variant at ≥ PEAK_SHARE_GOAL of the matmul peak,
    in its own FLOPs, at every measured N ≥ ``min_n`` (the worst N counts)."""
    worst: dict[str, Row] = {}
    for r in rows:
        if r.family in PATTERN_FAMILIES and r.n >= min_n and r.peak_share is not None:
            if r.variant not in worst or r.peak_share < worst[r.variant].peak_share:
                worst[r.variant] = r
    return [Target(f"{v} share of the matmul peak (own FLOPs, worst N ≥ {min_n // 1024}K: N = {r.n})", r.peak_share,
                   f"≥ {PEAK_SHARE_GOAL:.0%}", r.peak_share >= PEAK_SHARE_GOAL,
                   f"{r.gflops:.1f} of {r.peak_gflops:.0f} GFLOP/s")
            for v, r in sorted(worst.items())]


def speedup_targets(rows: list[Row], n: int = 4096) -> list[Target]:
    """At N = 4K: window-like variants ≥ 4× faster than fused exact, linear-time kernel ones ≥ 3×."""
    at = {(r.variant, r.n): r for r in rows}
    out = []
    for group, names in (("window", WINDOW_LIKE), ("kernel", KERNEL_LINEAR)):
        goal = SPEEDUP_GOALS[group]
        for name in names:
            r = at.get((name, n))
            if r is None:
                continue
            ok = None if r.time_vs_fused is None else r.time_vs_fused >= goal
            out.append(Target(f"{name} at N = {n}: speed-up over fused exact", r.time_vs_fused, f"≥ {goal:g}×", ok,
                              r.error))
    return out


def bias_targets(rows: list[Row]) -> list[Target]:
    """Quadratic variants with a bias within BIAS_GOAL × fused exact's time, at every N."""
    out = []
    for r in rows:
        if r.variant in BIASED:
            cost = None if not r.time_vs_fused else 1 / r.time_vs_fused
            out.append(Target(f"{r.variant} at N = {r.n}: time over fused exact", cost, f"≤ {BIAS_GOAL:g}×",
                              None if cost is None else cost <= BIAS_GOAL, r.error))
    return out


def peer_targets(peers: list[PeerRow]) -> list[Target]:
    """No variant more than PEER_GOAL × slower than its best peer on the same shapes (per N)."""
    best: dict[tuple[str, int], PeerRow] = {}
    for p in peers:
        if p.ratio is None:
            continue
        key = (p.variant, p.n)
        if key not in best or p.ratio > best[key].ratio:  # the fastest peer gives the largest ratio
            best[key] = p
    return [Target(f"{v} at N = {n} vs {p.peer}: xviz time / peer time", p.ratio, f"≤ {PEER_GOAL:g}×",
                   p.ratio <= PEER_GOAL, p.note)
            for (v, n), p in sorted(best.items())]


def exact_targets(rows: list[Row]) -> list[Target]:
    at = {(r.variant, r.n): r for r in rows}
    out = []
    for n in sorted({r.n for r in rows}):
        r = at.get(("exact", n))
        if r and r.time_vs_fused:
            cost = 1 / r.time_vs_fused
            out.append(Target(f"exact path at N = {n}: time over the fused kernel", cost, "≤ 1.1×", cost <= 1.1))
    return out


def targets(rows: list[Row], peers: list[PeerRow] | None = None) -> list[Target]:
    return (peak_share_targets(rows) + speedup_targets(rows) + bias_targets(rows) + exact_targets(rows)
            + peer_targets(peers or []))


def targets_text(rows: list[Row], peers: list[PeerRow] | None = None) -> str:
    """Every target with its measured value and met / MISS."""
    lines = ["Targets:"] + [t.line() for t in targets(rows, peers)]
    ns = sorted({r.n for r in rows})
    if 1024 in ns and 16384 in ns:
        growth = memory_growth(rows, 1024, 16384)
        sub = {s.name for s in list_variants() if s.subquadratic}
        for name in sorted(v for v in growth if v in sub):
            g = growth[name]
            lines.append(f"  {'met ' if g <= 20 else 'MISS'} {name}: peak memory 1K→16K grew {g:.1f}× (target ≤ 20×)")
    return "\n".join(lines)
