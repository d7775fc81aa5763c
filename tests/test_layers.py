"""The layers hold: the library never imports streamlit, pages use no private Streamlit API, a variant
imports only core and kernels, and a plugin's typed artifacts are drawn without the product knowing it."""
import ast
import subprocess
import sys
from pathlib import Path

import torch

import xviz
from xviz import figures
from xviz.core.registry import Artifact
from xviz.kernels.costs import sparse_cost

from .conftest import make_qkv

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ("." * node.level) + (node.module or "")
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def test_the_library_never_imports_streamlit():
    bad = [str(p.relative_to(ROOT)) for p in (ROOT / "xviz").rglob("*.py")
           if any(m == "streamlit" or m.startswith("streamlit.") for m in imports(p))]
    assert not bad, bad
    code = "import sys, xviz, xviz.figures, xviz.analysis.check, xviz.decode; assert 'streamlit' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_pages_use_no_private_streamlit_api():
    files = [ROOT / "app.py", *(ROOT / "pages").rglob("*.py")]
    bad = [str(p.relative_to(ROOT)) for p in files
           if any(m.startswith("streamlit.runtime") or ".runtime." in m for m in imports(p))]
    assert not bad, bad


def test_variants_import_only_core_and_kernels():
    bad = {}
    for p in (ROOT / "xviz" / "variants").glob("*.py"):
        if p.name == "__init__.py":
            continue
        rel = [m for m in imports(p) if m.startswith(".")]
        wrong = [m for m in rel if not (m.startswith("..core") or m.startswith("..kernels"))]
        if wrong:
            bad[p.name] = wrong
    assert not bad, bad


def test_pages_folder_holds_only_pages():
    """Every .py directly in pages/ is a routed page (Streamlit lists that folder's files): helpers live in
    pages/ui/."""
    from pages.ui.routes import ROUTES

    assert {p.name for p in (ROOT / "pages").glob("*.py")} == {Path(r.file).name for r in ROUTES}


def test_a_plugins_typed_artifacts_get_figures():
    """A variant the product has never heard of: its artifacts are drawn by their declared kinds."""
    def fn(q, k, v, ctx):
        n = q.shape[-2]
        keep = torch.ones(n, n, dtype=torch.bool).tril()
        return xviz.Output(out=v, matrix=lambda: torch.eye(n, dtype=v.dtype).expand(*q.shape[:2], n, n), artifacts={
            "who_reads_whom": keep[None, None], "colour_of_token": torch.arange(n) % 3,
            "my_points": torch.randn(1, 1, 5, q.shape[-1]), "my_curve": torch.linspace(0, 1, n)})

    spec = xviz.VariantSpec(
        name="test_typed_artifacts", display_name="typed", family="fixed pattern", paper="none", complexity="O(N)",
        complexity_class="linear", fn=fn, cost=lambda s: sparse_cost(s, 1),
        artifacts=(Artifact("who_reads_whom", "mask", ("b", "h", "N", "N"), "a pattern"),
                   Artifact("colour_of_token", "ids", ("N",), "a group per token"),
                   Artifact("my_points", "points", ("B", "H", "m", "d"), "points"),
                   Artifact("my_curve", "curve", ("N",), "a curve")))
    xviz.register_variant(spec)
    try:
        q, k, v = make_qkv(b=1, h=1, n=12)
        r = xviz.run("test_typed_artifacts", q, k, v)
        kinds = {}
        for name in r.artifacts:
            figs = figures.artifact_figures(spec.artifact(name), r.artifacts[name], [str(i) for i in range(12)])
            assert len(figs) == 1, name
            kinds[name] = figs[0].data[0].type
        assert kinds == {"who_reads_whom": "heatmap", "colour_of_token": "heatmap", "my_points": "heatmap",
                         "my_curve": "scatter"}
        mask_fig = figures.artifact_figures(spec.artifact("who_reads_whom"), r.artifacts["who_reads_whom"])[0]
        assert mask_fig.data[0].zmax == 1 and mask_fig.data[0].showscale is False  # drawn as a pattern, not values
    finally:
        xviz.unregister_variant("test_typed_artifacts")


def test_upload_limit_is_one_number():
    """The server refuses uploads at the size the loaders refuse them (no silent 200 MB default)."""
    import tomllib

    from xviz.inputs import LIMITS

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 2**20 == LIMITS["max_upload_bytes"]
