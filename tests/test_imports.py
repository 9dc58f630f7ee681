"""No import circle among the project's modules, counting every import (those inside functions
too): each module is parsed, not imported, so a circle hidden behind a lazy import shows."""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "orchestrator", "analysis")


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def imported(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The project modules `name` imports anywhere in its file."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` imports the module mod; `from mod import name` the module mod
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_parser_sees_imports_inside_functions():
    edges = graph()
    assert "orchestrator.layout" in edges["orchestrator.runner"]
    assert "trainer.loop" in edges["orchestrator.trainable"]   # imported inside a function


def test_no_module_import_circle():
    found = cycle(graph())
    assert found is None, "import circle: " + " -> ".join(found)


def test_packages_import_one_way():
    """trainer imports neither other package; the orchestrator does not import analysis."""
    edges: dict[str, set[str]] = {}
    for name, targets in graph().items():
        edges.setdefault(name.split(".")[0], set()).update(t.split(".")[0] for t in targets)
    assert edges["trainer"] <= {"trainer"}
    assert "analysis" not in edges["orchestrator"]
