"""What the pages share, kept out of ``pages/*.py`` so that Streamlit never lists a helper as a page:
the route table (``routes``), the router (``router``), the shared sidebar (``sidebar``) and its
``AppContext`` (``context``), widgets bound to the URL (``widgets``), messages and figures
(``display``), and the caches and guarded computation every page calls (``compute``)."""
