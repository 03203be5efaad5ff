"""The tree's shape: packages by concern whose imports only go down the layers, no import circle,
no Gradio in the engine, short functions."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tlgui"

# lowest first: a module imports from its own layer and those below it, never from one above
LAYERS = (
    ("tlgui.errors", "tlgui.events", "tlgui.runs"),  # what every layer uses
    ("tlgui.data",),
    ("tlgui.nets",),
    ("tlgui.config", "tlgui.public"),  # a run's recipe and a server's limits name the nets' fusions and backbones
    ("tlgui.outputs",),
    ("tlgui.training",),
    ("tlgui", "tlgui.__main__", "tlgui.cli", "tlgui.ui"),  # the two faces
)
MAX_TOP_MODULES = 10
MAX_FUNCTION_LINES = 80


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """tlgui modules `path` imports anywhere in its body (inside functions too: a late import still ties two modules)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `from .x import name`: the module is the longest known prefix
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):  # a package's own __init__ is no tie
                found.add(t)
    return found


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    root = package.parent
    paths = list(package.rglob("*.py"))
    modules = {_module_name(p, root) for p in paths}
    return {_module_name(p, root): _imports(p, modules, root) for p in paths}


def _layer(module: str) -> int | None:
    """The layer of the longest prefix in LAYERS that names `module` or a package above it."""
    placed = [(len(prefix), i) for i, layer in enumerate(LAYERS) for prefix in layer
              if module == prefix or module.startswith(prefix + ".")]
    return max(placed)[1] if placed else None


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if _layer(b) > _layer(a))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    graph = _graph()
    assert "tlgui.training.train" in graph and "tlgui.nets.backbones.registry" in graph  # the walk sees the tree
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_every_module_has_a_layer():
    graph = _graph()
    assert [m for m in graph if _layer(m) is None] == [], "add it to LAYERS"
    assert _layer("tlgui.cli") > _layer("tlgui.training.train") > _layer("tlgui.outputs.bundle") > _layer(
        "tlgui.nets.model") > _layer("tlgui.data.datasets") > _layer("tlgui.errors")


def test_layers_import_downward_only():
    assert _upward(_graph()) == []


def test_layer_check_finds_a_planted_upward_import(tmp_path):
    """The check reads the tree itself: an import from data up to training, planted in a copy, is named."""
    copy = tmp_path / "tlgui"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    tables = copy / "data" / "tables.py"
    tables.write_text(tables.read_text() + "\n\ndef _late():\n    from ..training.train import train\n")
    assert _upward(_graph(copy)) == ["tlgui.data.tables -> tlgui.training.train"]


def test_packages_by_concern():
    """Few modules beside the packages, and each package says what it holds."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top
    for init in PACKAGE.glob("*/__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} needs a docstring: what the package holds"


def test_functions_are_short():
    long = [f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], "split them, for a page step by its groups of events"


def test_engine_imports_no_gradio():
    engine = [p for p in PACKAGE.rglob("*.py") if "ui" not in p.relative_to(PACKAGE).parts]
    for path in engine:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "gradio" for n in names), path


def test_the_core_imports_in_a_fresh_process():
    code = ("import tlgui.nets.backbones, tlgui.training.train, tlgui.training.estimate, tlgui.cli; import sys; "
            "print('gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
