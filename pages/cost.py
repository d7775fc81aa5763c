"""Cost & scaling: measured forward time and peak memory of the chosen variants against N on the selected device
and dtype, beside their theoretical FLOPs, the roofline (achieved GFLOP/s against the matmul peak measured in
the same run), and the Long Range Arena table (speed-up and memory relative to exact attention at 1K, 2K, 3K and
4K tokens) measured here. Timing and memory come from ``xviz.analysis.bench``."""
import pandas as pd
import streamlit as st
import torch

import xviz
from pages.ui import compute, display, widgets
from pages.ui.sidebar import context
from xviz.analysis import bench
from xviz.app.jobs import Job
from xviz.figures import scaling as fx

LRA_NS = (1024, 2048, 3072, 4096)
LRA_PAPER = {  # Tay et al. 2020, Table 2 (TPU v3, batch 32): speed-up at 1K–4K, memory at 4K (GB)
    "sliding_window": ("Local", (1.1, 1.7, 3.2, 5.3), 1.37), "linformer": ("Linformer", (1.2, 1.9, 3.7, 5.5), 0.99),
    "reformer": ("Reformer", (0.5, 0.4, 0.7, 0.8), 2.28), "sinkhorn": ("Sinkhorn", (1.1, 1.6, 2.9, 3.8), 1.48),
    "bigbird": ("BigBird", (0.9, 0.8, 1.2, 1.1), 2.88), "linear": ("Linear Transformer", (1.1, 1.9, 3.7, 5.6), 1.03),
    "performer": ("Performer", (1.2, 1.9, 3.8, 5.7), 1.06),
}


def doubling(nmax: int) -> list[int]:
    ns, x = [], min(256, nmax)
    while x <= nmax:
        ns.append(x)
        x *= 2
    return ns if ns[-1] == nmax else ns + [nmax]


def measure(job: Job, settings: dict, label: str) -> list:
    """Run the engine benchmark N by N (each N a job item kept in session state), with progress; a rerun or the
    session ending interrupts between items and keeps what was measured. Finished measurements are kept for
    every session (timings are of this machine, not of a visitor)."""
    done = compute.MEASURED.peek(job.sig)
    if done is not None and not job.results:
        job.results.update(done)
    if job.running:
        bar = st.progress(0.0, text=f"{label}…")

        def one(n):
            return bench.run_engine_bench(settings["variants"], ns=(n,), progress=lambda s: bar.progress(
                min(1.0, len(job.results) / len(job.items)), text=f"{label}: {s}"), **settings["kw"])

        for _ in job.run(one, progress=lambda i, t, n: bar.progress(i / t, text=f"{label}: N = {n} ({i + 1}/{t})")):
            pass
        bar.empty()
        if job.done:
            compute.MEASURED.put(job.sig, dict(job.results))
    return [row for rows in job.ordered() for row in rows]


def scaling(rows, ctx, where: str) -> None:
    figs = fx.cost_figures(rows, font_size=ctx.font_size, device=where)
    for col, fig, nm in zip(st.columns(3), figs, ("time", "memory", "flops")):
        with col:
            display.show_figure(fig, f"cost_{nm}", ctx, key=f"fig_cost_{nm}")
    df = pd.DataFrame([{"variant": r.variant, "N": r.n, "ms": None if r.seconds is None else r.seconds * 1e3,
                        "peak MiB": None if r.peak_bytes is None else r.peak_bytes / 2**20,
                        "theoretical FLOPs": r.theory_flops, "speed-up vs naive": r.time_vs_naive,
                        "speed-up vs fused": r.time_vs_fused, "memory vs naive": r.mem_vs_naive, "note": r.error}
                       for r in rows])
    with st.expander("Measurements", expanded=False):
        st.dataframe(df, hide_index=True, width="stretch")
    display.download_csv("⬇ CSV", df, "cost_scaling", "dl_cost", ctx)
    roof = bench.roofline(rows)
    if roof:
        st.subheader("Roofline: achieved GFLOP/s in each variant's own FLOPs")
        rdf = pd.DataFrame(roof)
        st.dataframe(rdf, hide_index=True, width="stretch")
        display.download_csv("⬇ CSV", rdf, "roofline", "dl_roofline", ctx)


def lra(rows, ctx, baseline: str, where: str, settings: dict) -> None:
    table = pd.DataFrame(fx.speedup_table(rows, LRA_NS, baseline=baseline))
    for nm, (paper_name, speed, mem) in LRA_PAPER.items():
        table.loc[table["variant"] == nm, "LRA paper (TPU)"] = (f"{paper_name}: " + " / ".join(f"{s}×" for s in speed)
                                                                + f", {mem} GB")
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c_: st.column_config.NumberColumn(format="%.2f×") for c_ in table.columns
                                if c_.startswith("speed-up") or c_.startswith("memory vs")})
    display.download_csv("⬇ CSV", table, "lra_table", "dl_lra", ctx)
    kw = settings["kw"]
    st.caption(f"Measured here on {where}, heads = {kw['heads']}, d = {kw['d']}, batch 1, {kw['repeats']} timed runs "
               "after a warm-up. Speed-up = baseline time / variant time (> 1: faster). The last column is the "
               "paper's Table 2 (byte-level text, batch 32, TPU v3), for comparison.")


ctx = context()
display.page_header("Cost & scaling", ctx)
names = [s.name for s in xviz.list_variants() if s.causal or not ctx.causal]
with display.controls("What to measure", ctx):
    chosen = widgets.choices("variants", names, "cost_variants",  # a row of its own: no chip cut
                             ["sliding_window", "linformer", "performer", "reformer", "exact"],
                             help="each at its default parameters (clamped at small N); the naive and fused exact "
                                  "baselines are always measured")
    c = st.columns(4)
    nmax = widgets.number("largest N", "cost_nmax", 64, 65536, 1024, container=c[0],
                          help="N doubles from 256 (or less) up to this")
    heads = widgets.number("heads", "cost_heads", 1, 64, 4, container=c[1])
    dim = widgets.number("d", "cost_d", 8, 256, 64, container=c[2])
    repeats = widgets.number("repeats", "cost_repeats", 1, 20, 3, container=c[3],
                             help="timed runs after one warm-up; the median is shown")
device, dtype = ctx.device, getattr(torch, ctx.dtype)
where = f"{device} {ctx.dtype}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else
                                   f" ({torch.get_num_threads()} threads)")
st.caption(f"Random q, k, v of shape (1, {heads}, N, {dim}) on {where}; {'causal' if ctx.causal else 'bidirectional'}. "
           "The input chosen in the sidebar does not matter here, only its device, dtype and causal setting.")
settings = {"variants": chosen, "kw": dict(d=dim, heads=heads, device=device, dtype=dtype, causal=ctx.causal,
                                           repeats=repeats)}
sig = (tuple(chosen), heads, dim, repeats, device, ctx.dtype, ctx.causal)

st.subheader("Time, memory and FLOPs against N")
old = st.session_state.get("_cost_job")
scale_job = Job.current(old, sig + (tuple(doubling(nmax)),), doubling(nmax))
if scale_job is not old:
    scale_job.stop()  # measuring takes seconds to minutes: it runs on request, not on opening
st.session_state["_cost_job"] = scale_job
c = st.columns([1, 1, 4])
if c[0].button("Measure", type="primary", key="cost_run", help="time every chosen variant at each N"):
    scale_job.resume()
if c[1].button("↻ Measure again", key="cost_again", help="timings vary from run to run: measure afresh"):
    compute.MEASURED.put(scale_job.sig, None)
    scale_job.restart()
rows = []
with display.guard("Benchmark"):
    rows = measure(scale_job, settings, "Measuring")
if not rows:
    st.info("Press Measure: every chosen variant and both exact baselines at N = "
            f"{', '.join(map(str, doubling(nmax)))} (seconds per N on a CPU).")
else:
    scaling(rows, ctx, where)
    st.caption("Naive exact builds the N×N matrix (softmax(QKᵀ)V); fused exact is PyTorch's "
               "scaled_dot_product_attention. Memory is what the call allocates beyond its inputs"
               + (" (CPU: the resident high-water mark, which counts whole pages; small sizes read as 0)."
                  if device == "cpu" else " (CUDA allocator peak)."))

st.subheader("Speed-up and memory relative to exact attention, Long Range Arena style")
c = st.columns([1, 1, 3])
start_lra = c[0].button("Measure at 1K–4K", key="cost_lra",
                        help=f"every chosen variant and both exact baselines at N = {', '.join(map(str, LRA_NS))}")
baseline = widgets.choice("relative to", [bench.NAIVE, bench.FUSED], "cost_baseline", bench.NAIVE, container=c[1],
                          help="the Transformer of the LRA paper materialises the N×N matrix (naive); fused is "
                               "today's kernel")
lra_job = st.session_state.get("_cost_lra_job")
if start_lra or (lra_job is not None and lra_job.sig == sig) or compute.MEASURED.peek(sig) is not None:
    lra_job = Job.current(lra_job, sig, LRA_NS)
    st.session_state["_cost_lra_job"] = lra_job
    with display.guard("LRA benchmark"):
        lra_rows = measure(lra_job, settings, "Long Range Arena sizes")
    if lra_rows:
        lra(lra_rows, ctx, baseline, where, settings)
else:
    st.info("Press 'Measure at 1K–4K' to fill the table (a few seconds per variant on a CPU).")
