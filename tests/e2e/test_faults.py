"""Fault injection: the real adapters against a misbehaving provider on loopback. Whatever the provider does,
the status endpoint answers within the deadline with the right problem code and stale flag, breakers open and
recover, and nothing is left running."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from integration_status.adapters.defaults import provider_adapters
from integration_status.adapters.http import HttpClient
from integration_status.core.breaker import BreakerConfig
from integration_status.protocols import RequestInfo, Viewer
from integration_status.service import Settings, StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.testing import StaticConnections
from integration_status.web.starlette import create_app
from tests.e2e.conftest import serve
from tests.e2e.faults_server import FaultServer

pytestmark = pytest.mark.anyio

TTL = 0.3
ANSWER_WITHIN = 1.0  # the 450 ms deadline plus slack for a loaded CI machine


async def owner(request: RequestInfo) -> Viewer:
    return Viewer(user_id="u1", roles={"owner"})


def connections() -> StaticConnections:
    projects = StaticConnections.linked("p1", "github").projects
    github = projects["p1"].providers["github"]
    linked = type(github)(provider="github", settings={"repository": "acme/storefront"})
    return StaticConnections({"p1": type(projects["p1"])(project_id="p1", providers={"github": linked})})


@pytest.fixture
async def provider() -> AsyncIterator[FaultServer]:
    async with FaultServer().running() as server:
        yield server


class Stack:
    """The service with real adapters, its HTTP client, and a client of its status endpoint."""

    def __init__(self, base_url: str, *, breaker: BreakerConfig | None = None) -> None:
        self.http = HttpClient()
        self.service = StatusService(
            authorizer=allow_global_roles,
            connections=connections(),
            adapters=provider_adapters(self.http, urls={"github": base_url}),
            authenticator=owner,
            settings=Settings(
                cache_ttl=TTL, cache_jitter=0.0, adapter_timeout=1.0, breaker=breaker or BreakerConfig()
            ),
        )
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(self.service, lifespan=False)), base_url="http://t"
        )

    async def github(self) -> tuple[dict[str, Any], float]:
        """The github item of one status request, and how long the request took (seconds)."""
        started = time.monotonic()
        r = await self.client.get("/api/integrations/status", params={"projectId": "p1"})
        took = time.monotonic() - started
        assert r.status_code == 200
        return next(i for i in r.json()["items"] if i["key"] == "github"), took

    async def until_problem(self, attempts: int = 4) -> dict[str, Any]:
        """Ask until the github item carries a problem (a hang shows it once the adapter timeout passed)."""
        item: dict[str, Any] = {}
        for _ in range(attempts):
            item, took = await self.github()
            assert took < ANSWER_WITHIN, f"status took {took:.2f}s"
            if "problem" in item:
                return item
            await anyio.sleep(0.35)
        return item


@pytest.fixture
async def stack(provider: FaultServer) -> AsyncIterator[Stack]:
    baseline = len(asyncio.all_tasks())
    s = Stack(provider.url)
    async with s.service:
        yield s
    await s.client.aclose()
    await s.http.aclose()
    await provider.drained()
    assert len(asyncio.all_tasks()) <= baseline, f"a task outlived the service: {asyncio.all_tasks()}"


async def warm(stack: Stack) -> None:
    item, _ = await stack.github()
    assert item["status"] == "connected"
    assert "problem" not in item
    assert not item.get("stale")
    await anyio.sleep(TTL + 0.05)  # the entry is no longer fresh: the next request refreshes


STALE_FAULTS = [
    ("hang", "timeout"),
    ("drip", "timeout"),
    ("reset", "timeout"),
    ("500", "unknown"),
    ("502_html", "unknown"),
    ("429", "rate_limited"),
    ("403_exhausted", "rate_limited"),
    ("malformed", "unknown"),
    ("truncated", "unknown"),
    ("enormous", "unknown"),
]


@pytest.mark.parametrize(("mode", "code"), STALE_FAULTS)
async def test_fault_serves_last_good_value_stale(
    provider: FaultServer, stack: Stack, mode: str, code: str
) -> None:
    """A failing provider: the answer comes in time with the last good value, stale, and the problem."""
    await warm(stack)
    provider.mode = mode
    item = await stack.until_problem()
    assert item["problem"]["code"] == code
    assert item["stale"] is True
    assert item["status"] == "connected"  # the last good value, not an error
    assert item["summary"].startswith("Linked to main")


@pytest.mark.parametrize("mode", ["401", "404"])
async def test_lost_access_is_an_error_not_stale(provider: FaultServer, stack: Stack, mode: str) -> None:
    """401, or 404 on the repository, means access is gone: status error, oauth_revoked, not served stale."""
    await warm(stack)
    provider.mode = mode
    item = await stack.until_problem()
    assert item["problem"]["code"] == "oauth_revoked"
    assert item["status"] == "error"
    assert not item.get("stale")


async def test_refused_connection_is_a_timeout_problem() -> None:
    """A closed port: the cold status answers in time with github in error, problem timeout."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there now
    baseline = len(asyncio.all_tasks())
    s = Stack(closed)
    async with s.service:
        item = await s.until_problem()
    await s.client.aclose()
    await s.http.aclose()
    assert item["problem"]["code"] == "timeout"
    assert item["status"] == "error"
    assert len(asyncio.all_tasks()) <= baseline


async def test_breaker_opens_then_recovers(provider: FaultServer) -> None:
    """After repeated failures no call reaches the provider; once open_for passes, a trial call closes it."""
    s = Stack(provider.url, breaker=BreakerConfig(consecutive_failures=2, open_for=0.6))
    async with s.service:
        await warm(s)
        provider.mode = "500"
        for _ in range(4):
            item, took = await s.github()
            assert took < ANSWER_WITHIN
            await anyio.sleep(TTL + 0.05)
        seen = provider.requests
        for _ in range(2):  # open: served stale from cache, the provider hears nothing
            item, _ = await s.github()
            assert item["stale"] is True
            assert item["problem"]["code"] == "unknown"
        assert provider.requests == seen
        provider.mode = "ok"
        await anyio.sleep(0.65)
        item, _ = await s.github()
        item, _ = await s.github()
        assert provider.requests > seen
        assert "problem" not in item
        assert not item.get("stale")
    await s.client.aclose()
    await s.http.aclose()


async def test_faults_over_real_sockets_leave_no_connection_behind(provider: FaultServer) -> None:
    """Through uvicorn on loopback, faults answer in time and every provider connection is closed after."""
    baseline = len(asyncio.all_tasks())
    s = Stack(provider.url)
    async with serve(create_app(s.service)) as base, httpx.AsyncClient(base_url=base) as client:
        for mode in ("ok", "hang", "reset", "drip"):
            provider.mode = mode
            started = time.monotonic()
            r = await client.get("/api/integrations/status", params={"projectId": "p1"})
            assert r.status_code == 200
            assert time.monotonic() - started < ANSWER_WITHIN
            await anyio.sleep(TTL + 0.05)
    await s.http.aclose()
    await provider.drained()
    assert len(asyncio.all_tasks()) <= baseline, "a task outlived the service"
