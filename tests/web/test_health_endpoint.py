"""GET {prefix}/health through the Starlette mount: 200 within the thresholds, 503 with reasons otherwise."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import httpx
import pytest

from integration_status.exceptions import ProviderTimeout
from integration_status.observability import HealthRecorder
from integration_status.protocols import RequestInfo, Viewer
from integration_status.service import StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.snapshot import ProviderSnapshot
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections, snapshot
from integration_status.web.starlette import create_app

pytestmark = pytest.mark.anyio

HEALTH = "/api/integrations/health"


async def owner(request: RequestInfo) -> Viewer | None:
    return Viewer(user_id="u1", roles={"owner"})


async def owners(viewer: Viewer) -> bool:
    return "owner" in viewer.roles


Make = Callable[..., Awaitable[tuple[StatusService, httpx.AsyncClient]]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    async with contextlib.AsyncExitStack() as stack:

        async def build(
            *adapters: ScriptedAdapter, clock: FakeClock, projects: int = 1
        ) -> tuple[StatusService, httpx.AsyncClient]:
            providers = [a.provider for a in adapters]
            connections = StaticConnections(
                {
                    f"p{i}": StaticConnections.linked(f"p{i}", *providers).projects[f"p{i}"]
                    for i in range(projects)
                }
            )
            service = StatusService(
                authorizer=allow_global_roles,
                connections=connections,
                adapters=list(adapters),
                authenticator=owner,
                health_authorizer=owners,
                clock=clock,
                health=HealthRecorder(clock=clock, window=300),
            )
            await stack.enter_async_context(service)
            transport = httpx.ASGITransport(app=create_app(service, lifespan=False))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://t")
            )
            return service, client

        yield build


async def test_healthy_service_answers_200_with_every_check(make: Make) -> None:
    """Enough fast, successful traffic: 200, status ok, one check per adapter plus p95 and SSE."""
    clock = FakeClock()
    _, client = await make(ScriptedAdapter("github", snapshot("github")), clock=clock, projects=25)
    for i in range(25):
        r = await client.get("/api/integrations/status", params={"projectId": f"p{i}"})
        assert r.status_code == 200
    r = await client.get(HEALTH)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["windowSeconds"] == 300
    checks = {c["name"]: c for c in body["checks"]}
    assert set(checks) == {"adapter.github", "status.p95", "sse.stability"}
    assert checks["adapter.github"] == {
        "name": "adapter.github",
        "passed": True,
        "observed": 0.0,
        "threshold": 0.05,
        "samples": 25,
        "detail": "0 timeouts, 0 errors",
    }
    assert checks["status.p95"]["samples"] == 25
    assert r.headers["cache-control"] == "no-store"


async def test_adapter_timeouts_make_it_503_and_say_which(make: Make) -> None:
    """Timeouts on one provider over 5% of its calls: 503, and only that adapter's check fails."""
    clock = FakeClock()
    github = ScriptedAdapter("github", snapshot("github"))
    steps: list[ProviderSnapshot | ProviderTimeout] = [snapshot("vercel")] * 22 + [
        ProviderTimeout("slow", provider="vercel")
    ] * 3
    vercel = ScriptedAdapter("vercel", *steps)
    _, client = await make(github, vercel, clock=clock, projects=25)
    for i in range(25):
        await client.get("/api/integrations/status", params={"projectId": f"p{i}"})
    r = await client.get(HEALTH)
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded"
    failed = [c for c in body["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["adapter.vercel"]
    assert failed[0]["observed"] == pytest.approx(3 / 25)
    assert failed[0]["detail"] == "3 timeouts, 0 errors"


async def test_slow_status_requests_make_it_503_until_they_age_out(make: Make) -> None:
    """Status answers held to the deadline by a hanging provider push p95 over 500 ms: 503; five minutes of
    quiet later the slow samples have left the window and it is 200 again."""
    clock = FakeClock()

    async def slow() -> ProviderSnapshot:
        await clock.sleep(10)
        return snapshot("github")

    _, client = await make(ScriptedAdapter("github", slow), clock=clock, projects=20)

    async def one(i: int) -> None:
        r = await client.get("/api/integrations/status", params={"projectId": f"p{i}"})
        assert r.status_code == 200

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(one, i)
        await anyio.wait_all_tasks_blocked()  # every request waits on its deadline, every fetch on the clock
        clock.advance(0.6)  # past the 0.45 s deadline, measured as each request's duration
    r = await client.get(HEALTH)
    assert r.status_code == 503
    p95 = next(c for c in r.json()["checks"] if c["name"] == "status.p95")
    assert p95["passed"] is False
    assert p95["observed"] >= 0.5
    clock.advance(1)  # the fetches finish (successfully) in the background
    await anyio.wait_all_tasks_blocked()
    clock.advance(300)
    r = await client.get(HEALTH)
    assert r.status_code == 200


async def test_too_little_traffic_is_healthy(make: Make) -> None:
    """A single failing call is not enough to judge: 200, and the check says why."""
    clock = FakeClock()
    _, client = await make(ScriptedAdapter("github", ProviderTimeout("slow", provider="github")), clock=clock)
    await client.get("/api/integrations/status", params={"projectId": "p0"})
    r = await client.get(HEALTH)
    assert r.status_code == 200
    check = next(c for c in r.json()["checks"] if c["name"] == "adapter.github")
    assert check["observed"] == 1.0
    assert check["detail"] == "fewer than 20 samples"


# --- who sees what --------------------------------------------------------------------------------------------


async def by_role(request: RequestInfo) -> Viewer | None:
    role = request.headers.get("x-role")
    return None if not role else Viewer(user_id="u", roles={role})


async def _client(stack: contextlib.AsyncExitStack, **kwargs: object) -> httpx.AsyncClient:
    clock = FakeClock()
    service = StatusService(
        connections=StaticConnections.linked("p", "github"),
        adapters=[ScriptedAdapter("github", ProviderTimeout("slow", provider="github"))],
        authenticator=by_role,
        clock=clock,
        health=HealthRecorder(clock=clock, window=300),
        **kwargs,  # type: ignore[arg-type]
    )
    await stack.enter_async_context(service)
    # Enough failed adapter calls that the detailed report is a 503 naming github.
    for _ in range(25):
        service.metrics.observe_fetch("github", 0.01, "timeout")
    transport = httpx.ASGITransport(app=create_app(service, lifespan=False))
    return await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://t"))


async def test_anyone_else_gets_a_liveness_answer_without_detail() -> None:
    """Unauthenticated callers and viewers the authorizer refuses get 200 {"status": "ok"}: no provider name, no
    rate, even while the detailed report is a 503."""
    async with contextlib.AsyncExitStack() as stack:
        client = await _client(stack, health_authorizer=owners)
        for headers in ({}, {"X-Role": "viewer"}, {"X-Role": "member"}):
            r = await client.get(HEALTH, headers=headers)
            assert r.status_code == 200
            assert r.json() == {"status": "ok"}
            assert "github" not in r.text
        detailed = await client.get(HEALTH, headers={"X-Role": "owner"})
        assert detailed.status_code == 503
        assert "adapter.github" in detailed.text


async def test_without_a_health_authorizer_nobody_sees_detail() -> None:
    """The default: even an owner gets only the liveness answer."""
    async with contextlib.AsyncExitStack() as stack:
        client = await _client(stack)
        r = await client.get(HEALTH, headers={"X-Role": "owner"})
        assert (r.status_code, r.json()) == (200, {"status": "ok"})


async def test_a_repeated_query_parameter_is_a_400_on_health_too() -> None:
    """/health follows the one rule for repeated parameters: 400 with the error object."""
    async with contextlib.AsyncExitStack() as stack:
        client = await _client(stack)
        r = await client.get(HEALTH + "?x=1&x=2")
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_request"
