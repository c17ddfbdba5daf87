"""VercelAdapter: status rules, weekly count with pagination, errors, and the deploy flow."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
import httpx
import pytest
from adapter_support import Router, fetch_ctx

from integration_status.adapters.http import HttpClient
from integration_status.adapters.vercel import VercelAdapter, VercelFacts, vercel_snapshot
from integration_status.core.clock import SYSTEM_CLOCK, utcnow
from integration_status.exceptions import (
    ProviderAuthError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from integration_status.protocols import ActionContext, ActionRequest, ProviderConnection
from integration_status.snapshot import Sensitive, Visibility, render_summary
from integration_status.testing import FakeClock

TEAM = "team_1a2b3c4d5e6f7g8h9i0j1k2l"
CONN = ProviderConnection(provider="vercel", settings={"project": "docs", "team_id": TEAM}, token="vc_SECRET")
PRJ = "/v9/projects/docs"


@pytest.mark.anyio
async def test_linked_with_deployments_is_live(
    http: HttpClient, router: Router, clock: Any, payload: Any
) -> None:
    """Deployments this week and a READY production: connected, "3 deployments this week · Live"."""
    router.add("GET", PRJ, payload("vercel/project_200_linked"))
    router.add(
        "GET", "/v6/deployments", payload("vercel/deployments_200"), payload("vercel/deployments_200_empty")
    )
    clock = FakeClock(start=1609492210 + 3600)  # an hour after the newest recorded deployment
    snap = await VercelAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "connected"
    assert render_summary(snap.summary, Visibility.none(), utcnow(clock)) == "3 deployments this week · Live"
    assert snap.detail("productionUrl") == Sensitive(kind="url", value="https://docs-9jaeg38me.vercel.app")
    assert all(r.url.params["teamId"] == TEAM for r in router.calls)
    listing = router.calls[1].url.params
    assert listing["projectId"] == "prj_ndlgr43fadlPyCtREAqxxdyFK"
    assert int(listing["since"]) == int(clock.time() * 1000) - 7 * 86400 * 1000


@pytest.mark.anyio
async def test_count_paginates_with_until(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """The weekly count follows pagination.next as until, and stops when there is no next page."""
    first = {
        "pagination": {"next": int(clock.time() * 1000) - 1000},
        "deployments": [{"created": clock.time() * 1000}],
    }
    second = {"pagination": {"next": None}, "deployments": [{"created": clock.time() * 1000 - 2000}] * 2}
    router.add("GET", PRJ, payload("vercel/project_200_linked"))
    router.add("GET", "/v6/deployments", httpx.Response(200, json=first), httpx.Response(200, json=second))
    snap = await VercelAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.detail("deploymentsThisWeek") == 3
    assert router.calls[2].url.params["until"] == str(first["pagination"]["next"])  # type: ignore[index]


@pytest.mark.anyio
async def test_linked_without_deployments_is_warning(
    http: HttpClient, router: Router, clock: Any, payload: Any
) -> None:
    """A linked project with no deployments: warning, "Linked · No deployments yet", deploy still possible."""
    router.add("GET", PRJ, payload("vercel/project_200_linked_no_deployments"))
    snap = await VercelAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "warning"
    assert render_summary(snap.summary, Visibility.full(), utcnow(clock)) == "Linked · No deployments yet"
    assert router.count("GET", "/v6/deployments") == 0
    assert next(a for a in snap.actions if a.id == "deploy").available


@pytest.mark.anyio
async def test_nothing_to_deploy_disables_deploy(
    http: HttpClient, router: Router, clock: Any, payload: Any
) -> None:
    """No deployments and no git link: deploy is unavailable with "No deployments yet"."""
    router.add("GET", PRJ, payload("vercel/project_200_no_git_link"))
    snap = await VercelAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    deploy = next(a for a in snap.actions if a.id == "deploy")
    assert not deploy.available
    assert deploy.reason == "No deployments yet"


@pytest.mark.anyio
async def test_no_project_is_disconnected(http: HttpClient, router: Router, clock: Any) -> None:
    """No project setting: disconnected, no calls."""
    snap = await VercelAdapter(http=http).fetch(ProviderConnection(provider="vercel"), fetch_ctx(clock))
    assert snap.status == "disconnected"
    assert router.calls == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vercel/error_403_invalid_token", ProviderAuthError),
        ("vercel/error_403_forbidden", ProviderAuthError),
        ("vercel/error_404_not_found", ProviderAuthError),
        ("vercel/error_429_rate_limited", ProviderRateLimited),
        ("vercel/error_500_internal", ProviderUnavailable),
    ],
)
async def test_project_errors(
    http: HttpClient, router: Router, clock: Any, payload: Any, name: str, expected: type
) -> None:
    """Expired token / revoked access are auth errors; 429 rate limited; 500 unavailable after retries."""
    router.add("GET", PRJ, payload(name))
    clock_ = _AutoClock()
    with pytest.raises(expected) as info:
        await VercelAdapter(http=http).fetch(CONN, fetch_ctx(clock_))
    assert "vc_SECRET" not in repr(info.value)


class _AutoClock(FakeClock):
    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await super().sleep(0)


def _action_ctx(clock: FakeClock) -> tuple[ActionContext, list[Any], list[Callable[[], Awaitable[None]]]]:
    events: list[Any] = []
    spawned: list[Callable[[], Awaitable[None]]] = []

    async def publish(event: Any) -> None:
        events.append(dict(event))

    ctx = ActionContext(clock=clock, operation_id="op_9", timeout=5, publish=publish, spawn=spawned.append)
    return ctx, events, spawned


async def _drive(clock: FakeClock, work: Callable[[], Awaitable[None]], steps: int, step: float) -> None:
    """Run background work while moving the fake clock forward."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(work)
        for _ in range(steps):
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            clock.advance(step)


@pytest.mark.anyio
async def test_deploy_redeploys_production_and_reports(
    http: HttpClient, router: Router, clock: FakeClock, payload: Any
) -> None:
    """deploy POSTs a production redeploy, answers done=False, publishes started, polls, then finished."""
    router.add("GET", PRJ, payload("vercel/project_200_linked"))
    router.add("POST", "/v13/deployments", payload("vercel/create_deployment_200"))
    dpl = "/v13/deployments/dpl_7gHjK8lMn9oPq0rSt1uVw2xYz3aB"
    building = {"id": "x", "readyState": "BUILDING", "url": "docs-k3j2h1g0f.vercel.app"}
    ready = {"id": "x", "readyState": "READY", "url": "docs-k3j2h1g0f.vercel.app"}
    router.add("GET", dpl, httpx.Response(200, json=building), httpx.Response(200, json=ready))
    adapter = VercelAdapter(http=http, deploy_poll_interval=2, deploy_timeout=60)
    ctx, events, spawned = _action_ctx(clock)
    req = ActionRequest(project_id="proj-1", provider="vercel", action="deploy")
    outcome = await adapter.action_handlers()["deploy"](req, CONN, ctx)
    assert not outcome.done
    body = json.loads(router.calls[1].content)
    assert body["deploymentId"] == "dpl_2euZBFqxYdDMDG1jTrHFnNZ2eUVa"
    assert body["target"] == "production"
    assert body["name"] == "docs"
    assert events == [
        {"type": "deploy:started", "provider": "vercel", "projectId": "proj-1", "operationId": "op_9",
         "ts": int(clock.time() * 1000)}
    ]  # fmt: skip
    assert len(spawned) == 1
    await _drive(clock, spawned[0], steps=5, step=2)
    assert router.count("GET", dpl) == 2
    finished = events[-1]
    assert finished["type"] == "deploy:finished"
    assert finished["success"] is True
    assert finished["url"] == "https://docs-k3j2h1g0f.vercel.app"
    assert finished["operationId"] == "op_9"


@pytest.mark.anyio
async def test_deploy_from_git_when_nothing_to_redeploy(
    http: HttpClient, router: Router, clock: FakeClock, payload: Any
) -> None:
    """No production deployment yet: deploy the linked production branch through gitSource."""
    router.add("GET", PRJ, payload("vercel/project_200_linked_no_deployments"))
    router.add("POST", "/v13/deployments", payload("vercel/create_deployment_200"))
    ctx, _, _ = _action_ctx(clock)
    req = ActionRequest(project_id="proj-1", provider="vercel", action="deploy")
    await VercelAdapter(http=http).action_handlers()["deploy"](req, CONN, ctx)
    body = json.loads(router.calls[1].content)
    assert body["gitSource"] == {"type": "github", "ref": "main", "repoId": 123456789}


@pytest.mark.anyio
async def test_deploy_failure_and_timeout(
    http: HttpClient, router: Router, clock: FakeClock, payload: Any
) -> None:
    """An ERROR deployment finishes with success false; one that never ends times out as a failure."""
    router.add("GET", PRJ, payload("vercel/project_200_linked"))
    router.add("POST", "/v13/deployments", payload("vercel/create_deployment_200"))
    dpl = "/v13/deployments/dpl_7gHjK8lMn9oPq0rSt1uVw2xYz3aB"
    router.add("GET", dpl, httpx.Response(200, json={"readyState": "ERROR"}))
    adapter = VercelAdapter(http=http, deploy_poll_interval=1, deploy_timeout=5)
    req = ActionRequest(project_id="proj-1", provider="vercel", action="deploy")
    ctx, events, spawned = _action_ctx(clock)
    await adapter.action_handlers()["deploy"](req, CONN, ctx)
    await _drive(clock, spawned[0], steps=3, step=1)
    assert events[-1]["success"] is False
    router.add("GET", dpl, httpx.Response(200, json={"readyState": "BUILDING"}))
    ctx, events, spawned = _action_ctx(clock)
    await adapter.action_handlers()["deploy"](req, CONN, ctx)
    await _drive(clock, spawned[0], steps=8, step=1)
    assert events[-1]["type"] == "deploy:finished"
    assert events[-1]["success"] is False


@pytest.mark.anyio
async def test_deploy_hook_is_used_without_token_and_never_logged(
    router: Router, clock: FakeClock, payload: Any
) -> None:
    """A deploy_hook setting is POSTed without Authorization; its URL appears in no event or outcome."""
    hook = "https://api.vercel.com/v1/integrations/deploy/prj_ndlgr43fadlPyCtREAqxxdyFK/TYK5SZROD3"
    router.add("POST", "/v1/integrations/deploy/prj_ndlgr43fadlPyCtREAqxxdyFK/TYK5SZROD3",
               payload("vercel/deploy_hook_201_UNVERIFIED"))  # fmt: skip
    conn = ProviderConnection(
        provider="vercel", settings={"project": "docs", "deploy_hook": hook}, token="vc_SECRET"
    )
    async with HttpClient(transport=httpx.MockTransport(router)) as http:
        ctx, events, _spawned = _action_ctx(clock)
        req = ActionRequest(project_id="proj-1", provider="vercel", action="deploy")
        outcome = await VercelAdapter(http=http).action_handlers()["deploy"](req, conn, ctx)
    assert "authorization" not in router.calls[0].headers
    assert "TYK5SZROD3" not in repr(outcome) + json.dumps(events)
    assert events[0]["type"] == "deploy:started"


@pytest.mark.anyio
async def test_loopback_timeout_and_reset(hanging_server: str, resetting_server: str) -> None:
    """Against real sockets the adapter gives up within its budget, and a reset is a timeout."""
    async with HttpClient() as http:
        for server in (hanging_server, resetting_server):
            start = SYSTEM_CLOCK.monotonic()
            with pytest.raises(ProviderTimeout):
                await VercelAdapter(http=http, base_url=server).fetch(
                    CONN, fetch_ctx(SYSTEM_CLOCK, timeout=0.3)
                )
            assert SYSTEM_CLOCK.monotonic() - start < 1.0


def test_git_link_decides_connected_and_the_link_action() -> None:
    """Live without a Git link: warning "… · Live · No Git link" and Link offered; with one: connected, no Link."""
    live = VercelFacts(has_deployments=True, deployments_this_week=3, production_state="READY")
    unlinked = vercel_snapshot(live)
    assert unlinked.status == "warning"
    assert render_summary(unlinked.summary, Visibility.none(), utcnow(SYSTEM_CLOCK)) == (
        "3 deployments this week · Live · No Git link"
    )
    assert next(a for a in unlinked.actions if a.id == "link").available
    linked = vercel_snapshot(attrs.evolve(live, git_linked=True))
    assert linked.status == "connected"
    assert next(a for a in linked.actions if a.id == "link").reason == "Already linked"


def test_paused_project_warns() -> None:
    """A paused project (its production deployment blocked until unpaused): warning "… · Paused"."""
    facts = VercelFacts(
        has_deployments=True, deployments_this_week=1, production_state="READY", git_linked=True, paused=True
    )
    snap = vercel_snapshot(facts)
    assert snap.status == "warning"
    assert render_summary(snap.summary, Visibility.none(), utcnow(SYSTEM_CLOCK)).endswith("Paused")
