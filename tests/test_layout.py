"""The package's import graph: no circles, dependencies point one way (nn ← model ← wings ← training ← study ←
commands; explain beside training), and no library module imports a command-line module."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "yolofreeze"
COMMANDS = {"yolofreeze.convert", "yolofreeze.download", "yolofreeze.inspect", "yolofreeze.predict", "yolofreeze.check",
            "yolofreeze.train", "yolofreeze.cam", "yolofreeze.export",
            "yolofreeze.study.__main__"}
# wing → wings it must never import (the dependency direction of the house plan)
FORBIDDEN = {
    "yolofreeze.nn": ("yolofreeze.model", "yolofreeze.weights", "yolofreeze.data", "yolofreeze.evaluation",
                      "yolofreeze.freezing", "yolofreeze.training", "yolofreeze.study", "yolofreeze.explain"),
    "yolofreeze.data": ("yolofreeze.weights", "yolofreeze.evaluation", "yolofreeze.freezing", "yolofreeze.training",
                        "yolofreeze.study"),
    "yolofreeze.weights": ("yolofreeze.data", "yolofreeze.evaluation", "yolofreeze.freezing", "yolofreeze.training",
                           "yolofreeze.study"),
    "yolofreeze.evaluation": ("yolofreeze.weights", "yolofreeze.freezing", "yolofreeze.training", "yolofreeze.study"),
    "yolofreeze.freezing": ("yolofreeze.evaluation", "yolofreeze.training", "yolofreeze.study"),
    "yolofreeze.training": ("yolofreeze.study", "yolofreeze.explain"),
    "yolofreeze.deploy": ("yolofreeze.freezing", "yolofreeze.training", "yolofreeze.study", "yolofreeze.explain"),
    "yolofreeze.explain": ("yolofreeze.weights", "yolofreeze.freezing", "yolofreeze.training", "yolofreeze.study"),
}


def module_name(path: Path) -> str:
    parts = ["yolofreeze", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (function-level imports too)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_walker_sees_relative_and_function_level_imports():
    edges = graph()
    assert "yolofreeze.model" in edges["yolofreeze.training.trainer"]  # from ..model import YOLO
    assert "yolofreeze.freezing.plan" in edges["yolofreeze.training.optim"]
    assert len(edges) >= 40


def test_the_cycle_finder_finds_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_circle():
    assert find_cycle(graph()) is None


@pytest.mark.parametrize("wing", sorted(FORBIDDEN))
def test_dependencies_point_one_way(wing):
    wrong = {(name, target) for name, targets in graph().items() if name == wing or name.startswith(wing + ".")
             for target in targets if any(target == f or target.startswith(f + ".") for f in FORBIDDEN[wing])}
    assert not wrong


def test_no_library_module_imports_a_command():
    wrong = {(name, target) for name, targets in graph().items() if name not in COMMANDS
             for target in targets if target in COMMANDS}
    assert not wrong
