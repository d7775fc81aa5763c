"""xviz app: `streamlit run app.py`.

A router over the route table (pages/ui/routes.py) plus the shared sidebar (input, shape, causal,
device, dtype, seed). Every setting lives in the URL, so the address bar reproduces what is on screen.
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled model is local; never reach the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import streamlit as st  # noqa: E402

from pages.ui import router  # noqa: E402  (light: the route table; the heavy imports come after the skeleton)

# Presentation: large type, no sidebar, and no control on the page (they still run: the URL sets them); the
# toggle stays, pinned in the top bar, so the first screen shows the title, the input and the main figure.
CONTROLS = ", ".join(f'[data-testid="{t}"]' for t in (
    "stNumberInput", "stSelectbox", "stSlider", "stMultiSelect", "stTextArea", "stTextInput", "stCheckbox",
    "stRadio", "stButton", "stDownloadButton", "stSelectSlider"))
PRESENT_CSS = f"""<style>
section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
[data-testid="stExpandSidebarButton"] {{display: none !important;}}
[data-testid="stMain"] .stElementContainer:not(.st-key-present):has({CONTROLS}) {{display: none !important;}}
[class*="st-key-xviz_controls"] {{display: none !important;}}
.st-key-present {{position: fixed !important; top: 0.7rem; right: 1.5rem; z-index: 1000000; width: auto !important;}}
[data-testid="stMainBlockContainer"] {{padding-top: 2.5rem !important;}}
.stApp, .stMarkdown p, .stCaption, [data-testid="stMetricValue"] {{font-size: 1.35rem !important;}}
h1 {{font-size: 2.2rem !important; padding: 0 !important;}} h2 {{font-size: 2rem !important;}}
[data-testid="stMetricValue"] {{font-size: 2.2rem !important;}}
.stElementContainer:has([data-testid="stDataFrame"], [data-testid="stTable"]) {{zoom: 1.35;
  width: calc(100% / 1.35) !important;}}
</style>"""

st.set_page_config(page_title="xviz — efficient attention vs exact", page_icon=":material/search:", layout="wide")
page = st.navigation(router.pages(), position="top")
# The first run after the server started imports torch, transformers and plotly (seconds on a small
# machine): the page's title and a line saying so are drawn first, instead of a blank page.
skeleton = st.empty()
if "xviz" not in sys.modules:
    with skeleton.container():
        st.title(next((r.title for r in router.ROUTES if r.name == page.url_path), page.title))
        st.caption("Starting: loading the attention library (once, after the server started)…")

from pages.ui import display, widgets  # noqa: E402
from pages.ui.sidebar import build_sidebar  # noqa: E402

skeleton.empty()
display.start_run()

top = st.columns([5, 1.3])  # room for the toggle's whole label
present = widgets.toggle("Presentation", "present", False, container=top[1],
                         help="large fonts; the sidebar and page controls are hidden")
if present:
    st.markdown(PRESENT_CSS, unsafe_allow_html=True)

build_sidebar()
with router.routing():
    page.run()
widgets.name_unused_link_settings()  # only when the page ran to its end: then every setting it reads exists
