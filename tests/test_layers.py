"""The layering of the package: every import points downward, and no import cycle exists anywhere.

Imports are read from the source (every ``import`` and ``from ... import``, at module level, inside functions
and under ``TYPE_CHECKING``), so an import hidden in a function still counts. The order is the one drawn in
docs/design.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import integration_status

PACKAGE = Path(integration_status.__file__).parent

#: Layers from the bottom up: a module may import modules of lower layers and of its own folder.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"_lazy", "_logging", "_urls", "_version", "exceptions"}),
    frozenset({"models"}),
    frozenset({"snapshot"}),
    frozenset({"protocols"}),
    frozenset({"_config"}),
    frozenset({"_env"}),
    frozenset({"core"}),
    frozenset({"adapters", "backends"}),
    frozenset({"observability"}),
    frozenset({"service"}),
    frozenset({"web", "testing"}),
    frozenset({"demo"}),
    frozenset({"cli"}),
    frozenset({"__init__"}),
)


def rank(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"{unit} is in no layer: add it to LAYERS and to docs/design.md")


def modules(root: Path, package: str) -> Iterator[tuple[str, Path]]:
    """``(dotted name, path)`` of every module under ``root``."""
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join([package, *parts]), path


def imports(path: Path, name: str, package: str, known: set[str]) -> set[str]:
    """The package modules ``path`` imports (``from x import y`` counts as importing ``x.y`` when that is a
    module, else ``x``)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        found.update(t for t in targets if t == package or t.startswith(package + "."))
    found.discard(name)
    return found


def unit_of(module: str, package: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return "__init__"
    return parts[0]


def violations(root: Path, package: str, layers_rank: Mapping[str, int] | None = None) -> list[str]:
    """Every upward import and every cycle among the modules under ``root``."""
    names = dict(modules(root, package))
    graph = {name: imports(path, name, package, set(names)) for name, path in names.items()}
    out: list[str] = []
    for name, targets in graph.items():
        here = unit_of(name, package)
        for target in sorted(targets):
            there = unit_of(target, package)
            if here == there:
                continue
            r_here = layers_rank[here] if layers_rank is not None else rank(here)
            r_there = layers_rank[there] if layers_rank is not None else rank(there)
            if r_there >= r_here:
                out.append(f"upward: {name} imports {target}")
    # Cycles: depth-first search over the module graph (parent packages count as the modules they are).
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if state.get(target) == 1:
                out.append("cycle: " + " -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return out


def test_every_import_points_downward_and_nothing_forms_a_cycle() -> None:
    """The package as it is: no upward import, no cycle (function-local imports included)."""
    assert violations(PACKAGE, "integration_status") == []


def test_every_folder_and_top_level_module_has_a_layer() -> None:
    """A new folder or top-level module must be placed in the order before it can be imported."""
    units = {unit_of(name, "integration_status") for name, _ in modules(PACKAGE, "integration_status")}
    for unit in units:
        rank(unit)


def test_a_planted_cycle_and_an_upward_import_are_found(tmp_path: Path) -> None:
    """The checker finds a cycle hidden in a function-local import and an upward import."""
    root = tmp_path / "pkg"
    (root / "low").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "low" / "__init__.py").write_text("")
    (root / "low" / "a.py").write_text("from pkg.low import b\n")
    (root / "low" / "b.py").write_text("def f():\n    from pkg.low.a import x\n")
    (root / "high.py").write_text("import pkg.low.a\n")
    (root / "low" / "c.py").write_text("if True:\n    from pkg.high import y\n")
    found = violations(root, "pkg", {"low": 0, "high": 1, "__init__": 2})
    assert "upward: pkg.low.c imports pkg.high" in found
    assert any(v.startswith("cycle: ") and "pkg.low.a" in v and "pkg.low.b" in v for v in found)
    assert not any("pkg.high imports" in v for v in found)
