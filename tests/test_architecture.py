"""The code's shape: no import cycle inside ``include/mlpipe`` (lazy imports inside
functions count too), no ``airflow`` import there, and no function longer than 50 lines
in ``include/mlpipe``, ``dags`` or ``plugins``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "include" / "mlpipe"
MAX_FUNCTION_LINES = 50


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package: Path, modules: set[str]) -> set[str]:
    """Package modules that ``path`` imports anywhere in its body (``from a import b``
    counts as ``a.b`` when that is a module, else as ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                      for alias in node.names}
    return {name for name in found if name in modules} - {module_name(path, package)}


def import_graph(package: Path) -> dict[str, set[str]]:
    paths = {module_name(p, package): p for p in package.rglob("*.py")}
    return {name: imported_modules(path, package, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_cycle_inside_the_package():
    graph = import_graph(PACKAGE)
    assert "mlpipe.steps" in graph and graph["mlpipe.steps"] >= {"mlpipe.ingest", "mlpipe.training"}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_check_finds_a_cycle(tmp_path):
    package = tmp_path / "mlpipe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from mlpipe import b\n")
    (package / "b.py").write_text("def f():\n    from mlpipe.a import thing\n")  # lazy imports count
    (package / "c.py").write_text("import mlpipe.a\n")
    assert find_cycle(import_graph(package)) == ["mlpipe.a", "mlpipe.b", "mlpipe.a"]
    (package / "b.py").write_text("import json\n")
    assert find_cycle(import_graph(package)) is None


def test_the_package_never_imports_airflow():
    offenders = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                 if any(isinstance(n, (ast.Import, ast.ImportFrom)) and
                        any(name.split(".")[0] == "airflow" for name in
                            ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]))
                        for n in ast.walk(ast.parse(p.read_text())))]
    assert offenders == []


@pytest.mark.parametrize("folder", ["include/mlpipe", "dags", "plugins"])
def test_no_function_is_longer_than_50_lines(folder):
    long = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
