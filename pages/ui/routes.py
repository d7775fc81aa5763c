"""The route table: every page of the app, read by ``app.py`` (``st.navigation``), by every cross-page
link, and by the tests. Pure data (no streamlit import)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    name: str  # the URL path (/explorer) and the file pages/<name>.py
    title: str  # the page's heading
    icon: str
    summary: str  # one line, for the README and the tests
    default: bool = False
    nav: str = ""  # a shorter navigation label (every page fits the top bar at 1,400 px), else the title

    @property
    def label(self) -> str:
        return self.nav or self.title

    @property
    def file(self) -> str:
        return f"pages/{self.name}.py"


ROUTES = (
    Route("explorer", "Explorer", ":material/search:", "one variant against exact attention: error panel, "
          "heatmaps, query inspector, artifacts, the state of recurrences", default=True),
    Route("patterns", "Patterns", ":material/grid_on:", "every sparse pattern: density, mass kept, reachability"),
    Route("compare", "Compare", ":material/scatter_plot:", "every variant at one budget: table and error-cost scatter"),
    Route("lsh", "LSH & clustering", ":material/tag:", "buckets, sorted matrix, missed keys, collision probability",
          nav="LSH"),
    Route("spectra", "Spectra", ":material/equalizer:", "singular values, Eckart–Young bound, low-rank variants"),
    Route("sweeps", "Sweeps", ":material/show_chart:", "error against a parameter, N or the logit scale"),
    Route("decoding", "Decoding", ":material/fast_forward:", "KV-cache policies step by step: what is kept, what "
          "it costs"),
    Route("real_model", "Real model", ":material/neurology:", "the model's layers and heads, any variant's error map"),
    Route("cost", "Cost & scaling", ":material/speed:", "measured time and memory against N, the roofline",
          nav="Cost"),
    Route("check", "Check a variant", ":material/task_alt:", "the sanity-check battery on any registered variant",
          nav="Check"),
)
BY_NAME = {r.name: r for r in ROUTES}


def route(name: str) -> Route:
    return BY_NAME[name]
