"""Actions survive a crash of their worker: the start is recorded before the handler runs, so a retry with the
same key resumes a handler that can reconcile and answers a stored "outcome unknown" for one that cannot;
never a second run. On a FakeClock, in process on the memory engine and on a shared Redis store (the single
test Redis and the local Redis Cluster, a key prefix of its own per test, deleted afterwards); on Redis also
across workers: the retry reaches another worker than the one that died, or a live worker finishes the action
itself with no retry at all."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest

from integration_status.backends.memory import MemoryEngine
from integration_status.core.idempotency import fingerprint, reconciling, scope_key
from integration_status.protocols import (
    ActionContext,
    ActionHandler,
    ActionOutcome,
    ActionRequest,
    ProviderConnection,
    Viewer,
)
from integration_status.testing import FakeClock
from tests.redis_cluster import KINDS, target_of
from tests.web.mounts import make_service

pytestmark = pytest.mark.anyio

BODY = {"projectId": "p", "provider": "vercel", "action": "deploy"}
DEPLOY = ("vercel", "deploy")
OWNER = Viewer(user_id="u1", roles={"owner"})


class Handler:
    """Records each call's ``ctx.resume`` and operation id. ``crash``: the first attempt raises halfway;
    ``hang``: the first attempt never returns (its worker is about to die in the provider call)."""

    def __init__(self, *, crash: bool = False, hang: bool = False) -> None:
        self.calls: list[Any] = []
        self.operation_ids: list[str] = []
        self.crash = crash
        self.hang = hang
        self.started = anyio.Event()

    async def __call__(
        self, request: ActionRequest, conn: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        self.calls.append(ctx.resume)
        self.operation_ids.append(ctx.operation_id)
        self.started.set()
        if ctx.resume is None:
            if self.crash:
                raise RuntimeError("worker bug halfway through")
            if self.hang:
                await anyio.sleep_forever()
        return ActionOutcome(operation_id=ctx.operation_id, done=False)

    def marked(self, reconciles: bool) -> ActionHandler:
        """This handler, marked ``@reconciling`` when ``reconciles``."""
        return reconciling(self.__call__) if reconciles else self


class Store:
    """Where one test's idempotency records live, and the clock its workers agree on. ``engine()`` is the
    engine of one more worker: on memory the one engine every worker of the process shares, on Redis a new
    engine (its own connections) on the test's prefix."""

    def __init__(self, kind: str, clock: FakeClock, stack: AsyncExitStack, target: Any, prefix: str) -> None:
        self.kind = kind
        self.clock = clock
        self._stack = stack
        self._target = target
        self._prefix = prefix
        self._memory = MemoryEngine(clock=clock) if target is None else None

    def engine(self, clock: FakeClock | None = None) -> Any:
        if self._memory is not None:
            return self._memory
        engine = self._target.engine(prefix=self._prefix, clock=clock or self.clock)
        self._stack.push_async_callback(engine.aclose)  # a no-op for an engine its service closed
        return engine


@asynccontextmanager
async def open_store(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """The store named ``kind``: ``memory``, or a Redis target (``plain``, ``cluster``; see tests/conftest.py)
    on a key prefix of this test's own, whose keys are deleted afterwards (on every cluster node)."""
    clock = FakeClock()
    async with AsyncExitStack() as stack:
        if kind == "memory":
            yield Store(kind, clock, stack, None, "")
            return
        target = target_of(kind, request)
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        stack.callback(target.purge, prefix)
        yield Store(kind, clock, stack, target, prefix)


@pytest.fixture(params=["memory", *KINDS])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """The memory engine, the single test Redis, the local Redis Cluster."""
    async with open_store(request.param, request) as opened:
        yield opened


@pytest.fixture(params=KINDS)
async def shared_store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """A store several workers share: the single test Redis, the local Redis Cluster."""
    async with open_store(request.param, request) as opened:
        yield opened


async def act(service: Any, key: str = "k1") -> Any:
    return await service.actions.act(viewer=OWNER, body=BODY, idempotency_key=key, path="/actions")


async def dead_worker_left(store: Store, lease: float, key: str = "k1") -> None:
    """What a worker killed after the start was recorded leaves behind: a checkpointed lease, then it runs out.
    Written through an engine of its own (a worker of its own), before the worker that gets the retry starts:
    that worker's sweep for abandoned actions sleeps half a lease from its start, so the retry is what finds
    the record (a sweep that finds it first has a test of its own)."""
    async with store.engine() as engine:
        records = engine.idempotency
        scope = scope_key("u1", "p", key)
        begun = await records.begin(scope, fingerprint("POST", "/actions", BODY), lease=60, keep_for=86_400)
        assert begun.token is not None
        await records.checkpoint(scope, begun.token, {"operationId": "op_dead", "at": 5}, lease=60)
    store.clock.advance(lease)


def assert_outcome_unknown(first: Any, *replays: Any) -> None:
    """``first`` is the stored 502 saying the outcome is unknown and how to check; ``replays`` replay it."""
    assert first.status == 502
    error = first.body["error"]
    assert error["code"] == "unknown"
    assert "outcome of vercel deploy is unknown" in error["message"]
    assert "new Idempotency-Key" in error["hint"]
    for again in replays:
        assert (again.status, again.replayed, again.body) == (502, True, first.body)


async def test_a_handler_that_cannot_reconcile_gets_outcome_unknown_not_a_second_run(store: Store) -> None:
    """After a worker died mid-action, the retry answers a stored 502 saying the outcome is unknown and how to
    check; the handler never runs, and further retries replay that answer."""
    handler = Handler()
    service = make_service(clock=store.clock, handlers={DEPLOY: handler}, engine=store.engine())
    await dead_worker_left(store, service.idempotency.lease)
    async with service:
        first = await act(service)
        again = await act(service)
    assert handler.calls == []
    assert_outcome_unknown(first, again)


async def test_a_reconciling_handler_is_resumed_with_the_checkpoint_and_the_same_operation_id(
    store: Store,
) -> None:
    """A handler marked @reconciling is called with ctx.resume; the answer keeps the dead attempt's operation id."""
    handler = Handler()
    service = make_service(clock=store.clock, handlers={DEPLOY: handler.marked(True)}, engine=store.engine())
    await dead_worker_left(store, service.idempotency.lease)
    async with service:
        result = await act(service)
    assert result.status == 202
    assert result.body["operationId"] == "op_dead"
    assert handler.calls == [{"operationId": "op_dead", "at": 5, "answered": False}]


async def test_a_handler_that_crashed_after_starting_is_never_run_again(store: Store) -> None:
    """An unexpected exception after the start: the retry is not a second run (the provider may have acted)."""
    handler = Handler(crash=True)
    service = make_service(clock=store.clock, handlers={DEPLOY: handler}, engine=store.engine())
    async with service:
        with pytest.raises(RuntimeError):
            await act(service)
        retry = await act(service)
    assert len(handler.calls) == 1
    assert retry.status == 502
    assert retry.body["error"]["code"] == "unknown"


async def test_an_action_refused_before_it_started_may_be_retried_at_once(store: Store) -> None:
    """A worker that died before the start was recorded left nothing to resume: the retry simply runs."""
    handler = Handler()
    service = make_service(clock=store.clock, handlers={DEPLOY: handler}, engine=store.engine())
    async with store.engine() as engine:
        await engine.idempotency.begin(
            scope_key("u1", "p", "k1"), fingerprint("POST", "/actions", BODY), lease=60, keep_for=60
        )
    store.clock.advance(service.idempotency.lease)
    async with service:
        result = await act(service)
    assert (result.status, handler.calls) == (202, [None])


# --- across workers on a shared store ---------------------------------------------------------------------


@pytest.mark.parametrize("reconciles", [False, True], ids=["cannot-reconcile", "reconciling"])
async def test_the_retry_reaches_another_worker_after_the_first_died_and_is_answered_as_on_one(
    shared_store: Store, reconciles: bool
) -> None:
    """Worker A records the start and calls the handler, then dies in the provider call: from then on it does
    nothing (its clock stands still, as a killed or stopped process's). The client retries with the same
    Idempotency-Key and the retry reaches worker B, another service on the same Redis and prefix, once A's
    lease has run out. B answers as a single worker does: a stored 502 "outcome unknown", replayed after, or
    for a handler that can reconcile, a resumption with A's checkpoint under A's operation id. The handler
    never runs a second time, and A's end changes nothing: a retry on a third worker replays B's answer."""
    clock = shared_store.clock
    stopped = FakeClock(start=clock.time())  # A's clock: it never moves again
    on_a, on_b = Handler(hang=True), Handler()
    a = make_service(
        clock=stopped, handlers={DEPLOY: on_a.marked(reconciles)}, engine=shared_store.engine(clock=stopped)
    )
    b = make_service(clock=clock, handlers={DEPLOY: on_b.marked(reconciles)}, engine=shared_store.engine())
    async with a, anyio.create_task_group() as tg:
        tg.start_soon(act, a)
        with anyio.fail_after(5):  # a bound on A's round trips to Redis, not a wait for time to pass
            await on_a.started.wait()  # the start is recorded (before the handler runs); A is in the call
        clock.advance(b.idempotency.lease)  # A's lease runs out; B starts only now (see dead_worker_left)
        async with b:
            first = await act(b)
            again = await act(b)
        tg.cancel_scope.cancel()  # what is left of A goes away
    async with make_service(clock=clock, handlers={DEPLOY: Handler()}, engine=shared_store.engine()) as c:
        later = await act(c)

    assert on_a.calls == [None]
    if reconciles:
        [resumed] = on_b.calls
        assert resumed["operationId"] == on_a.operation_ids[0]
        assert resumed["request"] == {**BODY, "userId": "u1"}
        assert resumed["answered"] is False
        assert (first.status, first.body["operationId"]) == (202, on_a.operation_ids[0])
        for replay in (again, later):
            assert (replay.status, replay.replayed, replay.body) == (202, True, first.body)
    else:
        assert on_b.calls == []
        assert_outcome_unknown(first, again, later)


async def test_with_no_retry_a_live_worker_answers_what_the_dead_one_started(shared_store: Store) -> None:
    """Worker A dies in the provider call and its client never retries. Worker B, already running on the same
    Redis and prefix, finds A's lease run out in its sweep and answers the action itself (the handler cannot
    reconcile: a stored 502 "outcome unknown"), without calling the handler; the client's retry, when it comes,
    replays that answer."""
    clock = shared_store.clock
    stopped = FakeClock(start=clock.time())
    on_a, on_b = Handler(hang=True), Handler()
    a = make_service(clock=stopped, handlers={DEPLOY: on_a}, engine=shared_store.engine(clock=stopped))
    b = make_service(clock=clock, handlers={DEPLOY: on_b}, engine=shared_store.engine())
    async with b:
        async with a, anyio.create_task_group() as tg:
            tg.start_soon(act, a)
            with anyio.fail_after(5):  # a bound on A's round trips to Redis, not a wait for time to pass
                await on_a.started.wait()
            swept = clock.next_sleep()
            clock.advance(b.idempotency.lease)  # B's sweep wakes (every half lease) and finds A's lease over
            with anyio.fail_after(5):  # a bound on B's round trips to Redis
                await swept.wait()  # the sweep is over: B's only task on this clock sleeps again
            tg.cancel_scope.cancel()
        retry = await act(b)
    assert on_a.calls == [None]
    assert on_b.calls == []
    assert retry.replayed
    assert_outcome_unknown(retry)


async def test_an_attempt_a_live_worker_cannot_finish_is_handed_back_for_the_clients_retry(
    shared_store: Store,
) -> None:
    """A dead worker left an attempt recorded without its request (so no other worker can run its follow-up).
    A live worker's sweep finds the lease run out, cannot finish it, and hands it back instead of keeping it:
    the client's retry is answered "outcome unknown" as after any dead worker, not 409 "in progress"."""
    clock = shared_store.clock
    handler = Handler()
    b = make_service(clock=clock, handlers={DEPLOY: handler}, engine=shared_store.engine())
    async with b:
        async with shared_store.engine() as engine:  # the dead worker's record, as dead_worker_left writes it
            scope = scope_key("u1", "p", "k1")
            begun = await engine.idempotency.begin(
                scope, fingerprint("POST", "/actions", BODY), lease=60, keep_for=86_400
            )
            assert begun.token is not None
            await engine.idempotency.checkpoint(scope, begun.token, {"operationId": "op_dead"}, lease=60)
        swept = clock.next_sleep()
        clock.advance(b.idempotency.lease)  # B's sweep wakes and finds the lease over
        with anyio.fail_after(5):  # a bound on B's round trips to Redis
            await swept.wait()
        first = await act(b)
        again = await act(b)
    assert handler.calls == []
    assert_outcome_unknown(first, again)
