"""The app's Streamlit-free helpers, in one place: the URL settings as plain data (``settings``), caches
bounded by bytes (``cache``), resumable work (``jobs``), the per-session allowance of heavy work
(``allowance``) and the LSH page's views (``lsh_views``). The pages bind them to widgets; nothing here
imports streamlit, so each is tested as plain Python."""
