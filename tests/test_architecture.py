"""The code's shape: no import cycle among ``include/mlpipe``, ``plugins`` and ``dags``
(lazy imports inside functions count too), no ``airflow`` import in ``include/mlpipe``,
operators that do no work in ``__init__``, no function longer than 50 lines, and one place
each for what a target type decides and for a metric's direction."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "include" / "mlpipe"
# the folders on sys.path when our code runs: include/ (the mlpipe package), plugins/
# (top-level modules such as mlpipe_tasks) and dags/
SEARCH_PATH = (ROOT / "include", ROOT / "plugins", ROOT / "dags")
MAX_FUNCTION_LINES = 50


def module_name(path: Path, root: Path) -> str:
    """The name ``path`` is imported by when ``root`` is on sys.path."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path, modules: set[str]) -> set[str]:
    """Our modules that ``path`` imports anywhere in its body (``from a import b``
    counts as ``a.b`` when that is a module, else as ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                      for alias in node.names}
    return {name for name in found if name in modules} - {module_name(path, root)}


def import_graph(*roots: Path) -> dict[str, set[str]]:
    """``{module: our modules it imports}`` over every ``*.py`` under the ``roots``."""
    paths = {module_name(p, root): (p, root) for root in roots for p in root.rglob("*.py")}
    return {name: imported_modules(path, root, set(paths)) for name, (path, root) in paths.items()}


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


def test_no_import_cycle_in_the_package_the_plugins_or_the_dags():
    graph = import_graph(*SEARCH_PATH)
    assert "mlpipe.steps" in graph and graph["mlpipe.steps"] >= {"mlpipe.ingest", "mlpipe.training"}
    assert graph["mlpipe_operators"] >= {"mlpipe_tasks", "mlpipe.records"}  # plugins are in the graph
    assert graph["train"] >= {"mlpipe_factory", "mlpipe_factory.train"}  # and so are the DAG files
    assert graph["mlpipe_factory.train"] >= {"mlpipe_operators", "mlpipe_dagkit"}  # and the factory
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_check_finds_a_cycle_in_a_package(tmp_path):
    package = tmp_path / "mlpipe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from mlpipe import b\n")
    (package / "b.py").write_text("def f():\n    from mlpipe.a import thing\n")  # lazy imports count
    (package / "c.py").write_text("import mlpipe.a\n")
    assert find_cycle(import_graph(tmp_path)) == ["mlpipe.a", "mlpipe.b", "mlpipe.a"]
    (package / "b.py").write_text("import json\n")
    assert find_cycle(import_graph(tmp_path)) is None


def test_the_cycle_check_finds_a_cycle_through_the_plugins(tmp_path):
    """A throwaway copy of plugins/ where mlpipe_alerts imports mlpipe_tasks lazily (as it
    once did): the check over the real folders' layout reports the cycle."""
    import shutil

    plugins = tmp_path / "plugins"
    shutil.copytree(ROOT / "plugins", plugins)
    alerts = plugins / "mlpipe_alerts.py"
    alerts.write_text(alerts.read_text() + "\n\ndef _pipeline():\n    from mlpipe_tasks import run_step\n")
    cycle = find_cycle(import_graph(ROOT / "include", plugins, ROOT / "dags"))
    assert cycle is not None and {"mlpipe_alerts", "mlpipe_tasks"} <= set(cycle), cycle


def test_the_package_never_imports_airflow():
    offenders = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                 if any(isinstance(n, (ast.Import, ast.ImportFrom)) and
                        any(name.split(".")[0] == "airflow" for name in
                            ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]))
                        for n in ast.walk(ast.parse(p.read_text())))]
    assert offenders == []


AIRFLOW_CLASSES = ("Operator", "Sensor", "Notifier")  # what Airflow builds while it parses a DAG file


def busy_inits(source: str) -> list[str]:
    """Operators, sensors and notifiers whose ``__init__`` does more than store its
    arguments and call ``super().__init__`` with them: a statement that calls anything
    else, or stores anything but an argument or a constant, is work done at parse time."""
    def plain(node) -> bool:
        return isinstance(node, (ast.Name, ast.Constant))

    def allowed(stmt) -> bool:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):  # docstring
            return True
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            call = stmt.value
            return (isinstance(call.func, ast.Attribute) and call.func.attr == "__init__"
                    and isinstance(call.func.value, ast.Call) and getattr(call.func.value.func, "id", "") == "super"
                    and all(plain(a.value if isinstance(a, ast.Starred) else a) for a in call.args)
                    and all(plain(k.value) for k in call.keywords))
        return (isinstance(stmt, (ast.Assign, ast.AnnAssign)) and plain(stmt.value)
                and all(isinstance(t, ast.Attribute) and getattr(t.value, "id", "") == "self"
                        for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])))

    busy = []
    for cls in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef)):
        if not any(ast.unparse(b).endswith(AIRFLOW_CLASSES) for b in cls.bases):
            continue
        for init in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"):
            busy += [f"{cls.name}.__init__ line {s.lineno}: {ast.unparse(s)}" for s in init.body if not allowed(s)]
    return busy


def test_operators_do_no_work_in_init():
    busy = [f"{p.relative_to(ROOT)}: {b}" for folder in ("plugins", "dags") for p in sorted((ROOT / folder).glob("*.py"))
            for b in busy_inits(p.read_text())]
    assert busy == []


def test_the_init_check_finds_work():
    """The GpuTrainOperator.__init__ this project once had: it read the spec."""
    once = (
        "class GpuTrainOperator(TrainVariantOperator):\n"
        "    def __init__(self, *, queue=None, pool=None, **kwargs):\n"
        "        default = self.placement()\n"
        "        super().__init__(queue=queue or default['queue'], pool=pool, **kwargs)\n")
    assert len(busy_inits(once)) == 2
    fine = ("class T(BaseOperator):\n    def __init__(self, *, job, **kwargs):\n        super().__init__(**kwargs)\n"
            "        self.job = job\n        self.cpus: int | None = None\n")
    assert busy_inits(fine) == []


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


GLOBAL_MLFLOW = re.compile(r"\bmlflow\.(set_tracking_uri|set_registry_uri|set_experiment|start_run|active_run)\b"
                           r"|from mlflow import [^\n]*\b(set_tracking_uri|set_registry_uri|set_experiment|start_run"
                           r"|active_run)\b")


def test_nothing_sets_or_reads_mlflows_process_global_state():
    """MLflow is reached through ``ctx.tracking`` (a client with its own tracking URI):
    a worker process runs tasks of several pipelines, each with its own store, so a
    global tracking URI, experiment or active run set by one task would leak into the next."""
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for folder in ("include", "plugins", "scripts", "dags")
             for p in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1) if GLOBAL_MLFLOW.search(line)]
    assert found == []


TARGET_NAMES = {"binary", "regression", "multiclass"}
ONE_PLACE = {"include/mlpipe/targets.py", "include/mlpipe/metrics.py"}
DIRECTION = {"greater_is_better", "maximize", "minimize"}


def target_and_direction_checks(source: str) -> list[str]:
    """Comparisons with a target type's name or with a ``task`` (what a target type
    object decides), and a metric's direction worked out locally (``greater_is_better``
    read, or an optimisation direction spelt out): what only the metric table may do."""
    def names_target(node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in TARGET_NAMES
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(names_target(e) for e in node.elts)

    def is_task(node) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "task") or getattr(node, "id", "") == "task"

    found = []
    for node in ast.walk(ast.parse(source)):
        sides = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
        if any(names_target(n) for n in sides) or (
                any(is_task(n) for n in sides) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops)):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif (isinstance(node, ast.Attribute) and node.attr in DIRECTION) or getattr(node, "id", "") in DIRECTION \
                or (isinstance(node, ast.Constant) and node.value in DIRECTION) \
                or (isinstance(node, ast.keyword) and node.arg in DIRECTION):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_only_the_target_types_and_the_metric_table_decide_by_target_type_or_direction():
    found = [f"{p.relative_to(ROOT)} {hit}" for folder in ("include", "plugins", "dags", "scripts")
             for p in sorted((ROOT / folder).rglob("*.py")) if str(p.relative_to(ROOT)) not in ONE_PLACE
             for hit in target_and_direction_checks(p.read_text())]
    assert found == []


def test_the_target_and_direction_check_finds_what_this_project_once_had():
    once = ('if spec.target.task == "binary":\n    pass\n'
            'sign = 1.0 if spec.greater_is_better() else -1.0\n'
            'study = create_study(direction="maximize")\n'
            'ok = task in ("binary", "multiclass")\n'
            'if self.task != kind:\n    pass\n')
    assert len(target_and_direction_checks(once)) == 5
    assert target_and_direction_checks("sign = spec.metric().sign\nif kind.classifier:\n    pass\n") == []
