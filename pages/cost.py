"""Cost & scaling: measured forward time and peak memory of the chosen variants against N on the selected device
and dtype, beside their theoretical FLOPs, and the Long Range Arena table (speed-up and memory relative to exact
attention at 1K, 2K, 3K and 4K tokens) measured here. Timing and memory come from ``xviz.bench``: CUDA events on a
GPU, the median of repeated runs on a CPU, both after a warm-up; peak memory from the CUDA allocator or the
process's resident high-water mark."""
import pandas as pd
import streamlit as st
import torch

import xviz
from pages import common
from xviz import appstate
from xviz.analysis import bench
from xviz.figures import explain as fx

STATE = "_cost_state"
LRA_STATE = "_cost_lra_state"
LRA_NS = (1024, 2048, 3072, 4096)
LRA_PAPER = {  # Tay et al. 2020, Table 2 (TPU v3, batch 32): speed-up at 1K–4K, memory at 4K (GB)
    "sliding_window": ("Local", (1.1, 1.7, 3.2, 5.3), 1.37), "linformer": ("Linformer", (1.2, 1.9, 3.7, 5.5), 0.99),
    "reformer": ("Reformer", (0.5, 0.4, 0.7, 0.8), 2.28), "sinkhorn": ("Sinkhorn", (1.1, 1.6, 2.9, 3.8), 1.48),
    "bigbird": ("BigBird", (0.9, 0.8, 1.2, 1.1), 2.88), "linear": ("Linear Transformer", (1.1, 1.9, 3.7, 5.6), 1.03),
    "performer": ("Performer", (1.2, 1.9, 3.8, 5.7), 1.06),
}

ctx = common.context()
common.page_header("Cost & scaling", ctx)
specs = xviz.list_variants()
names = [s.name for s in specs if s.causal or not ctx.causal]
raw = st.query_params.to_dict()
messages = appstate.check_choice(raw, "cost_baseline", (bench.NAIVE, bench.FUSED))

with common.controls("What to measure", ctx):
    c = st.columns([3, 1, 1, 1, 1])
    default = [x for x in ("sliding_window", "linformer", "performer", "reformer", "exact") if x in names]
    chosen = c[0].multiselect("variants", names, default=default, key="cost_variants", bind=common.BIND,
                              help="each at its default parameters (clamped at small N); the naive and fused exact "
                                   "baselines are always measured")
    nmax = int(c[1].number_input("largest N", min_value=64, max_value=65536, value=1024, step=64, key="cost_nmax",
                                 bind=common.BIND, help="N doubles from 256 (or less) up to this"))
    heads = int(c[2].number_input("heads", min_value=1, max_value=64, value=4, step=1, key="cost_heads",
                                  bind=common.BIND))
    dim = int(c[3].number_input("d", min_value=8, max_value=256, value=64, step=8, key="cost_d", bind=common.BIND))
    repeats = int(c[4].number_input("repeats", min_value=1, max_value=20, value=3, step=1, key="cost_repeats",
                                    bind=common.BIND, help="timed runs after one warm-up; the median is shown"))
common.link_messages(messages)
start = min(256, nmax)
ns = []
x = start
while x <= nmax:
    ns.append(x)
    x *= 2
if ns[-1] != nmax:
    ns.append(nmax)
device, dtype = ctx.device, getattr(torch, ctx.dtype)
where = f"{device} {ctx.dtype}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else
                                   f" ({torch.get_num_threads()} threads)")
st.caption(f"Random q, k, v of shape (1, {heads}, N, {dim}) on {where}; {'causal' if ctx.causal else 'bidirectional'}. "
           "The input chosen in the sidebar does not matter here, only its device, dtype and causal setting.")


def measure(ns_, key: str, label: str) -> list:
    """Run the engine benchmark N by N (partial results stay in session state), with progress."""
    sig = (tuple(chosen), tuple(ns_), heads, dim, repeats, device, ctx.dtype, ctx.causal)
    state = st.session_state.get(key)
    if state is None or state["sig"] != sig:
        state = {"sig": sig, "rows": [], "done_ns": []}
        st.session_state[key] = state
    todo = [m for m in ns_ if m not in state["done_ns"]]
    if todo:
        bar = st.progress(0.0, text=f"{label}…")
        for i, m in enumerate(todo):
            bar.progress(i / len(todo), text=f"{label}: N = {m} ({i + 1}/{len(todo)})")
            state["rows"] += bench.run_engine_bench(chosen, ns=(m,), d=dim, heads=heads, device=device, dtype=dtype,
                                                    causal=ctx.causal, repeats=repeats,
                                                    progress=lambda s: bar.progress(i / len(todo), text=f"{label}: {s}"))
            state["done_ns"].append(m)
        bar.empty()
    return state["rows"]


# ------------------------------------------------------------------------------------------------ scaling
st.subheader("Time, memory and FLOPs against N")
again = st.button("↻ Measure again", key="cost_again", help="timings vary from run to run: measure afresh")
if again:
    st.session_state.pop(STATE, None)
rows = []
with common.guard("Benchmark"):
    rows = measure(ns, STATE, "Measuring")
if rows:
    figs = fx.cost_figures(rows, font_size=ctx.font_size, device=where)
    cols = st.columns(3)
    for col, fig, nm in zip(cols, figs, ("time", "memory", "flops")):
        with col:
            common.show_figure(fig, f"cost_{nm}", ctx, key=f"fig_cost_{nm}")
    df = pd.DataFrame([{"variant": r.variant, "N": r.n, "ms": None if r.seconds is None else r.seconds * 1e3,
                        "peak MiB": None if r.peak_bytes is None else r.peak_bytes / 2**20,
                        "theoretical FLOPs": r.theory_flops, "speed-up vs naive": r.time_vs_naive,
                        "speed-up vs fused": r.time_vs_fused, "memory vs naive": r.mem_vs_naive, "note": r.error}
                       for r in rows])
    with st.expander("Measurements", expanded=False):
        st.dataframe(df, hide_index=True, width="stretch")
    common.download_csv("⬇ CSV", df, "cost_scaling", "dl_cost", ctx)
    st.caption("Naive exact builds the N×N matrix (softmax(QKᵀ)V); fused exact is PyTorch's "
               "scaled_dot_product_attention. Memory is what the call allocates beyond its inputs"
               + (" (CPU: the resident high-water mark, which counts whole pages; small sizes read as 0)."
                  if device == "cpu" else " (CUDA allocator peak)."))

# ------------------------------------------------------------------------------------------------ LRA table
st.subheader("Speed-up and memory relative to exact attention, Long Range Arena style")
c = st.columns([1, 1, 3])
run_lra = c[0].button("Measure at 1K–4K", key="cost_lra",
                      help=f"every chosen variant and both exact baselines at N = {', '.join(map(str, LRA_NS))}")
baseline = c[1].selectbox("relative to", [bench.NAIVE, bench.FUSED], index=0, key="cost_baseline",
                          bind=common.BIND, help="the Transformer of the LRA paper materialises the N×N matrix "
                                                 "(naive); fused is today's kernel")
lra = st.session_state.get(LRA_STATE)
if run_lra or (lra is not None and lra["sig"][:1] == (tuple(chosen),) and len(lra["done_ns"]) < len(LRA_NS)):
    with common.guard("LRA benchmark"):
        measure(LRA_NS, LRA_STATE, "Long Range Arena sizes")
lra = st.session_state.get(LRA_STATE)
if lra is not None and lra["rows"]:
    table = pd.DataFrame(fx.speedup_table(lra["rows"], LRA_NS, baseline=baseline))
    for nm, (paper_name, speed, mem) in LRA_PAPER.items():
        table.loc[table["variant"] == nm, "LRA paper (TPU)"] = (f"{paper_name}: " + " / ".join(f"{s}×" for s in speed)
                                                                + f", {mem} GB")
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c_: st.column_config.NumberColumn(format="%.2f×") for c_ in table.columns
                                if c_.startswith("speed-up") or c_.startswith("memory vs")})
    common.download_csv("⬇ CSV", table, "lra_table", "dl_lra", ctx)
    st.caption(f"Measured here on {where}, heads = {heads}, d = {dim}, batch 1, {repeats} timed runs after a "
               "warm-up. Speed-up = baseline time / variant time (> 1: faster). The last column is the paper's "
               "Table 2 (byte-level text, batch 32, TPU v3), for comparison.")
else:
    st.info("Press 'Measure at 1K–4K' to fill the table (a few seconds per variant on a CPU).")
