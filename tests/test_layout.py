"""The layout's one rule: imports run down the floors, and nothing imports in a circle.

The import graph is read from the source with ``ast`` (every ``import``, also those inside functions and under
``TYPE_CHECKING``), so the test needs no import of kpdd and sees the imports that only run on some paths.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "kpdd"

# Lowest floor first; a module may import its own floor and any floor below, never one above. Why this order:
# the basics (errors, config, JSONL, what a reference string names) know nothing of kpdd; datasets are plain
# records; the sandbox runs programs with only the standard library; eval scores answers (the programs' metric and
# answer extraction use it);
# modules are the DSPy programs (they run PoT code in the sandbox); compile makes traces from programs;
# finetune turns traces into weights (and registers students); engines serve those weights as dspy.LMs;
# tracking records what the stages produced; run holds the drivers that chain the stages; cli parses options
# into a driver's config. A package's own __init__ counts as the package.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("kpdd", "kpdd.errors", "kpdd.config", "kpdd.jsonl", "kpdd.distributed", "kpdd.references"),
    ("kpdd.data",),
    ("kpdd.sandbox",),
    ("kpdd.eval",),
    ("kpdd.modules",),
    ("kpdd.compile",),
    ("kpdd.finetune",),
    ("kpdd.engines",),
    ("kpdd.tracking",),
    ("kpdd.run",),
    ("kpdd.cli", "kpdd.__main__"),
)


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every .py under ``root`` (a package's __init__ is the package)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imported(node: ast.AST, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The kpdd modules one import statement names (``from pkg import submodule`` names the submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: resolve against this module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the kpdd modules it imports anywhere in its source."""
    known = module_names(root)
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = {t for node in ast.walk(tree) for t in _imported(node, module, path.name == "__init__.py", known)}
        graph[module] = {t for t in targets if t in known and t != module}
    return graph


def floor_of(module: str) -> int | None:
    """The floor of a module: its longest listed prefix (the root package ``kpdd`` only matches itself)."""
    best, best_len = None, -1
    for floor, units in enumerate(FLOORS):
        for unit in units:
            matches = module == unit or (unit != "kpdd" and module.startswith(unit + "."))
            if matches and len(unit) > best_len:
                best, best_len = floor, len(unit)
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (floor {floor_of(a)}) imports {b} (floor {floor_of(b)})"
                  for a, targets in graph.items() for b in targets if floor_of(b) > floor_of(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between packages (a module's package; top-level modules stand for themselves)."""
    def package(module: str) -> str:
        return module if module in ROOT_PACKAGES else module.rsplit(".", 1)[0] if module.count(".") > 1 else module
    merged: dict[str, set[str]] = {}
    for a, targets in graph.items():
        merged.setdefault(package(a), set()).update(package(b) for b in targets if package(b) != package(a))
    return merged


ROOT_PACKAGES = {name for name, path in module_names(ROOT).items() if path.name == "__init__.py"}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_layout_every_module_has_a_floor(graph):
    assert [m for m in graph if floor_of(m) is None] == []


def test_layout_imports_run_down_the_floors(graph):
    assert upward_imports(graph) == []


def test_layout_has_no_import_cycles_between_modules(graph):
    assert cycles(graph) == []


def test_layout_has_no_import_cycles_between_packages(graph):
    assert cycles(package_graph(graph)) == []


def test_layout_graph_sees_imports_inside_functions(graph):
    assert "kpdd.engines.compiled" in graph["kpdd.run.eval"]  # imported inside load_program_and_lm only


def test_layout_check_catches_an_upward_import_and_a_cycle(tmp_path):
    package = tmp_path / "kpdd"
    for name, source in {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/loaders.py": "def load():\n    from kpdd.run import demo\n",  # upward, inside a function
        "run/__init__.py": "",
        "run/demo.py": "from kpdd.data.loaders import load\n",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(source)
    fake = import_graph(package)
    assert upward_imports(fake) == ["kpdd.data.loaders (floor 1) imports kpdd.run.demo (floor 9)"]
    assert cycles(fake) == [["kpdd.data.loaders", "kpdd.run.demo"]]
