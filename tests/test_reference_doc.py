"""docs/reference.md keeps up with the code: every constructor argument, setting and variable is on the page."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from integration_status import Settings, StatusService, Viewer
from integration_status._env import ENGINE_VARIABLES
from integration_status.adapters.env import DEFAULT_URLS, OPTIONAL, REQUIRED
from integration_status.adapters.github import GitHubAdapter
from integration_status.adapters.http import HttpClient
from integration_status.adapters.sanity import SanityAdapter
from integration_status.adapters.supabase import SupabaseAdapter
from integration_status.adapters.vercel import VercelAdapter
from integration_status.backends.memory import MemoryEngine
from integration_status.backends.redis import RedisEngine
from integration_status.core.breaker import BreakerConfig
from integration_status.observability import HealthRecorder, HealthThresholds, PrometheusMetrics
from integration_status.protocols import ProviderConnection
from integration_status.service.settings import settings_variables
from integration_status.web.fastapi import DependencyAuthenticator, include

REFERENCE = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text(encoding="utf-8")

CONSTRUCTORS: list[Callable[..., Any]] = [
    StatusService,
    HttpClient,
    GitHubAdapter,
    VercelAdapter,
    SanityAdapter,
    SupabaseAdapter,
    MemoryEngine,
    RedisEngine.from_url,
    PrometheusMetrics,
    HealthRecorder,
    HealthThresholds,
    ProviderConnection,
    Viewer,
    DependencyAuthenticator,
    include,
]


@pytest.mark.parametrize("constructor", CONSTRUCTORS, ids=lambda c: c.__qualname__)
def test_every_argument_is_documented(constructor: Callable[..., Any]) -> None:
    """Each parameter of each public constructor is named (in backquotes) on the reference page."""
    missing = [
        name
        for name in inspect.signature(constructor).parameters
        if name not in {"self", "cls"}
        and not any(f"{before}{name}" in REFERENCE for before in ("`", "(", " "))
    ]
    assert missing == [], f"{constructor.__qualname__}: {missing}"


def test_every_setting_and_breaker_field_has_a_row() -> None:
    """Settings and BreakerConfig fields each appear as a table row with their default."""
    for cls in (Settings, BreakerConfig):
        for field in attrs.fields(cls):
            if field.name == "breaker":
                continue
            assert f"| `{field.name}` | {field.default} |" in REFERENCE, field.name


def test_every_environment_variable_is_listed() -> None:
    """Each INTEGRATION_STATUS_* variable and each variable of `check` has a row."""
    names = [row[0] for row in settings_variables()] + list(ENGINE_VARIABLES)
    names += [n for group in (*REQUIRED.values(), *OPTIONAL.values()) for n in group]
    names += [variable for variable, _ in DEFAULT_URLS.values()]
    assert [n for n in names if f"`{n}`" not in REFERENCE] == []
