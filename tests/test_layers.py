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


# ------------------------------------------------------------------ the module graph, by parsing

def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    files = [*(ROOT / "xviz").rglob("*.py"), *(ROOT / "pages").rglob("*.py"), ROOT / "app.py"]
    return {module_name(p): p for p in files}


def imported(name: str, path: Path, modules) -> list[tuple[str, str, str, int]]:
    """(module, imported name or "", the local name, line) for every import in the file, function-level
    ones included; relative imports resolved. ``from pkg import mod`` gives (pkg.mod, "", ...)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, "", a.asname or a.name.split(".")[0], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                sub, local = f"{base}.{a.name}", a.asname or a.name
                out.append((sub, "", local, node.lineno) if sub in modules else (base, a.name, local, node.lineno))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_the_kernels():
    """Imports inside functions count too: a lazy import is still a dependency."""
    modules = project_modules()
    kernels = {m: p for m, p in modules.items() if m.startswith("xviz.kernels.")}
    graph = {m: {t for t, _, _, _ in imported(m, p, modules) if t in kernels and t != m} for m, p in kernels.items()}
    assert len(graph) > 15 and any(graph.values())  # the scan sees the kernels and their imports
    assert cycles(graph) == []


def private_reaches(modules) -> list[str]:
    """Uses of a ``_name`` defined in another project module: ``from m import _x``, ``m._x`` on an imported
    module, ``Cls(_field=...)`` on an imported name, and a ``_module`` imported from outside its package."""
    def private(s):
        return s.startswith("_") and not s.startswith("__")

    bad = []
    for name, path in modules.items():
        aliases, imported_names = {}, set()
        for target, attr, local, line in imported(name, path, modules):
            if target not in modules and not any(target == m.rpartition(".")[0] for m in modules):
                continue  # outside the project
            parts = (target + ("." + attr if attr else "")).split(".")
            home = target.rpartition(".")[0] if not attr else target
            for i, part in enumerate(parts[1:], 1):
                owner = ".".join(parts[:i])
                inside = name == owner or name.startswith(owner + ".") or name == home
                if private(part) and not inside:
                    bad.append(f"{name}:{line} imports {'.'.join(parts)}")
                    break
            if attr:
                imported_names.add(local)
            elif target in modules:
                aliases[local] = target.split(".")[0] if local == target.split(".")[0] else target
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and private(node.attr):
                chain, value = [], node.value
                while isinstance(value, ast.Attribute):
                    chain.append(value.attr)
                    value = value.value
                if isinstance(value, ast.Name) and value.id in aliases:
                    owner = ".".join([aliases[value.id], *reversed(chain)])
                    if owner in modules and owner != name:
                        bad.append(f"{name}:{node.lineno} uses {owner}.{node.attr}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported_names:
                bad += [f"{name}:{node.lineno} passes {kw.arg}= to {node.func.id}" for kw in node.keywords
                        if kw.arg and private(kw.arg)]
    return bad


def test_private_reach_finder_sees_each_form(tmp_path):
    src = {"xviz/__init__.py": "", "xviz/a.py": "def _hidden(): pass\nclass R:\n    _f: int = 0\n",
           "xviz/p/__init__.py": "", "xviz/p/_inner.py": "x = 1\n",
           "xviz/b.py": "from .a import _hidden, R\nfrom . import a\nfrom .p._inner import x\n"
                        "a._hidden()\nR(_f=1)\n",
           "xviz/p/ok.py": "from ._inner import x\n"}
    modules = {}
    for rel, text in src.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
        parts = rel[:-3].split("/")
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = tmp_path / rel
    found = private_reaches(modules)
    assert len(found) == 4 and all(f.startswith("xviz.b:") for f in found), found


def test_no_module_uses_another_modules_private_names():
    assert private_reaches(project_modules()) == []


def test_the_kernels_index_names_every_module():
    import xviz.kernels

    index = xviz.kernels.__doc__
    missing = [p.stem for p in (ROOT / "xviz" / "kernels").glob("*.py")
               if p.stem != "__init__" and f"``{p.stem}``" not in index]
    assert not missing, missing


# What each package of the library may import: the table in docs/architecture.md. xviz.core's one edge
# upwards is the registry loading the built-in variants, lazily, the first time the catalog is read.
ALLOWED = {
    "core": {"variants"}, "kernels": {"core"}, "variants": {"core", "kernels"}, "inputs": {"core"},
    "analysis": {"core", "kernels", "inputs"}, "app": {"core", "inputs", "analysis"},
    "figures": {"core", "analysis"}, "decode": {"core", "kernels", "inputs", "figures"},
}


def test_packages_import_only_what_the_architecture_draws():
    modules = project_modules()
    seen, bad = set(), []
    for name, path in modules.items():
        parts = name.split(".")
        if parts[0] != "xviz" or len(parts) < 3 or parts[1] not in ALLOWED:
            continue
        for target, _, _, line in imported(name, path, modules):
            tparts = target.split(".")
            if tparts[0] == "xviz" and len(tparts) > 1 and tparts[1] != parts[1] and tparts[1] in ALLOWED:
                seen.add((parts[1], tparts[1]))
                only = {"core": ("xviz.core.registry",),  # the lazy load, and nothing else
                        # decode's command line reads inputs and draws; generation runs a real model (inputs)
                        "decode": ("xviz.decode.cli", "xviz.decode.generate")}.get(parts[1])
                if tparts[1] not in ALLOWED[parts[1]] or (only and tparts[1] not in ("core", "kernels")
                                                          and name not in only):
                    bad.append(f"{name}:{line} imports {target}")
    assert ("variants", "kernels") in seen and ("core", "variants") in seen
    assert not bad, bad
