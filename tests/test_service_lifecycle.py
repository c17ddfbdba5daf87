"""The service stays up whatever its background work does, and idempotency leases outlive the actions."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import anyio
import pytest

from integration_status._logging import capture_logs
from integration_status.exceptions import BackendUnavailable, ConfigurationError, IdempotencyConflict
from integration_status.protocols import (
    ActionContext,
    ActionOutcome,
    ActionRequest,
    ProviderConnection,
    Viewer,
)
from integration_status.service import Settings, StatusService, facade
from integration_status.service.facade import allow_global_roles
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections

pytestmark = pytest.mark.anyio
OWNER = Viewer(user_id="u", roles={"owner"})
DEPLOY = {"projectId": "p", "provider": "vercel", "action": "deploy"}


def _service() -> StatusService:
    """A service of one project with GitHub linked, on a FakeClock."""
    return StatusService(
        authorizer=allow_global_roles, connections=StaticConnections.linked("p", "github"), clock=FakeClock()
    )


async def test_a_failing_background_job_does_not_stop_the_service() -> None:
    """A background job that raises (a store outage during a refresh) is logged; requests keep working."""
    service = _service()
    async with service:

        async def broken() -> None:
            raise BackendUnavailable("store down")

        service.spawn(broken)
        await anyio.wait_all_tasks_blocked()
        assert service.running
        result = await service.status("p", OWNER)
    assert len(result.envelope.items) == 4


async def test_the_lease_outlives_a_long_action_timeout() -> None:
    """With action_timeout=120 s, a retry with the same key 61 s into a 90 s action is a 409, never a second
    run."""
    clock = FakeClock()
    runs = 0

    async def slow_deploy(request: ActionRequest, connection: ProviderConnection, ctx: ActionContext) -> Any:
        nonlocal runs
        runs += 1
        await ctx.clock.sleep(90)
        return ActionOutcome(operation_id=ctx.operation_id)

    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p", "vercel"),
        adapters=[ScriptedAdapter("vercel")],
        action_handlers={("vercel", "deploy"): slow_deploy},
        settings=Settings(action_timeout=120),
        clock=clock,
    )
    async with service, anyio.create_task_group() as tg:
        tg.start_soon(lambda: service.act(OWNER, DEPLOY, idempotency_key="same"))
        await anyio.wait_all_tasks_blocked()
        clock.advance(61)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(IdempotencyConflict):
            await service.act(OWNER, DEPLOY, idempotency_key="same")
        clock.advance(30)
    assert runs == 1


async def test_a_delivery_whose_events_could_not_be_published_is_not_a_duplicate_on_retry() -> None:
    """When publishing a verified delivery's events fails (the store is down), the delivery is forgotten, so
    the provider's retry is accepted and its events published, not dropped as a duplicate."""
    import json

    from integration_status.protocols import Secret
    from integration_status.service.webhooks import WebhookTarget, sign_github

    async def resolve(provider: str, headers: Any, payload: Any) -> WebhookTarget:
        return WebhookTarget(project_id="p", secret=Secret("whsec"))

    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p", "github"),
        webhooks=resolve,
        clock=FakeClock(),
    )
    body = json.dumps(
        {"ref": "refs/heads/main", "after": "a" * 40, "repository": {"full_name": "o/r"}}
    ).encode()
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1", **sign_github("whsec", body)}
    real_publish = service.engine.events.publish
    failures = [BackendUnavailable("store down")]

    async def flaky_publish(project_id: str, event: Any) -> str:
        if failures:
            raise failures.pop()
        return await real_publish(project_id, event)

    service.engine.events.publish = flaky_publish
    async with service:
        with pytest.raises(BackendUnavailable):
            await service.ingest_webhook("github", headers, body)
        retry = await service.ingest_webhook("github", headers, body)
        again = await service.ingest_webhook("github", headers, body)
    assert retry.status == 200
    assert [e["type"] for e in retry.events] == ["github:push"]
    assert again.body == {"ok": True, "duplicate": True}


async def test_a_plain_task_runs_outside_the_task_group_and_is_cancelled_when_the_service_stops() -> None:
    """spawn_plain starts a bare asyncio task (no task-group bookkeeping per stream); the service keeps it and
    cancels it on exit."""
    service = _service()
    started = anyio.Event()
    cancelled = False

    async def forever() -> None:
        nonlocal cancelled
        started.set()
        try:
            await anyio.sleep_forever()
        except BaseException:
            cancelled = True
            raise

    async with service:
        service.spawn_plain(forever)
        await started.wait()
        (task,) = service._plain
        assert task is not asyncio.current_task()
        assert not task.done()
    await asyncio.sleep(0)  # the cancellation is delivered at the task's next step
    assert cancelled
    assert task.cancelled()
    assert not service._plain


async def test_a_plain_task_that_ends_or_raises_is_forgotten_and_what_it_raised_is_logged() -> None:
    service = _service()

    async def broken() -> None:
        raise BackendUnavailable("store down")

    async def fine() -> None:
        pass

    with capture_logs() as logs:
        async with service:
            service.spawn_plain(broken)
            service.spawn_plain(fine)
            await anyio.wait_all_tasks_blocked()
            await asyncio.sleep(0)  # done callbacks run one loop step after their task
            assert not service._plain
            assert service.running
    failures = [e for e in logs if e["event"] == "integration_status.service.background_failed"]
    assert [e["error"] for e in failures] == ["BackendUnavailable"]


async def test_a_plain_task_needs_a_running_service() -> None:
    async def job() -> None:
        pass

    with pytest.raises(ConfigurationError, match="not running"):
        _service().spawn_plain(job)


async def test_off_asyncio_a_plain_task_runs_in_the_task_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no asyncio loop runs (another anyio backend), spawn_plain is spawn."""
    service = _service()
    ran = anyio.Event()

    async def job() -> None:
        ran.set()

    def no_loop() -> asyncio.AbstractEventLoop:
        raise RuntimeError("no running event loop")

    # What the service sees of asyncio, not anyio's own view: the task group still runs on this loop.
    monkeypatch.setattr(facade, "asyncio", types.SimpleNamespace(get_running_loop=no_loop))
    async with service:
        service.spawn_plain(job)
        await ran.wait()
        assert not service._plain
