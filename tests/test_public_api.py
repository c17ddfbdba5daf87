"""The one public door: a sorted __all__, every name importable, and no optional dependency pulled in."""

from __future__ import annotations

import inspect
import subprocess
import sys

import integration_status


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted and every name in it exists on the package."""
    names = integration_status.__all__

    def isort_style(name: str) -> tuple[int, str]:  # constants, then classes, then functions (ruff RUF022)
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert names == sorted(names, key=isort_style)
    for name in names:
        assert hasattr(integration_status, name), name


def test_public_names_are_documented() -> None:
    """Every exported class and function carries a docstring."""
    objects = {n: getattr(integration_status, n) for n in integration_status.__all__}
    public = {n: o for n, o in objects.items() if inspect.isclass(o) or inspect.isfunction(o)}
    missing = [n for n, o in public.items() if not (o.__doc__ or "").strip()]
    assert missing == []


def test_import_pulls_in_no_framework_or_engine() -> None:
    """`import integration_status` loads no starlette, flask, redis, psycopg or prometheus client."""
    code = (
        "import sys, integration_status, integration_status.testing; "
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


def test_layers_only_import_downward() -> None:
    """core imports only core and the bottom layer; adapters and backends never import the service or web."""
    import ast
    from pathlib import Path

    package = Path(integration_status.__file__).parent
    # The private logging and configuration-check helpers import only the bottom layer themselves.
    bottom = {"models", "snapshot", "protocols", "exceptions", "_logging", "_config"}
    allowed = {
        "core": bottom | {"core"},
        "adapters": bottom | {"core", "adapters"},
        "backends": bottom | {"core", "backends", "_env"},  # the engines' from_env
    }
    offenders = []
    for layer, may in allowed.items():
        for path in (package / layer).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("integration_status."):
                    first = node.module.split(".")[1]  # type: ignore[union-attr]
                    if first not in may:
                        offenders.append(f"{layer}/{path.name} imports {node.module}")
    assert offenders == []
