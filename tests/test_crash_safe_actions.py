"""Actions survive a crash of their worker: the start is recorded before the handler runs, so a retry with the
same key resumes a handler that can reconcile and answers a stored "outcome unknown" for one that cannot;
never a second run. In process, on the memory engine and a FakeClock."""

from __future__ import annotations

from typing import Any

import pytest

from integration_status.core.idempotency import fingerprint, reconciling, scope_key
from integration_status.protocols import (
    ActionContext,
    ActionOutcome,
    ActionRequest,
    ProviderConnection,
    Viewer,
)
from integration_status.testing import FakeClock
from tests.web.mounts import make_service

pytestmark = pytest.mark.anyio

BODY = {"projectId": "p", "provider": "vercel", "action": "deploy"}
OWNER = Viewer(user_id="u1", roles={"owner"})


class Handler:
    def __init__(self, *, crash: bool = False) -> None:
        self.calls: list[Any] = []
        self.crash = crash

    async def __call__(
        self, request: ActionRequest, conn: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        self.calls.append(ctx.resume)
        if self.crash and ctx.resume is None:
            raise RuntimeError("worker bug halfway through")
        return ActionOutcome(operation_id=ctx.operation_id, done=False)


async def act(service: Any, key: str = "k1") -> Any:
    return await service.actions.act(viewer=OWNER, body=BODY, idempotency_key=key, path="/actions")


async def dead_worker_left(service: Any, clock: FakeClock, key: str = "k1") -> None:
    """What a worker killed after the start was recorded leaves behind: a checkpointed lease, then it runs out."""
    store = service.idempotency.store
    scope = scope_key("u1", "p", key)
    begun = await store.begin(scope, fingerprint("POST", "/actions", BODY), lease=60, keep_for=86_400)
    await store.checkpoint(scope, begun.token, {"operationId": "op_dead", "at": 5}, lease=60)
    clock.advance(service.idempotency.lease)


async def test_a_handler_that_cannot_reconcile_gets_outcome_unknown_not_a_second_run() -> None:
    """After a worker died mid-action, the retry answers a stored 502 saying the outcome is unknown and how to
    check; the handler never runs, and further retries replay that answer."""
    clock = FakeClock()
    handler = Handler()
    service = make_service(clock=clock, handlers={("vercel", "deploy"): handler})
    async with service:
        await dead_worker_left(service, clock)
        first = await act(service)
        again = await act(service)
    assert handler.calls == []
    assert first.status == 502
    error = first.body["error"]
    assert error["code"] == "unknown"
    assert "outcome of vercel deploy is unknown" in error["message"]
    assert "new Idempotency-Key" in error["hint"]
    assert (again.status, again.replayed, again.body) == (502, True, first.body)


async def test_a_reconciling_handler_is_resumed_with_the_checkpoint_and_the_same_operation_id() -> None:
    """A handler marked @reconciling is called with ctx.resume; the answer keeps the dead attempt's operation id."""
    clock = FakeClock()
    handler = Handler()
    service = make_service(clock=clock, handlers={("vercel", "deploy"): reconciling(handler.__call__)})
    async with service:
        await dead_worker_left(service, clock)
        result = await act(service)
    assert result.status == 202
    assert result.body["operationId"] == "op_dead"
    assert handler.calls == [{"operationId": "op_dead", "at": 5, "answered": False}]


async def test_a_handler_that_crashed_after_starting_is_never_run_again() -> None:
    """An unexpected exception after the start: the retry is not a second run (the provider may have acted)."""
    clock = FakeClock()
    handler = Handler(crash=True)
    service = make_service(clock=clock, handlers={("vercel", "deploy"): handler})
    async with service:
        with pytest.raises(RuntimeError):
            await act(service)
        retry = await act(service)
    assert len(handler.calls) == 1
    assert retry.status == 502
    assert retry.body["error"]["code"] == "unknown"


async def test_an_action_refused_before_it_started_may_be_retried_at_once() -> None:
    """A worker that died before the start was recorded left nothing to resume: the retry simply runs."""
    clock = FakeClock()
    handler = Handler()
    service = make_service(clock=clock, handlers={("vercel", "deploy"): handler})
    async with service:
        store = service.idempotency.store
        await store.begin(
            scope_key("u1", "p", "k1"), fingerprint("POST", "/actions", BODY), lease=60, keep_for=60
        )
        clock.advance(service.idempotency.lease)
        result = await act(service)
    assert (result.status, handler.calls) == (202, [None])
