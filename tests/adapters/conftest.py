"""Fixtures for adapter tests: recorded provider payloads, a scripted MockTransport, loopback servers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from adapter_support import AutoClock, Router, _serve

from integration_status.adapters.http import HttpClient
from integration_status.testing import FakeClock

# Example responses from the providers' public API descriptions (see the README in that folder).
PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "provider-payloads"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def payload() -> Callable[[str], dict[str, Any]]:
    """Load ``provider/name`` (without .json) from the shared payload directory."""

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
