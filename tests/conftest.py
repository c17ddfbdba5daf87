"""Shared fixtures: the anyio backend, and a service wired with scripted adapters on a fake clock."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
