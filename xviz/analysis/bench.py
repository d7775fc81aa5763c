"""Engine benchmark: forward time and peak memory of every variant against N, as ratios to exact
attention measured in the same run, both a naive exact (softmax(QKᵀ)V, the N×N matrix built) and
PyTorch's fused ``scaled_dot_product_attention``.

CUDA: CUDA events after warm-up, peak from ``torch.cuda.max_memory_allocated``. CPU: the median of
repeated runs after warm-up; peak memory is the kernel's resident high-water mark during the runs
minus the resident set before them (``PeakRSS``), so it counts what the variant allocates, inputs
excluded.
"""
from __future__ import annotations

import csv
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..core.engine import run
from ..core.errors import XvizError
from ..core.registry import Shape, get_variant, list_variants

NAIVE, FUSED = "naive exact", "fused exact"


@dataclass
class Row:
    variant: str
    n: int
    seconds: float | None
    peak_bytes: float | None
    theory_flops: float | None
    time_vs_naive: float | None = None
    time_vs_fused: float | None = None
    mem_vs_naive: float | None = None
    error: str = ""


def naive_exact(q, k, v, causal: bool):
    a = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if causal:
        n = q.shape[-2]
        a = a.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.matmul(torch.softmax(a, dim=-1), v)


def fused_exact(q, k, v, causal: bool):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(f.read().split(key + ":")[1].split()[0]) * 1024


_malloc_tuned = False


def tune_malloc() -> None:
    """Make glibc hand blocks of 128 KB and more straight back to the kernel when freed, so a
    later allocation shows up as new resident pages instead of silently reusing a cached block."""
    global _malloc_tuned
    if not _malloc_tuned:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD (fixed: no dynamic raising)
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
        _malloc_tuned = True


class PeakRSS:
    """Peak resident memory added inside the block (CPU, Linux): the kernel's high-water mark
    (VmHWM, reset through /proc/self/clear_refs) minus the resident set at entry. malloc is told to
    hand large blocks straight back to the kernel, so freed memory is not silently reused and the
    mark counts every allocation the block makes."""

    def __enter__(self):
        tune_malloc()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        self.base = _status_bytes("VmRSS")
        return self

    def __exit__(self, *exc):
        self.used = max(0, _status_bytes("VmHWM") - self.base)


def measure(fn: Callable[[], object], device: torch.device, repeats: int = 3) -> tuple[float, float]:
    """(median seconds, peak bytes) of ``fn`` after one warm-up call."""
    if device.type == "cpu":
        tune_malloc()  # before the warm-up, so its blocks are not cached for the measured runs
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times), float(torch.cuda.max_memory_allocated(device) - base)
    times = []
    with PeakRSS() as peak:
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times), float(peak.used)


def run_engine_bench(variants: Iterable[str] | None = None, ns: Iterable[int] = (1024, 2048, 4096, 8192, 16384),
                     d: int = 64, heads: int = 8, batch: int = 1, device: str = "cpu",
                     dtype: torch.dtype = torch.float32, causal: bool = False, repeats: int = 3,
                     max_quadratic_n: int = 16384, progress: Callable[[str], None] | None = None) -> list[Row]:
    """Time every variant (default: all that can run at these settings) at each N.

    Quadratic variants and the naive exact baseline are skipped above ``max_quadratic_n``
    (their N×N matrix would not fit); the row says so."""
    dev = torch.device(device)
    names = list(variants) if variants is not None else [
        s.name for s in list_variants() if (s.causal or not causal)]
    rows: list[Row] = []
    for n in ns:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(batch, heads, n, d, generator=g).to(dev, dtype) for _ in range(3))
        baselines: dict[str, Row] = {}
        for label, fn in ((NAIVE, naive_exact), (FUSED, fused_exact)):
            if label == NAIVE and n > max_quadratic_n:
                row = Row(label, n, None, None, None, error=f"skipped: N×N above N = {max_quadratic_n}")
            else:
                sec, mem = measure(lambda: fn(q, k, v, causal), dev, repeats)
                flops = 2.0 * batch * heads * n * n * 2 * d * (0.5 if causal else 1)
                row = Row(label, n, sec, mem, flops)
            baselines[label] = row
            rows.append(row)
            if progress:
                progress(f"N={n} {label}: {row.seconds}")
        for name in names:
            spec = get_variant(name)
            if not spec.subquadratic and n > max_quadratic_n:
                rows.append(Row(name, n, None, None, None, error=f"skipped: quadratic above N = {max_quadratic_n}"))
                continue
            try:
                sec, mem = measure(lambda: run(name, q, k, v, causal=causal).out, dev, repeats)
                cost = spec.cost_at(Shape(batch, heads, n, d, d, causal=causal))
                row = Row(name, n, sec, mem, cost.flops)
            except (XvizError, RuntimeError) as exc:
                row = Row(name, n, None, None, None, error=f"{type(exc).__name__}: {exc}"[:200])
            naive, fused = baselines[NAIVE], baselines[FUSED]
            if row.seconds:
                row.time_vs_naive = naive.seconds / row.seconds if naive.seconds else None
                row.time_vs_fused = fused.seconds / row.seconds if fused.seconds else None
                row.mem_vs_naive = row.peak_bytes / naive.peak_bytes if naive.peak_bytes else None
            rows.append(row)
            if progress:
                progress(f"N={n} {name}: {row.seconds}")
    return rows


def memory_growth(rows: list[Row], n_from: int, n_to: int) -> dict[str, float]:
    """Peak memory at ``n_to`` over peak memory at ``n_from``, per variant."""
    at = {(r.variant, r.n): r.peak_bytes for r in rows if r.peak_bytes}
    return {v: at[(v, n_to)] / at[(v, n_from)] for (v, n) in at if n == n_from and (v, n_to) in at and at[(v, n_from)] > 0}


def _fmt(x, spec=".3g"):
    return "" if x is None else format(x, spec)


def write_tables(rows: list[Row], folder: str | Path, title: str) -> tuple[Path, Path]:
    """Write ``engine.csv`` and ``engine.md`` into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = folder / "engine.csv", folder / "engine.md"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        w.writeheader()
        w.writerows(asdict(r) for r in rows)
    lines = [f"# {title}", "",
             "| variant | N | time (ms) | speed-up vs naive | speed-up vs fused | peak MB | memory vs naive | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.variant} | {r.n} | {_fmt(r.seconds and r.seconds * 1e3)} | {_fmt(r.time_vs_naive)} | "
                     f"{_fmt(r.time_vs_fused)} | {_fmt(r.peak_bytes and r.peak_bytes / 2**20)} | "
                     f"{_fmt(r.mem_vs_naive)} | {r.error} |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


LINEAR_TIME = ("performer", "linear", "linformer", "sliding_window", "blocked_local", "memory_compressed")


def targets_text(rows: list[Row]) -> str:
    """The issue's targets, each with its measured value."""
    lines = ["Targets:"]
    ns = sorted({r.n for r in rows})
    at = {(r.variant, r.n): r for r in rows}
    if 1024 in ns and 16384 in ns:
        growth = memory_growth(rows, 1024, 16384)
        sub = [s.name for s in list_variants() if s.subquadratic]
        for name in sorted(v for v in growth if v in sub):
            g = growth[name]
            lines.append(f"  {'met ' if g <= 20 else 'MISS'} {name}: peak memory 1K→16K grew {g:.1f}× (target ≤ 20×)")
        if NAIVE in growth:
            lines.append(f"       naive exact for reference: {growth[NAIVE]:.1f}×")
    if 4096 in ns:
        for name in LINEAR_TIME:
            r = at.get((name, 4096))
            if r and r.time_vs_naive:
                ok = r.time_vs_naive > 1
                lines.append(f"  {'met ' if ok else 'MISS'} {name} at 4K: {r.time_vs_naive:.2f}× faster than naive exact "
                             "(LRA reports 5.3–5.7× for local/Linformer/Performer on TPU)")
    for n in ns:
        r = at.get(("exact", n))
        if r and r.time_vs_fused:
            cost = 1 / r.time_vs_fused
            lines.append(f"  {'met ' if cost <= 1.1 else 'MISS'} exact path at N={n}: {cost:.2f}× the fused kernel's time (target ≤ 1.1×)")
    return "\n".join(lines)
