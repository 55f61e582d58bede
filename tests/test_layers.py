"""The package's folders are layers: every import (at module level or inside a function) points down or
sideways within a layer, and no two modules import each other, directly or through others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "audioclf"

# Lowest first. A module may import its own layer and the layers listed before it.
LAYERS = [
    {"errors", "tasks", "files", "registry", "config", "metrics", "calibration", "console", "ownership"},  # the ground floor
    {"data"},
    {"features"},
    {"augment"},
    {"models"},
    {"runs"},  # a run directory's format: written by training, read by everything above
    {"training"},
    {"compress"},
    {"deploy"},
    {"workflows"},
    {"cli", "__main__", "__init__"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """audioclf modules imported anywhere in ``path`` (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "audioclf" or target.startswith("audioclf."):
                for alias in node.names:  # `from . import x` imports the module x
                    candidate = f"{target}.{alias.name}"
                    found.add(candidate if _is_module(candidate) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name == "audioclf" or a.name.startswith("audioclf."))
    return found


def _is_module(dotted: str) -> bool:
    relative = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    if top not in LAYER_OF:
        raise AssertionError(f"{module}: its top-level name '{top}' is in no layer; add it to LAYERS")
    return LAYER_OF[top]


GRAPH = {_module_name(path): _imports(path) - {_module_name(path)} for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_layer():
    for module in GRAPH:
        _layer(module)


def test_no_import_points_up_a_layer():
    upward = [f"{source} -> {target}" for source, targets in GRAPH.items() for target in sorted(targets)
              if _layer(target) > _layer(source)]
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def _cycle() -> list[str] | None:
    """One import cycle among modules (a package counts as the modules it holds), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if state.get(target) is None and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in GRAPH:
        if state.get(module) is None and (found := visit(module)):
            return found
    return None


def test_no_import_cycles():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_check_sees_lazy_imports():
    """The graph includes imports inside functions (where upward imports used to hide)."""
    assert "audioclf.workflows.stages" in GRAPH["audioclf.workflows.run"]
    assert any(t.startswith("audioclf.deploy") for t in GRAPH["audioclf.workflows.stages"])  # imported lazily


@pytest.mark.parametrize("module", ["audioclf.training.trainer", "audioclf.cli"])
def test_known_modules_are_in_the_graph(module):
    assert module in GRAPH and GRAPH[module]


def test_the_benchmarks_import_what_exists():
    """The benchmarks are scripts no test runs end to end: every name they import from audioclf must exist."""
    import importlib

    for script in sorted((PACKAGE.parent.parent / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("audioclf"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                        f"{script.name}: from {node.module} import {alias.name}"
