"""Check a variant: the sanity-check battery of ``python -m xviz check`` on any registered variant —
a built-in one or your own plugin (loaded through XVIZ_PLUGINS or the ``xviz.variants`` entry points;
nothing uploaded here is ever executed). One row per check, PASS / FAIL / SKIP / INFO with the
measured number and its tolerance, the sweeps as figures, and the HTML report to download."""

import pandas as pd
import streamlit as st

import xviz
from pages.ui import display, widgets
from pages.ui.sidebar import context
from xviz.analysis import check
from xviz.figures import report


def run_battery(name: str, quick: bool, store: dict) -> None:
    spec = xviz.get_variant(name)
    labels = [label for label, _ in check.battery(spec, quick)]
    bar = st.progress(0.0, text="starting")
    done = []

    def step(r):
        done.append(r)
        bar.progress(len(done) / len(labels), text=f"{r.status} {r.check}")

    with display.guard("The checks"):
        store[(name, quick)] = check.check_variant(name, quick=quick, progress=step)
    bar.empty()


def verdicts(name: str, results, ctx) -> None:
    failed = [r for r in results if r.status == check.FAIL]
    if failed:
        display.say("error", f"{len(failed)} check(s) failed: {', '.join(r.check for r in failed)}")
    else:
        st.success("All checks passed.")
    df = pd.DataFrame([{"status": r.status, "check": r.check,
                        "measured": "" if r.measured is None else check.short_number(r.measured),
                        "tolerance": "" if r.tolerance is None else check.short_number(r.tolerance), "note": r.message}
                       for r in results])
    colours = {"PASS": "color: #1a7f37", "FAIL": "color: #cf222e; font-weight: bold", "SKIP": "color: #6e7781",
               "INFO": "color: #0969da"}
    st.dataframe(df.style.map(lambda v: colours.get(v, ""), subset=["status"]), hide_index=True, width="stretch",
                 height=35 * (len(df) + 1) + 3)
    for i, fig in enumerate(report.report_figures(name, results)):
        display.show_figure(fig, f"check-{name}-{i}", ctx, key=f"chk_fig_{i}")
    st.download_button("⬇ HTML report", data=lambda: report.report_html(name, results),
                       file_name=f"xviz-check-{name}.html", mime="text/html", key="chk_report", on_click="ignore")


ctx = context()
display.page_header("Check a variant", ctx)
st.caption("The battery runs on its own seeded random inputs (float64 where it checks identities), not on the "
           "sidebar's input, so its verdicts do not depend on what you are looking at.")
specs = xviz.list_variants()
names = [s.name for s in specs]
plugins = sorted(s.name for s in specs if not s.builtin)
with display.controls("Variant", ctx):
    c = st.columns([3, 1])
    name = widgets.choice("variant", names, "chk_variant", "sink_window" if "sink_window" in names else "performer",
                          container=c[0], help="every registered variant: the built-in catalog and any loaded plugin")
    quick = widgets.toggle("quick", "chk_quick", False, container=c[1],
                           help="skip the logit-scale and length sweeps and the complexity fit (seconds instead of "
                                "tens of seconds)")
    st.caption("Your own variant: register it with `xviz.register_variant` in a module and start the app with "
               "`XVIZ_PLUGINS=your_module` (see the README's tutorial). "
               + (f"Plugins loaded now: {display.escape(', '.join(plugins))}." if plugins else "No plugin is loaded now."))
    go = st.button("Run the checks", type="primary", key="chk_run")
spec = xviz.get_variant(name)
origin = "built-in" if spec.builtin else "plugin: " + spec.module
st.markdown(f"**{display.escape(spec.display_name)}** ({display.escape(origin)}) · {display.escape(spec.family)} · "
            f"{display.escape(spec.complexity)}  \n{display.escape(spec.paper)}")
store = st.session_state.setdefault("_check_results", {})
if go:
    run_battery(name, quick, store)
results = store.get((name, quick))
if results is None:
    st.info("Press **Run the checks**: the quick battery takes a few seconds, the full one up to a minute.")
    st.stop()
verdicts(name, results, ctx)
