"""The package's rooms and the way its imports point (docs/architecture.md).

activation (``definity_spark``) -> session observer (``spark/``) -> {reader, rules,
task} -> {wire, delivery}; the helper process (``helper/``) is handed to the observer,
which never imports it. Every import counts, a function's too (``import`` statements
anywhere in a module), without running anything.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "definity_spark"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module this file imports (absolute names; relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            for alias in node.names:  # `from definity_spark.spark import facts`
                out.add(f"{base}.{alias.name}")
    return out


def _graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports: the nearest module an import names,
    and the packages Python runs on the way (``a.b`` for ``a.b.c``), but not the root
    package, which every submodule's import runs (it is the activation, on top)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for imported in _imports(path):
            parts = imported.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            while len(parts) > 1:
                target = ".".join(parts)
                if target != name and not name.startswith(target + "."):
                    deps.add(target)
                parts.pop()
        graph[name] = deps
    return graph


def _external(path: Path) -> set[str]:
    return {i.split(".")[0] for i in _imports(path)}


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("room", ["definity_spark.lineage", "definity_spark.wire",
                                  "definity_spark.delivery"])
def test_pure_rooms_touch_no_jvm_and_no_spark_room(room: str) -> None:
    graph = _graph()
    for name, deps in graph.items():
        if name != room and not name.startswith(room + "."):
            continue
        path = PACKAGE.parent / (name.replace(".", os.sep) + ".py")
        if not path.exists():
            path = PACKAGE.parent / name.replace(".", os.sep) / "__init__.py"
        assert not {"py4j", "pyspark"} & _external(path), name
        bad = {d for d in deps if d.startswith(("definity_spark.spark",
                                                "definity_spark.helper"))}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_the_observer_is_handed_the_helper_and_never_imports_it() -> None:
    for name, deps in _graph().items():
        if name.startswith("definity_spark.spark"):
            assert not {d for d in deps if d.startswith("definity_spark.helper")}, name


def test_the_graph_sees_the_imports_it_must() -> None:
    # the walk itself: known edges are found, function-level imports included
    graph = _graph()
    assert "definity_spark.spark.worker" in graph["definity_spark.spark.observer"]
    assert "definity_spark.lineage.commands" in graph["definity_spark.lineage.rules"]
    assert "definity_spark.helper.extraction" in graph["definity_spark.helper.child"]
    assert "definity_spark.spark.observer" in graph["definity_spark"]
