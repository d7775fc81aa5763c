"""xviz app: `streamlit run app.py`.

A router over the pages in pages/ plus the shared sidebar (input, shape, causal, device, dtype,
seed). Every setting lives in the URL, so the address bar reproduces what is on screen.
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled model is local; never reach the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import streamlit as st  # noqa: E402

st.set_page_config(page_title="xviz — efficient attention vs exact", page_icon=":material/search:", layout="wide")

from pages import common  # noqa: E402

PAGES = [
    st.Page("pages/explorer.py", title="Explorer", icon=":material/search:", default=True, url_path="explorer"),
    st.Page("pages/patterns.py", title="Patterns", icon=":material/grid_on:", url_path="patterns"),
    st.Page("pages/compare.py", title="Compare", icon=":material/scatter_plot:", url_path="compare"),
    st.Page("pages/lsh.py", title="LSH & clustering", icon=":material/tag:", url_path="lsh"),
    st.Page("pages/spectra.py", title="Spectra", icon=":material/equalizer:", url_path="spectra"),
    st.Page("pages/sweeps.py", title="Sweeps", icon=":material/show_chart:", url_path="sweeps"),
    st.Page("pages/real_model.py", title="Real model", icon=":material/neurology:", url_path="real_model"),
    st.Page("pages/cost.py", title="Cost & scaling", icon=":material/speed:", url_path="cost"),
    st.Page("pages/check.py", title="Check a variant", icon=":material/task_alt:", url_path="check"),
]
page = st.navigation(PAGES, position="top")

top = st.columns([6, 1])
with top[1]:
    present = st.toggle("Presentation", value=False, key="present", bind=common.BIND,
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

ctx = common.build_sidebar()
page.run()
