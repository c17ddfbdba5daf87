"""SanityAdapter: project state, webhook health, today's document count, errors and actions."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from adapter_support import Router, fetch_ctx

from integration_status.adapters.http import HttpClient
from integration_status.adapters.sanity import UPDATED_SINCE_QUERY, SanityAdapter
from integration_status.core.clock import SYSTEM_CLOCK, utcnow
from integration_status.exceptions import (
    ProviderAuthError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from integration_status.protocols import ActionContext, ActionRequest, ProviderConnection
from integration_status.snapshot import Visibility, render_summary

CONN = ProviderConnection(provider="sanity", settings={"project_id": "abc123xy"}, token="sk_SANITYSECRET")
PROJECT = "/v2021-06-07/projects/abc123xy"
HOOKS = "/v2025-08-04/hooks/projects/abc123xy"
QUERY = "/v2021-10-21/data/query/production"


def _ok_messages() -> httpx.Response:
    return httpx.Response(
        200, json=[{"createdAt": "2025-08-07T09:15:36Z", "status": "success", "hookId": "hook1"}]
    )


def _setup(router: Router, payload: Any, *, messages: Any = None, hooks: Any = None) -> None:
    router.add("GET", PROJECT, payload("sanity/project_200"))
    router.add("GET", HOOKS, hooks if hooks is not None else payload("sanity/hooks_200"))
    router.add("GET", f"{HOOKS}/hook1/messages", messages if messages is not None else _ok_messages())
    router.add("GET", f"{HOOKS}/hook2/messages", httpx.Response(200, json=[]))
    router.add("GET", QUERY, payload("sanity/query_count_updated_200"))


@pytest.mark.anyio
async def test_live_sync_counts_docs_today(
    http: HttpClient, router: Router, clock: Any, payload: Any
) -> None:
    """Delivering hooks: connected, "5 docs updated today · Live sync", counted since UTC midnight."""
    _setup(router, payload)
    snap = await SanityAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "connected"
    assert (
        render_summary(snap.summary, Visibility.none(), utcnow(clock)) == "5 docs updated today · Live sync"
    )
    query = next(r for r in router.calls if r.url.path == QUERY)
    assert query.url.host == "abc123xy.api.sanity.io"
    assert query.url.params["query"] == UPDATED_SINCE_QUERY
    assert json.loads(query.url.params["$since"]) == "2025-11-26T00:00:00Z"
    assert query.headers["authorization"] == "Bearer sk_SANITYSECRET"


@pytest.mark.anyio
async def test_failing_deliveries_warn(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """Every hook failing: warning "Connected · Webhook issues", the count for everyone, names only with access."""
    _setup(router, payload, messages=payload("sanity/hook_messages_200"))
    router.add("GET", f"{HOOKS}/hook2/messages", payload("sanity/hook_messages_200"))
    snap = await SanityAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "warning"
    now = utcnow(clock)
    assert (
        render_summary(snap.summary, Visibility.none(), now) == "Connected · Webhook issues · 2 hooks failing"
    )
    assert (
        render_summary(snap.summary, Visibility.full(), now)
        == "Connected · Webhook issues · 2 hooks failing: test versions, legacy hook"
    )
    assert snap.detail("webhookIssues") == 2


@pytest.mark.anyio
async def test_one_failing_hook_among_healthy_ones_is_an_issue(
    http: HttpClient, router: Router, clock: Any, payload: Any
) -> None:
    """One hook failing every delivery next to a delivering one is still a webhook issue, not "Live sync"."""
    _setup(router, payload, messages=payload("sanity/hook_messages_200"))
    router.add("GET", f"{HOOKS}/hook2/messages", _ok_messages())
    snap = await SanityAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "warning"
    assert render_summary(snap.summary, Visibility.none(), utcnow(clock)) == (
        "Connected · Webhook issues · 1 hook failing"
    )


@pytest.mark.anyio
async def test_a_hook_that_recovered_is_healthy(
    http: HttpClient, router: Router, clock: Any, payload: Any
) -> None:
    """Only the latest delivery counts: a failure followed by a success is a delivering hook."""
    messages = [
        {"createdAt": "2025-08-07T09:15:36Z", "status": "failure"},
        {"createdAt": "2025-08-07T09:20:00Z", "status": "success"},
    ]
    _setup(router, payload, messages=httpx.Response(200, json=messages))
    snap = await SanityAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "connected"


@pytest.mark.anyio
async def test_disabled_hook_is_an_issue(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """A hook Sanity or a user disabled is reported, not skipped; its delivery log is not read."""
    hooks = [
        {"id": "hook1", "name": "Search index", "dataset": "*"},
        {"id": "h2", "name": "CDN purge", "dataset": "production", "isDisabledByUser": True},
        {"id": "h3", "name": "Old", "dataset": "production", "isDisabled": True, "deletedAt": "2025-01-01"},
    ]
    _setup(router, payload, hooks=httpx.Response(200, json=hooks))
    snap = await SanityAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "warning"
    now = utcnow(clock)
    assert (
        render_summary(snap.summary, Visibility.none(), now) == "Connected · Webhook issues · 1 hook disabled"
    )
    assert render_summary(snap.summary, Visibility.full(), now).endswith("1 hook disabled: CDN purge")
    assert router.count("GET", f"{HOOKS}/h2/messages") == 0


@pytest.mark.anyio
async def test_no_enabled_hook_warns(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """Hooks that are disabled or aimed at another dataset do not count."""
    hooks = [{"id": "h1", "isDisabled": True, "dataset": "*"}, {"id": "h2", "dataset": "staging"}]
    _setup(router, payload, hooks=httpx.Response(200, json=hooks))
    snap = await SanityAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "warning"


@pytest.mark.anyio
async def test_blocked_project_is_error(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """A blocked or disabled project: error with a problem, whatever the calls made alongside answered."""
    env = payload("sanity/project_200")
    env["body"]["isDisabled"] = True
    router.add("GET", PROJECT, env)  # hooks and query are unrouted: they fail
    snap = await SanityAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "error"
    assert snap.problem is not None
    assert snap.problem.hint == "Project disabled in Sanity"


@pytest.mark.anyio
async def test_no_project_is_disconnected(http: HttpClient, router: Router, clock: Any) -> None:
    """No project_id: disconnected without calls."""
    snap = await SanityAdapter(http=http).fetch(ProviderConnection(provider="sanity"), fetch_ctx(clock))
    assert snap.status == "disconnected"
    assert router.calls == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sanity/error_401_session_not_found", ProviderAuthError),
        ("sanity/error_401_session_expired", ProviderAuthError),
        ("sanity/error_403_forbidden", ProviderAuthError),
        ("sanity/error_429_rate_limited", ProviderRateLimited),
        ("sanity/error_400_query_parse", ProviderUnavailable),
    ],
)
async def test_query_errors(
    http: HttpClient, router: Router, clock: Any, payload: Any, name: str, expected: type
) -> None:
    """Errors on the query map like every other call (a 429 whose wait does not fit is final)."""
    _setup(router, payload)
    env = payload(name)
    if env["status"] == 429:
        env["headers"]["retry-after"] = "30"
    router.add("GET", QUERY, env)
    with pytest.raises(expected) as info:
        await SanityAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert "SANITYSECRET" not in repr(info.value)


@pytest.mark.anyio
async def test_open_studio_and_sync(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """open-studio answers the studioHost URL; sync re-runs the count and is done."""
    _setup(router, payload)

    async def publish(event: Any) -> None:
        return None

    ctx = ActionContext(clock=clock, operation_id="op", timeout=5, publish=publish, spawn=lambda fn: None)
    handlers = SanityAdapter(http=http).action_handlers()
    req = ActionRequest(project_id="p", provider="sanity", action="open-studio")
    studio = await handlers["open-studio"](req, CONN, ctx)
    assert studio.data == {"url": "https://acme.sanity.studio"}
    assert studio.changes_state is False
    synced = await handlers["sync"](req, CONN, ctx)
    assert synced.done
    assert synced.data == {"docsUpdatedToday": 5}
    configured = ProviderConnection(
        provider="sanity", settings={"project_id": "abc123xy", "studio_url": "https://s.test"}
    )
    assert (await handlers["open-studio"](req, configured, ctx)).data == {"url": "https://s.test"}


@pytest.mark.anyio
async def test_loopback_timeout_and_reset(hanging_server: str, resetting_server: str) -> None:
    """Against real sockets the adapter gives up within its budget, and a reset is a timeout."""
    async with HttpClient() as http:
        for server in (hanging_server, resetting_server):
            start = SYSTEM_CLOCK.monotonic()
            with pytest.raises(ProviderTimeout):
                await SanityAdapter(http=http, api_url=server).fetch(
                    CONN, fetch_ctx(SYSTEM_CLOCK, timeout=0.3)
                )
            assert SYSTEM_CLOCK.monotonic() - start < 1.0
