"""The public doors: each has a sorted ``__all__`` that is exactly its public names, every name resolves and
is documented, the root lists names and not modules, and importing a door pulls in no optional dependency."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import integration_status

#: Where hosts import from. Everything else is internal and may change between releases.
DOORS = (
    "integration_status",
    "integration_status.adapters",
    "integration_status.backends",
    "integration_status.demo",
    "integration_status.observability",
    "integration_status.testing",
    "integration_status.web",
    "integration_status.web.fastapi",
    "integration_status.web.flask",
    "integration_status.web.serving",
    "integration_status.web.starlette",
)
#: Doors that are also where their names are implemented: only the names they define themselves are checked.
IMPLEMENTING = {
    "integration_status.testing",
    "integration_status.web.fastapi",
    "integration_status.web.flask",
    "integration_status.web.serving",
    "integration_status.web.starlette",
}
#: Private names a door lists on purpose.
LISTED_PRIVATE = {"__version__"}


def isort_style(name: str) -> tuple[int, str]:  # constants, then classes, then functions (ruff RUF022)
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def defined_here(module: ModuleType) -> set[str]:
    """The names the module's own top-level statements define (classes, functions, assignments), not imports."""
    tree = ast.parse(Path(module.__file__ or "").read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def public_members(module: ModuleType) -> set[str]:
    """The public names a door holds; for an implementing door, those it defines itself, not what it imported
    to do its work."""
    names = {
        name
        for name, value in vars(module).items()
        if (not name.startswith("_") or name in LISTED_PRIVATE) and not isinstance(value, ModuleType)
    }
    if module.__name__ in IMPLEMENTING:
        names &= defined_here(module)
    return names


@pytest.mark.parametrize("door", DOORS)
def test_all_is_sorted_and_exactly_the_public_names(door: str) -> None:
    """__all__ is sorted, every name resolves, and the door holds no public name it does not list."""
    module = importlib.import_module(door)
    names = module.__all__
    assert names == sorted(names, key=isort_style)
    for name in names:
        getattr(module, name)  # a lazy door imports it now
    if door in IMPLEMENTING:
        assert public_members(module) <= set(names)  # and it may list names it re-exports
    else:
        assert public_members(module) == set(names)


@pytest.mark.parametrize("door", DOORS)
def test_public_names_are_documented(door: str) -> None:
    """Every exported class and function carries a docstring."""
    module = importlib.import_module(door)
    objects = {n: getattr(module, n) for n in module.__all__}
    public = {n: o for n, o in objects.items() if inspect.isclass(o) or inspect.isfunction(o)}
    missing = [n for n, o in public.items() if not (o.__doc__ or "").strip()]
    assert missing == []


def test_the_root_lists_names_not_modules() -> None:
    """After ``import integration_status`` the package holds its public names and no submodule attribute;
    a submodule is still reachable as an attribute on first use."""
    code = (
        "import types, integration_status as m; "
        "print(sorted(n for n, v in vars(m).items() if isinstance(v, types.ModuleType) and n[0] != '_')); "
        "print(m.models.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "integration_status.models"]


def test_a_missing_root_attribute_is_an_attribute_error() -> None:
    """A name the package does not have raises AttributeError naming it (not an ImportError)."""
    with pytest.raises(AttributeError, match="no_such_thing"):
        integration_status.no_such_thing  # type: ignore[attr-defined]  # noqa: B018


def test_import_pulls_in_no_framework_or_engine() -> None:
    """`import integration_status` and the framework-free doors load no starlette, flask, redis, psycopg or
    prometheus client."""
    code = (
        "import sys, integration_status, integration_status.testing, integration_status.backends, "
        "integration_status.adapters, integration_status.observability, integration_status.web, "
        "integration_status.demo; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'starlette', 'flask', 'redis', 'psycopg', 'prometheus_client', 'fastapi', 'uvicorn', 'werkzeug'}); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_core_imports_no_transport() -> None:
    """The core layer imports no httpx (adapters are the only HTTP users)."""
    code = (
        "import sys, integration_status.core.aggregator, integration_status.core.cache, "
        "integration_status.core.policy; "
        "print('httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
