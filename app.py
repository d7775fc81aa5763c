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

from pages.ui import display, router, widgets  # noqa: E402
from pages.ui.sidebar import build_sidebar  # noqa: E402

st.set_page_config(page_title="xviz — efficient attention vs exact", page_icon=":material/search:", layout="wide")
display.start_run()
page = st.navigation(router.pages(), position="top")

top = st.columns([6, 1])
present = widgets.toggle("Presentation", "present", False, container=top[1],
                         help="large fonts; the sidebar and page controls are hidden")
if present:
    st.markdown(
        """<style>
        section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
        [data-testid="stExpandSidebarButton"] {display: none !important;}
        .stApp, .stMarkdown p, .stCaption, [data-testid="stMetricValue"] {font-size: 1.35rem !important;}
        h1 {font-size: 3rem !important;} h2 {font-size: 2.3rem !important;}
        [data-testid="stMetricValue"] {font-size: 2.2rem !important;}
        </style>""",
        unsafe_allow_html=True,
    )

build_sidebar()
with router.routing():
    page.run()
widgets.name_unused_link_settings()  # only when the page ran to its end: then every setting it reads exists
