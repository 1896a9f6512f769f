"""The shape of the code (DESIGN §1, docs/architecture.md): data flows one way, frontends -> IR ->
passes -> backends, and no module imports another that imports it back.

The import graph is read from the source with ``ast``, imports inside functions included: an import
hidden in a function body still makes the dependency, it only hides it from import-time checks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parent.parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every snnc module ``path`` imports (absolute or relative, at any depth of the file)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from snnc.ir import ops` imports the module snnc.ir.ops
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "snnc" or m.startswith("snnc.")}


@pytest.fixture(scope="module")
def import_graph() -> nx.DiGraph:
    files = sorted((REPO / "snnc").rglob("*.py"))
    modules = {_module_name(p): p for p in files}
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        for target in _imports(path):
            if target in modules and target != name:
                g.add_edge(name, target)
    return g


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "snnc"


# what each part may import (besides itself, snnc.errors and the IR)
_FORBIDDEN = {
    "ir": {"frontend", "passes", "backends", "formats", "pass_manager", "driver", "cli", "runner", "targets"},
    "formats": {"frontend", "passes", "backends", "driver", "cli", "runner"},
    "frontend": {"passes", "backends", "driver", "cli", "runner", "targets"},
    "passes": {"frontend", "backends", "driver", "cli", "runner", "targets"},
    "backends": {"frontend", "driver", "cli", "runner"},
}


def test_data_flows_one_way(import_graph) -> None:
    wrong = sorted(
        f"{src} imports {dst}"
        for src, dst in import_graph.edges
        if _layer(dst) in _FORBIDDEN.get(_layer(src), set())
    )
    assert wrong == []


def test_no_import_cycles(import_graph) -> None:
    # a package's __init__ importing its own submodules is how packages expose them, not a cycle
    g = import_graph.copy()
    g.remove_edges_from([(a, b) for a, b in import_graph.edges if b.startswith(a + ".")])
    cycles = sorted(sorted(c) for c in nx.simple_cycles(g))
    assert cycles == []


def test_the_graph_is_read() -> None:
    """The checks above are only as good as the import scan: it must see relative, nested and
    from-imports."""
    loihi_lower = REPO / "snnc" / "backends" / "loihi" / "lower.py"
    seen = _imports(loihi_lower)
    assert "snnc.backends.loihi.bitacc" in seen and "snnc.ir.ops" in seen
