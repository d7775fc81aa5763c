"""Decoding: causal decoding replayed token by token under KV-cache policies — which keys each policy keeps
(a token strip per head at a step), the step's attention over the kept keys against full attention, and what
it costs over the steps (kept mass, output error, cache bytes) and against the budget. The 'generate' mode
runs a real decoder under the policies (pages/ui/generate_view.py)."""
import pandas as pd
import streamlit as st

import xviz.decode as dec
from pages.ui import compute, display, linked_view, widgets
from pages.ui.generate_view import generation_mode
from pages.ui.sidebar import context
from xviz.app.jobs import Job
from xviz.core.errors import XvizError
from xviz.figures import decode as fd
from xviz.figures import linked

DEFAULT_POLICIES = ["full", "window", "sinks", "h2o", "tova", "snapkv", "quest"]
SWEEP_BUDGETS = (16, 32, 64, 128, 256, 512, 1024, 2048)


def controls(ctx, names: list[str]):
    n = ctx.inp.k.shape[-2]
    c = st.columns([3, 1, 1, 1])
    chosen = widgets.choices("policies", names, "dec_policies", DEFAULT_POLICIES, container=c[0],
                             help="every registered KV-cache policy (xviz.decode.list_policies())")
    budget = widgets.number("budget: cached keys", "dec_budget", 1, n, min(n, max(16, n // 8)), container=c[1],
                            help="positions a step's query may read, its own new one included")
    prefill = widgets.number("prefill (prompt)", "dec_prefill", 1, n - 1, max(1, n // 2), container=c[2],
                             help="the prompt, read with full causal attention; decoding starts after it")
    head = widgets.number("head", "dec_head", 0, ctx.shape[1] - 1, 0, container=c[3])
    params = {}
    specs = [dec.get_policy(p) for p in chosen if dec.get_policy(p).params]
    if specs:
        with st.expander("Policy parameters", expanded=False):
            for spec in specs:
                cols = st.columns(max(1, len(spec.params)))
                params[spec.name] = {p.name: widgets.param_widget(p, f"pol.{spec.name}.{p.name}", n, ctx.shape[-1],
                                                                  container=cols[i])
                                     for i, p in enumerate(spec.params)}
    return chosen, budget, prefill, head, params


def replay_key(ctx, chosen, budget: int, prefill: int, params) -> tuple:
    return ctx.key("decode", tuple(chosen), budget, prefill, tuple(sorted((k, tuple(sorted(v.items())))
                                                                          for k, v in params.items())))


def replays(ctx, key: tuple, chosen, budget: int, prefill: int, params) -> list:
    return compute.REPLAYS.get(key, lambda: dec.simulate_many([(p, params.get(p, {})) for p in chosen], ctx.inp.q,
                                                       ctx.inp.k, ctx.inp.v, budget=budget, prefill=prefill))


def runnable(ctx, chosen, budget: int, prefill: int, params) -> list[str]:
    """The chosen policies whose parameters fit this budget and prompt; the others are named."""
    ok = []
    for name in chosen:
        spec = dec.get_policy(name)
        try:
            spec.resolve(params.get(name, {}), n=ctx.n, d=ctx.shape[-1], budget=budget, prefill=prefill)
            ok.append(name)
        except XvizError as exc:
            display.say("warning", f"{spec.display_name} left out: {exc}")
    return ok


def needle_marks(ctx) -> dict:
    meta = ctx.inp.meta or {}
    return {"needle": int(meta["needle"])} if "needle" in meta else {}


def what_each_keeps(ctx, results, step: int) -> None:
    st.subheader(f"What each policy keeps at step {step}")
    marks = needle_marks(ctx)
    # the full cache (every position kept: a solid bar) last, so the first tab shows a choice being made
    results = sorted(results, key=lambda r: r.policy == "full")
    tabs = st.tabs([r.label.split(" (")[0] for r in results])  # short: the parameters are in each figure's title
    for tab, r in zip(tabs, results):
        with tab, display.guard(r.label):
            fig = fd.cache_strip(r, step, marks=marks, font_size=ctx.font_size)
            display.show_figure(fig, f"cache_{r.policy}_step{step}", ctx, key=f"fig_strip_{r.policy}")
            kept = r.kept[0, :, step - r.prefill].double().mean()
            st.caption(f"{r.label}: {kept:.0f} of {step + 1} positions read on average over heads; "
                       f"kept mass {float(r.mass[0, :, step - r.prefill].mean()):.1%}, output error "
                       f"{float(r.error[0, :, step - r.prefill].mean()):.3g}.")


def linked_steps(ctx, key: tuple, focus, step: int, head: int) -> None:
    """Every decoded step of one policy in the linked view: its reads (0 where a key was not kept: the
    cache strip of every step at once) against full attention, every head; hovering a row follows that
    step in every panel and the inspector, in the browser; a click makes it the step (and the head)."""
    data = compute.derived(key + ("linked", focus.policy), lambda: linked.linked_view_data(
        *focus.matrices(), ctx.tokens, names=("full cache", focus.label), window=(focus.prefill, ctx.n, 0, ctx.n),
        cap=0.99 if ctx.n > 64 else None))
    linked_view.linked_view({**data, **linked.clamp_view(data, step, step, head), "font_size": ctx.font_size + 1},
                            key="linked_decode", targets=("dec_step", None, "dec_head"))


def needle_verdict(ctx, results) -> None:
    meta = ctx.inp.meta or {}
    if "needle" not in meta:
        return
    needle, query = int(meta["needle"]), int(meta.get("query", ctx.n - 1))
    lines = []
    for r in results:
        found = dec.needle_found(r, needle, query)
        colour = "green" if bool(found.all()) else "orange" if bool(found.any()) else "red"
        lines.append(f"- **{display.escape(r.label)}**: :{colour}[found in {int(found.sum())} of {found.numel()} "
                     "heads]")
    st.info(f"**Needle at position {needle}**, asked for at position {query} ({query - needle} tokens later). "
            "Who still finds it:\n" + "\n".join(lines))


def budget_sweep(ctx, chosen, prefill: int, params) -> None:
    st.subheader("Error against budget")
    n = ctx.inp.k.shape[-2]
    budgets = [b for b in SWEEP_BUDGETS if b < n] or [max(1, n // 2)]
    sig = ctx.key("decode_sweep", tuple(chosen), prefill, tuple(budgets))
    old = st.session_state.get("_dec_sweep")
    job = Job.current(old, sig, budgets)
    if job is not old:
        job.stop()  # a new sweep waits for the button (a replay per budget)
    st.session_state["_dec_sweep"] = job
    c = st.columns([1, 5])
    if c[0].button("Run the sweep", key="dec_sweep"):
        job.resume()
    if job.running:
        bar = st.progress(0.0, text="budget sweep…")
        one = lambda b: dec.budget_sweep(chosen, [b], ctx.inp.q, ctx.inp.k, ctx.inp.v, prefill=prefill,  # noqa: E731
                                         params=params)
        for _ in job.run(one, progress=lambda i, t, b: bar.progress(i / t, text=f"budget {b} ({i + 1}/{t})")):
            pass
        bar.empty()
    rows = [row for part in job.ordered() for row in part]
    if not rows:
        c[1].caption(f"Every chosen policy at budgets {', '.join(map(str, budgets))}: a replay per budget.")
        return
    display.show_figure(fd.budget_sweep_figure(rows, font_size=ctx.font_size), "decode_budget_sweep", ctx,
                        key="fig_sweep")
    df = pd.DataFrame(rows)
    st.dataframe(df, hide_index=True, width="stretch")
    display.download_csv("⬇ CSV", df, "decode_budget_sweep", "dl_dec_sweep", ctx)


ctx = context()
display.page_header("Decoding", ctx)
if widgets.choice("mode", ["replay", "generate"], "dec_mode", "replay",
                  help="replay: policies on the input's Q, K, V; generate: a real decoder (SmolLM2) generates text "
                       "with its KV cache pruned by each policy") == "generate":
    generation_mode(ctx)
    st.stop()
if not display.require_input(ctx):
    st.stop()
if ctx.inp.cross:
    st.error("Decoding replays one sequence causally: pick an input whose keys are its own tokens.")
    st.stop()
if ctx.n < 3:
    st.error("Decoding needs at least 3 tokens (a prompt and two steps).")
    st.stop()
names = [p.name for p in dec.list_policies()]
with display.controls("Policies and budget", ctx):
    chosen, budget, prefill, head, params = controls(ctx, names)
chosen = runnable(ctx, chosen, budget, prefill, params)
if not chosen:
    st.info("Choose at least one policy that can run at this budget.")
    st.stop()
if not ctx.causal and not ctx.inp.causal:
    st.caption("Decoding is causal by definition: each step's query reads only keys before it, whatever the "
               "sidebar's causal setting.")
results = None
key = replay_key(ctx, chosen, budget, prefill, params)
with display.guard("Replay"), st.spinner(f"Replaying {ctx.n - prefill} steps under {len(chosen)} policies…"):
    results = replays(ctx, key, chosen, budget, prefill, params)
if not results:
    st.stop()
step = int(st.slider("step (the position decoded)", min_value=prefill, max_value=ctx.n - 1, value=ctx.n - 1,
                     key="dec_step", bind=widgets.BIND, help="the query at this position reads the cache"))
needle_verdict(ctx, results)
with display.guard("Cache strips"):
    what_each_keeps(ctx, results, step)
st.subheader(f"The query at step {step}, head {head}: kept keys against full attention")
pick = widgets.choice("policy", [r.policy for r in results], "dec_focus", results[-1].policy)
focus = next(r for r in results if r.policy == pick)
with display.guard("Linked view"):
    linked_steps(ctx, key, focus, step, head)
with display.guard("Step attention"):
    fig = fd.step_attention(focus, step, head=head, tokens=ctx.tokens, font_size=ctx.font_size)
    display.show_figure(fig, f"step_{focus.policy}_{step}_h{head}", ctx, key="fig_step")
st.subheader(f"What it costs over the steps, budget {budget}")
with display.guard("Curves"):
    display.show_figure(fd.decode_curves(results, font_size=ctx.font_size), f"decode_curves_b{budget}", ctx,
                        key="fig_curves")
    summary = pd.DataFrame([{"policy": r.label, **r.summary()} for r in results])
    st.dataframe(summary, hide_index=True, width="stretch")
    display.download_csv("⬇ CSV", summary, f"decode_summary_b{budget}", "dl_dec_summary", ctx)
with display.guard("Budget sweep"):
    budget_sweep(ctx, chosen, prefill, params)
st.caption(f"Budget {budget} of {ctx.n} positions; prompt {prefill} tokens; {ctx.n - prefill} decoding steps.")
