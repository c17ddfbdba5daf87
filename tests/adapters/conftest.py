"""Fixtures for adapter tests: recorded provider payloads, a scripted MockTransport, loopback servers."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from adapter_support import AutoClock, Router, _serve

from integration_status.adapters._http import HttpClient
from integration_status.testing import FakeClock

# The payloads live beside the repository (../shared/provider-payloads); a git worktree sits one level deeper.
_CANDIDATES = [base / "shared" / "provider-payloads" for base in Path(__file__).parents[2].parents[:2]]
PAYLOADS = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def payload() -> Callable[[str], dict[str, Any]]:
    """Load ``provider/name`` (without .json) from the shared payload directory."""
    if not PAYLOADS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"provider payloads missing at {PAYLOADS}")
        pytest.skip(f"provider payloads not found at {PAYLOADS} (they live beside the repository)")

    def load(name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text())
        return data

    return load


@pytest.fixture
def router() -> Router:
    return Router()


@pytest.fixture
async def http(router: Router) -> AsyncIterator[HttpClient]:
    async with HttpClient(transport=httpx.MockTransport(router)) as client:
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hanging_server() -> Iterator[str]:
    yield from _serve("hang")


@pytest.fixture
def resetting_server() -> Iterator[str]:
    yield from _serve("reset")


@pytest.fixture
def auto_clock() -> AutoClock:
    return AutoClock()
