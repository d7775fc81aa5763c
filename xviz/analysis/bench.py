"""Engine benchmark: forward time and peak memory of every variant against N, as ratios to exact
attention measured in the same run, both a naive exact (softmax(QKᵀ)V, the N×N matrix built) and
PyTorch's fused ``scaled_dot_product_attention``, and against the machine: the throughput of a
plain large matmul measured at each N in the same run (``matmul_peak``), so every row also says
what share of it the variant reaches in its own FLOPs (``result.cost.flops`` / time: the roofline).

CUDA: CUDA events after warm-up, peak from ``torch.cuda.max_memory_allocated``. CPU: the median of
repeated runs after warm-up; peak memory is the kernel's resident high-water mark during the runs
minus the resident set before them (``PeakRSS``), so it counts what the variant allocates, inputs
excluded.

The targets (``xviz.analysis.targets``) are pure functions of the rows, so they are tested on synthetic rows;
peer implementations (``benchmarks/peers.py``, a benchmark-only extra) give ``PeerRow``s.
"""
from __future__ import annotations

import csv
import statistics
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..core.engine import run
from ..core.memory import libc
from ..core.errors import ParameterError, XvizError
from ..core.registry import Shape, get_variant, list_variants
from .targets import peer_targets, targets_text

NAIVE, FUSED = "naive exact", "fused exact"
EXTRA_CONFIGS = ("prior[bias=gaussian]",)


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
    gflops: float | None = None  # theory_flops / seconds / 1e9
    peak_gflops: float | None = None  # the plain matmul's GFLOP/s in the same run at this N
    peak_share: float | None = None  # gflops / peak_gflops
    family: str = ""


@dataclass
class PeerRow:
    """One peer implementation and the xviz variant, same shapes, same run."""

    variant: str
    peer: str
    n: int
    xviz_seconds: float | None
    peer_seconds: float | None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """xviz time / peer time (> 1: xviz is slower)."""
        if self.xviz_seconds and self.peer_seconds:
            return self.xviz_seconds / self.peer_seconds
        return None


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


def tune_malloc(strict: bool = True) -> None:
    """strict: make glibc hand blocks of 128 KB and more straight back to the kernel when freed, so a
    later allocation shows up as new resident pages instead of silently reusing a cached block (what
    ``PeakRSS`` needs). Not strict: let it keep freed blocks (what a program normally gets, and what
    timings must see: with strict settings every large allocation page-faults afresh, which would
    charge an algorithm for its allocation count rather than its work)."""
    c = libc()
    if c is None:
        return
    limit = 128 * 1024 if strict else 1 << 30
    c.mallopt(-3, limit)  # M_MMAP_THRESHOLD (fixed: no dynamic raising)
    c.mallopt(-1, limit)  # M_TRIM_THRESHOLD
    if strict:
        c.malloc_trim(0)  # hand back what the relaxed setting kept, so it cannot be reused unseen


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
    """(median seconds, peak bytes) of ``fn`` after one warm-up call. CPU: the memory from one call
    under ``PeakRSS`` with the strict allocator, then the timings with the allocator as programs
    normally have it (another warm-up first)."""
    if device.type == "cuda":
        fn()
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
    tune_malloc(strict=True)  # before the warm-up, so its blocks are not cached for the measured run
    try:
        fn()
        with PeakRSS() as peak:
            fn()
    finally:
        tune_malloc(strict=False)
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), float(peak.used)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of one plain square matmul (2·size³ FLOPs): the machine's reachable peak in this
    dtype, measured now (the best of ``repeats``: the other numbers compete with the same load)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2.0 * size**3 / best


def device_label(device: torch.device) -> str:
    """The machine, named: the GPU, or the CPU model and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def parse_config(label: str) -> tuple[str, dict]:
    """"prior[bias=gaussian,strength=2]" → ("prior", {"bias": "gaussian", "strength": "2"})."""
    if "[" not in label:
        return label, {}
    name, rest = label.split("[", 1)
    items = [item for item in rest.rstrip("]").split(",") if item]
    if not label.endswith("]") or any("=" not in item for item in items):
        raise ParameterError(f"{label[:80]!r}: a configuration is written name[param=value,...], e.g. "
                             f"prior[bias=gaussian].")
    return name, dict(item.split("=", 1) for item in items)


def default_variants(causal: bool) -> list[str]:
    names = [s.name for s in list_variants() if (s.causal or not causal)]
    return names + [c for c in EXTRA_CONFIGS if parse_config(c)[0] in names]


def run_engine_bench(variants: Iterable[str] | None = None, ns: Iterable[int] = (1024, 2048, 4096, 8192, 16384),
                     d: int = 64, heads: int = 8, batch: int = 1, device: str = "cpu",
                     dtype: torch.dtype = torch.float32, causal: bool = False, repeats: int = 3,
                     max_quadratic_n: int = 16384, progress: Callable[[str], None] | None = None) -> list[Row]:
    """Time every variant (default: all that can run at these settings, plus ``EXTRA_CONFIGS``;
    a label "name[param=value,…]" runs a variant at those parameters) at each N.

    Quadratic variants and the naive exact baseline are skipped above ``max_quadratic_n``
    (their N×N matrix would not fit); the row says so."""
    dev = torch.device(device)
    names = list(variants) if variants is not None else default_variants(causal)
    rows: list[Row] = []
    ns = list(ns)
    # the peak's matmul: 2048 on a CPU, smaller when only small N are benched (a 2048² bfloat16 matmul takes
    # tens of seconds on a CPU without bfloat16 units: a bench at N = 16 would wait minutes for its roofline)
    peak_size = None if dev.type == "cuda" else min(2048, max(256, max(ns, default=256)))
    for n in ns:
        peak = matmul_peak(dev, dtype, peak_size)
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(batch, heads, n, d, generator=g).to(dev, dtype) for _ in range(3))
        baselines: dict[str, Row] = {}
        for label, fn in ((NAIVE, naive_exact), (FUSED, fused_exact)):
            if label == NAIVE and n > max_quadratic_n:
                row = Row(label, n, None, None, None, error=f"skipped: N×N above N = {max_quadratic_n}")
            else:
                sec, mem = measure(lambda: fn(q, k, v, causal), dev, repeats)
                flops = 2.0 * batch * heads * n * n * 2 * d * (0.5 if causal else 1)
                row = Row(label, n, sec, mem, flops, family="exact")
            baselines[label] = _with_roofline(row, peak)
            rows.append(row)
            if progress:
                progress(f"N={n} {label}: {row.seconds}")
        for label in names:
            row = _variant_row(label, n, q, k, v, causal, dev, repeats, max_quadratic_n, batch, heads, d)
            naive, fused = baselines[NAIVE], baselines[FUSED]
            if row.seconds:
                row.time_vs_naive = naive.seconds / row.seconds if naive.seconds else None
                row.time_vs_fused = fused.seconds / row.seconds if fused.seconds else None
                row.mem_vs_naive = row.peak_bytes / naive.peak_bytes if naive.peak_bytes else None
            rows.append(_with_roofline(row, peak))
            if progress:
                progress(f"N={n} {label}: {row.seconds}")
    return rows


def _variant_row(label, n, q, k, v, causal, dev, repeats, max_quadratic_n, batch, heads, d) -> Row:
    name, params = parse_config(label)
    try:
        spec = get_variant(name)
    except XvizError as exc:
        return Row(label, n, None, None, None, error=str(exc)[:200])
    if not spec.subquadratic and n > max_quadratic_n:
        return Row(label, n, None, None, None, error=f"skipped: quadratic above N = {max_quadratic_n}",
                   family=spec.family)
    try:
        sec, mem = measure(lambda: run(name, q, k, v, causal=causal, **params).out, dev, repeats)
        cost = spec.cost_at(Shape(batch, heads, n, d, d, causal=causal), params)
        return Row(label, n, sec, mem, cost.flops, family=spec.family)
    except (XvizError, RuntimeError) as exc:
        return Row(label, n, None, None, None, error=f"{type(exc).__name__}: {exc}"[:200], family=spec.family)


def _with_roofline(row: Row, peak: float) -> Row:
    row.peak_gflops = peak / 1e9
    if row.seconds and row.theory_flops:
        row.gflops = row.theory_flops / row.seconds / 1e9
        row.peak_share = row.gflops / row.peak_gflops
    return row


# ----------------------------------------------------------------------------------------------- tables

def roofline(rows: list[Row]) -> list[dict]:
    """One record per variant: achieved GFLOP/s and share of the measured matmul peak at each N
    (keys "gflops@N", "share@N"), for the Markdown/CSV tables and the app."""
    ns = sorted({r.n for r in rows})
    order: dict[str, dict] = {}
    for r in rows:
        rec = order.setdefault(r.variant, {"variant": r.variant, "family": r.family})
        rec[f"gflops@{r.n}"] = r.gflops
        rec[f"share@{r.n}"] = r.peak_share
    peaks = {r.n: r.peak_gflops for r in rows if r.peak_gflops}
    recs = [{"variant": "matmul peak", "family": "", **{f"gflops@{n}": peaks.get(n) for n in ns},
             **{f"share@{n}": 1.0 for n in ns if n in peaks}}]
    return recs + list(order.values())


def _fmt(x, spec=".3g"):
    return "" if x is None else format(x, spec)


def _write_csv(path: Path, records: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in records for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(records)


def write_tables(rows: list[Row], folder: str | Path, title: str, peers: list[PeerRow] | None = None) -> tuple[Path, Path]:
    """Write ``engine.csv``/``engine.md`` (with the targets), ``roofline.csv``/``roofline.md`` and,
    given peers, ``peers.csv``/``peers.md`` into ``folder``; returns the engine tables' paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = folder / "engine.csv", folder / "engine.md"
    _write_csv(csv_path, [asdict(r) for r in rows])
    lines = [f"# {title}", "",
             "| variant | N | time (ms) | speed-up vs naive | speed-up vs fused | GFLOP/s | share of matmul peak | "
             "peak MB | memory vs naive | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.variant} | {r.n} | {_fmt(r.seconds and r.seconds * 1e3)} | {_fmt(r.time_vs_naive)} | "
                     f"{_fmt(r.time_vs_fused)} | {_fmt(r.gflops)} | {_fmt(r.peak_share, '.1%')} | "
                     f"{_fmt(r.peak_bytes and r.peak_bytes / 2**20)} | {_fmt(r.mem_vs_naive)} | {r.error} |")
    lines += ["", "```", targets_text(rows, peers), "```"]
    md_path.write_text("\n".join(lines) + "\n")
    recs = roofline(rows)
    _write_csv(folder / "roofline.csv", recs)
    ns = sorted({r.n for r in rows})
    rl = [f"# Roofline: {title}", "", "Achieved GFLOP/s in the variant's own FLOPs (`cost.flops` / time) and its share "
          "of a plain matmul measured at the same N in the same run.", "",
          "| variant | family | " + " | ".join(f"N = {n}" for n in ns) + " |", "|---|---|" + "---|" * len(ns)]
    for rec in recs:
        cells = [f"{_fmt(rec.get(f'gflops@{n}'), '.1f')} ({_fmt(rec.get(f'share@{n}'), '.1%')})"
                 if rec.get(f"gflops@{n}") is not None else "" for n in ns]
        rl.append(f"| {rec['variant']} | {rec['family']} | " + " | ".join(cells) + " |")
    (folder / "roofline.md").write_text("\n".join(rl) + "\n")
    if peers:
        write_peer_tables(peers, folder, title)
    return csv_path, md_path


def write_peer_tables(peers: list[PeerRow], folder: str | Path, title: str) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_csv(folder / "peers.csv", [{**{f.name: getattr(p, f.name) for f in fields(p)}, "ratio": p.ratio}
                                      for p in peers])
    lines = [f"# Peers: {title}", "", "Each peer configured to the same math as the xviz variant (see "
             "benchmarks/peers.py for where they differ); ratio = xviz time / peer time, same shapes, same run.", "",
             "| variant | peer | N | xviz (ms) | peer (ms) | ratio | note |", "|---|---|---|---|---|---|---|"]
    for p in peers:
        lines.append(f"| {p.variant} | {p.peer} | {p.n} | {_fmt(p.xviz_seconds and p.xviz_seconds * 1e3)} | "
                     f"{_fmt(p.peer_seconds and p.peer_seconds * 1e3)} | {_fmt(p.ratio)} | {p.note} |")
    lines += ["", "```", "\n".join(["Targets:"] + [t.line() for t in peer_targets(peers)]), "```"]
    path = folder / "peers.md"
    path.write_text("\n".join(lines) + "\n")
    return path
