"""A shared store that goes away: status serves this process's last seen copy, actions and webhooks answer 503
and run nothing (the Redis version of these checks is in tests/e2e/test_multiworker.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from integration_status.backends.memory import MemoryEngine
from integration_status.core.cache import SnapshotCache
from integration_status.core.clock import utcnow
from integration_status.exceptions import BackendUnavailable
from integration_status.models import PROVIDERS
from integration_status.protocols import (
    ActionContext,
    ActionOutcome,
    ActionRequest,
    CacheEntry,
    ProviderConnection,
    RequestInfo,
    Viewer,
)
from integration_status.service import Settings, StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections, snapshot
from integration_status.web import handlers

pytestmark = pytest.mark.anyio
DOWN = "Redis at 10.0.0.9:6379 is unreachable while testing"


class Switch:
    """Wraps a store; while ``down`` every call raises BackendUnavailable, as the Redis stores do."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise BackendUnavailable(DOWN)
            return await method(*args, **kwargs)

        return call


async def authenticate(request: RequestInfo) -> Viewer | None:
    return Viewer(user_id="u", roles={"owner"})


Made = tuple[StatusService, list[Switch], dict[str, ScriptedAdapter]]


def make(clock: FakeClock, executions: list[str]) -> Made:
    engine = MemoryEngine(clock=clock)
    switches = [Switch(engine.cache_store), Switch(engine.idempotency), Switch(engine.deliveries)]
    engine.cache_store, engine.idempotency, engine.deliveries = switches  # type: ignore[assignment]

    async def deploy(request: ActionRequest, conn: ProviderConnection, ctx: ActionContext) -> ActionOutcome:
        executions.append(ctx.operation_id)
        return ActionOutcome(operation_id=ctx.operation_id, changes_state=False)

    adapters = {p: ScriptedAdapter(p, snapshot(p, text=f"{p} ok")) for p in PROVIDERS}
    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p", *PROVIDERS),
        adapters=adapters,
        authenticator=authenticate,
        engine=engine,
        clock=clock,
        settings=Settings(cache_ttl=10.0, cache_jitter=0.0),
        action_handlers={("vercel", "deploy"): deploy},
    )
    return service, switches, adapters  # type: ignore[return-value]


def status_request() -> RequestInfo:
    return handlers.request_info("GET", "/status", {}, {"projectId": "p"})


def items(response: handlers.Response) -> dict[str, tuple[str, bool]]:
    body = json.loads(response.body)
    return {i["key"]: (i["summary"], i.get("stale", False)) for i in body["items"]}


async def test_status_serves_the_local_copy_while_the_store_is_down() -> None:
    """Store down: 200 from the last seen entries (fresh until their TTL, then stale) and no provider call."""
    clock, executions = FakeClock(), list[str]()
    service, switches, adapters = make(clock, executions)
    async with service:
        warm = await handlers.handle_status(service, status_request())
        switches[0].down = True
        during = await handlers.handle_status(service, status_request())
        clock.advance(11)
        later = await handlers.handle_status(service, status_request())
    assert warm.status == during.status == later.status == 200
    assert items(during) == {p: (f"{p} ok", False) for p in PROVIDERS}
    assert items(later) == {p: (f"{p} ok", True) for p in PROVIDERS}
    assert {p: a.calls for p, a in adapters.items()} == dict.fromkeys(PROVIDERS, 1)


async def test_cold_status_with_the_store_down_is_placeholders_not_an_error() -> None:
    """Store down before anything was seen: 200 with placeholder items, not a 500."""
    clock, executions = FakeClock(), list[str]()
    service, switches, _ = make(clock, executions)
    switches[0].down = True
    async with service:
        response = await handlers.handle_status(service, status_request())
    assert response.status == 200
    body = json.loads(response.body)
    placeholders = {(i["status"], i["stale"], i["problem"]["code"]) for i in body["items"]}
    assert placeholders == {("warning", True, "timeout")}


async def test_peek_remembers_only_what_the_store_last_said() -> None:
    """An entry the store no longer holds is forgotten locally too (not served when the store is down)."""
    clock = FakeClock()
    store = Switch(MemoryEngine(clock=clock).cache_store)
    cache = SnapshotCache(store, clock=clock)
    entry = CacheEntry(
        snapshot=snapshot("github"), fresh_until=clock.time() + 5, changed_at=utcnow(clock), checked_at=0
    )
    await store.save("p:github", entry, keep_for=60)
    assert await cache.peek("p:github") == entry
    store.down = True
    assert await cache.peek("p:github") == entry
    store.down = False
    await store.delete("p:github")
    assert await cache.peek("p:github") is None
    store.down = True
    assert await cache.peek("p:github") is None


async def test_action_with_the_store_down_is_a_503_and_runs_nothing() -> None:
    """Store down: POST /actions answers 503 with the error object (no endpoint) and runs nothing."""
    clock, executions = FakeClock(), list[str]()
    service, switches, _ = make(clock, executions)
    body = json.dumps({"projectId": "p", "provider": "vercel", "action": "deploy"}).encode()
    request = handlers.request_info("POST", "/actions", {"Idempotency-Key": "k1"}, {})
    async with service:
        switches[1].down = True
        refused = await handlers.handle_action(service, request, body)
        switches[1].down = False
        ran = await handlers.handle_action(service, request, body)
    assert refused.status == 503
    error = json.loads(refused.body)
    assert error["success"] is False
    assert error["error"]["code"] == "unknown"
    assert "unavailable" in error["error"]["message"]
    assert b"10.0.0.9" not in refused.body
    assert ran.status == 200
    assert len(executions) == 1


async def test_webhook_with_the_store_down_is_a_503() -> None:
    """Store down: a webhook delivery answers 503 so the provider retries it later."""
    from integration_status.core.webhooks import sign_github
    from integration_status.protocols import Secret
    from integration_status.service.webhooks import WebhookTarget

    async def resolve(provider: str, headers: Any, payload: Any) -> WebhookTarget:
        return WebhookTarget(project_id="p", secret=Secret("s3cret"))

    clock, executions = FakeClock(), list[str]()
    service, switches, _ = make(clock, executions)
    service._webhooks = resolve
    raw = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()
    headers = {**sign_github("s3cret", raw), "X-GitHub-Event": "push", "X-GitHub-Delivery": "d1"}
    request = handlers.request_info("POST", "/webhooks/github", headers, {})
    async with service:
        switches[2].down = True
        refused = await handlers.handle_webhook(service, "github", request, raw)
        switches[2].down = False
        accepted = await handlers.handle_webhook(service, "github", request, raw)
    assert refused.status == 503
    assert json.loads(refused.body)["error"]["code"] == "unknown"
    assert b"10.0.0.9" not in refused.body
    assert (accepted.status, json.loads(accepted.body)) == (200, {"ok": True})
