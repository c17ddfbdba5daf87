"""The idempotency contract (core/idempotency.py) on every engine: memory, Redis and PostgreSQL, two "workers"
each (separate pools) sharing one FakeClock; and the guard's crash handling on each of them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from integration_status.backends.memory import MemoryIdempotencyStore
from integration_status.core.idempotency import Attempt, IdempotencyGuard
from integration_status.protocols import BeginResult, IdempotencyStore, StoredResponse
from integration_status.testing import FakeClock
from tests.redis_cluster import RedisTarget
from tests.services import POSTGRES_DSN, POSTGRES_HOST, POSTGRES_PORT, require_redis

pytestmark = pytest.mark.anyio

OK = StoredResponse(
    status=202, body={"success": True, "operationId": "op_1", "n": [1, 2]}, headers={"X": "1"}
)
LEASE, KEEP = 30.0, 86_400.0

Pair = tuple[IdempotencyStore, IdempotencyStore]


@pytest.fixture(params=["memory", "redis", "redis-cluster", "postgres"])
async def stores(request: pytest.FixtureRequest, redis_clock: FakeClock) -> AsyncIterator[Pair]:
    """Two handles on one store (two workers with their own pools), on the engine named by the parameter."""
    if request.param == "memory":
        store = MemoryIdempotencyStore(clock=redis_clock)
        yield store, store
        return
    async with AsyncExitStack() as stack:
        if request.param.startswith("redis"):
            from integration_status.backends.redis import RedisEngine

            prefix = f"test-{uuid.uuid4().hex[:8]}"
            if request.param == "redis":
                target = RedisTarget(kind="plain", url=require_redis())
            else:
                target = RedisTarget(kind="cluster", url=request.getfixturevalue("redis_cluster").url)
            stack.callback(target.purge, prefix)
            engines: list[RedisEngine] = [
                await stack.enter_async_context(target.engine(prefix=prefix, clock=redis_clock))
                for _ in range(2)
            ]
            yield engines[0].idempotency, engines[1].idempotency
        else:
            from integration_status.backends.postgres import PostgresIdempotencyStore

            schema = request.getfixturevalue("postgres_schema")
            pg = [
                await stack.enter_async_context(
                    PostgresIdempotencyStore.from_dsn(POSTGRES_DSN, schema=schema, clock=redis_clock)
                )
                for _ in range(2)
            ]
            yield pg[0], pg[1]


async def begin(store: IdempotencyStore, fp: str = "fp") -> BeginResult:
    return await store.begin("k", fp, lease=LEASE, keep_for=KEEP)


async def test_lifecycle(stores: Pair) -> None:
    """started -> in_flight (same request) / mismatch (other) -> complete -> replay / mismatch."""
    a, b = stores
    first = await begin(a)
    assert first.state == "started"
    assert first.token
    assert await begin(b) == BeginResult(state="in_flight")
    assert await begin(b, "other") == BeginResult(state="mismatch")
    await a.complete("k", first.token, OK, keep_for=KEEP)
    replay = await begin(b)
    assert replay == BeginResult(state="replay", response=OK)
    assert replay.response is not None
    assert (dict(replay.response.body), dict(replay.response.headers)) == (dict(OK.body), {"X": "1"})
    assert await begin(b, "other") == BeginResult(state="mismatch")


async def test_release_lets_the_key_start_again(stores: Pair) -> None:
    """After release by the holder a new begin starts; a release with a wrong token does nothing."""
    a, b = stores
    first = await begin(a)
    assert first.token is not None
    await b.release("k", "someone-else")
    assert (await begin(b)).state == "in_flight"
    await a.release("k", first.token)
    second = await begin(b)
    assert second.state == "started"
    assert second.token != first.token


async def test_a_lease_that_never_checkpointed_is_taken_over(stores: Pair, redis_clock: FakeClock) -> None:
    """The worker died before the action started: after the lease a new begin starts afresh and the old
    holder's late calls are no-ops."""
    a, b = stores
    crashed = await begin(a)
    assert crashed.token is not None
    redis_clock.advance(LEASE - 1)
    assert (await begin(b)).state == "in_flight"
    redis_clock.advance(1)
    takeover = await begin(b)
    assert (takeover.state, takeover.checkpoint) == ("started", None)
    assert takeover.token is not None
    await a.complete("k", crashed.token, StoredResponse(status=500, body={"late": True}), keep_for=KEEP)
    assert not await a.checkpoint("k", crashed.token, {"late": 1}, lease=LEASE)
    assert (await begin(a)).state == "in_flight"
    await b.complete("k", takeover.token, StoredResponse(status=200, body={"ok": 1}), keep_for=KEEP)
    assert (await begin(a)).response == StoredResponse(status=200, body={"ok": 1})


async def test_a_checkpointed_attempt_is_resumed_never_restarted(
    stores: Pair, redis_clock: FakeClock
) -> None:
    """After a checkpoint, a lost lease gives the next caller `resume` with the checkpoint, once."""
    a, b = stores
    first = await begin(a)
    assert first.token is not None
    assert await a.checkpoint("k", first.token, {"deploymentId": "dpl_1", "n": [1]}, lease=LEASE)
    redis_clock.advance(LEASE - 1)
    assert (await begin(b)).state == "in_flight"  # the checkpoint renewed the lease
    redis_clock.advance(1)
    resumed = await begin(b)
    assert (resumed.state, resumed.checkpoint) == ("resume", {"deploymentId": "dpl_1", "n": [1]})
    assert resumed.token not in (None, first.token)
    assert (await begin(a)).state == "in_flight"
    assert not await a.renew("k", first.token, lease=LEASE)
    assert resumed.token is not None
    await b.complete("k", resumed.token, OK, keep_for=KEEP)
    assert (await begin(a)).response == OK


async def test_release_after_a_checkpoint_keeps_the_record_for_a_resume(stores: Pair) -> None:
    """A checkpointed attempt that fails is not forgotten: the next begin resumes it at once."""
    a, b = stores
    first = await begin(a)
    assert first.token is not None
    await a.checkpoint("k", first.token, {"at": 1}, lease=LEASE)
    await a.release("k", first.token)
    resumed = await begin(b)
    assert (resumed.state, resumed.checkpoint) == ("resume", {"at": 1})


async def test_a_follow_up_is_leased_renewed_taken_over_and_settled(
    stores: Pair, redis_clock: FakeClock
) -> None:
    """A done record with a follow-up replays; once the follow-up's lease runs out, one caller takes it over
    (replay + token + checkpoint); after settle it is a plain replay."""
    a, b = stores
    first = await begin(a)
    assert first.token is not None
    await a.checkpoint("k", first.token, {"deploymentId": "dpl_1"}, lease=LEASE)
    await a.complete("k", first.token, OK, keep_for=KEEP, follow=10)
    assert await begin(b) == BeginResult(state="replay", response=OK)
    redis_clock.advance(9)
    assert await a.renew("k", first.token, lease=10)
    redis_clock.advance(9)
    assert await begin(b) == BeginResult(state="replay", response=OK)
    redis_clock.advance(1)
    taken = await begin(b)
    assert (taken.state, taken.response, taken.checkpoint) == ("replay", OK, {"deploymentId": "dpl_1"})
    assert taken.token not in (None, first.token)
    assert await begin(a) == BeginResult(state="replay", response=OK)  # only one caller takes it over
    assert not await a.renew("k", first.token, lease=10)
    await a.settle("k", first.token)  # stale: a no-op
    assert taken.token is not None
    await b.settle("k", taken.token)
    redis_clock.advance(60)
    assert await begin(a) == BeginResult(state="replay", response=OK)


async def test_release_never_deletes_a_finished_record(stores: Pair) -> None:
    """Once completed, a release with the same token leaves the stored response in place."""
    a, _ = stores
    begun = await begin(a)
    assert begun.token is not None
    await a.complete("k", begun.token, OK, keep_for=KEEP)
    await a.release("k", begun.token)
    assert (await begin(a)).state == "replay"


async def test_stored_response_expires_after_keep_for(stores: Pair, redis_clock: FakeClock) -> None:
    """After keep_for the key is forgotten and the same request starts again."""
    a, b = stores
    begun = await begin(a)
    assert begun.token is not None
    await a.complete("k", begun.token, OK, keep_for=100)
    redis_clock.advance(99)
    assert (await begin(b)).state == "replay"
    redis_clock.advance(1)
    assert (await begin(b)).state == "started"


async def test_fifty_concurrent_begins_start_exactly_once(stores: Pair) -> None:
    """The same key begun 50 times at once across two workers: one started, 49 in flight."""
    states = await begin_at_once(stores, 50)
    assert (states.count("started"), states.count("in_flight")) == (1, 49)


async def begin_at_once(stores: Pair, n: int) -> list[str]:
    """The states of ``n`` concurrent begins of one key, alternating between the two workers."""
    results: list[BeginResult] = []

    async def one(store: IdempotencyStore) -> None:
        results.append(await begin(store))

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, stores[i % 2])
    return [r.state for r in results]


async def test_fifty_concurrent_takeovers_of_an_abandoned_attempt_resume_once(
    stores: Pair, redis_clock: FakeClock
) -> None:
    """A checkpointed attempt whose worker died: of 50 concurrent retries exactly one resumes it."""
    first = await begin(stores[0])
    assert first.token is not None
    await stores[0].checkpoint("k", first.token, {"at": 1}, lease=LEASE)
    redis_clock.advance(LEASE)
    states = await begin_at_once(stores, 50)
    assert (states.count("resume"), states.count("in_flight")) == (1, 49)


async def test_abandoned_attempts_and_follow_ups_are_claimed_once(
    stores: Pair, redis_clock: FakeClock
) -> None:
    """claim_abandoned takes over exactly the leases a dead worker left after a checkpoint or with a
    follow-up, once; live leases, settled records and attempts that never started are left alone."""
    a, b = stores

    async def begun(key: str) -> str:
        result = await a.begin(key, "fp", lease=LEASE, keep_for=KEEP)
        assert result.token is not None
        return result.token

    dead_attempt, dead_follow, _never_started, settled = (
        await begun("attempt"),
        await begun("follow"),
        await begun("fresh"),
        await begun("settled"),
    )
    await a.checkpoint("attempt", dead_attempt, {"at": 1}, lease=LEASE)
    await a.checkpoint("follow", dead_follow, {"deploymentId": "dpl_1"}, lease=LEASE)
    await a.complete("follow", dead_follow, OK, keep_for=KEEP, follow=LEASE)
    await a.complete("settled", settled, OK, keep_for=KEEP, follow=LEASE)
    await a.settle("settled", settled)
    assert await b.claim_abandoned(lease=LEASE, limit=10) == []  # every lease still live
    redis_clock.advance(LEASE)
    live = await begun("live")
    await a.checkpoint("live", live, {"at": 2}, lease=LEASE)
    claimed = dict(await b.claim_abandoned(lease=LEASE, limit=10))
    assert sorted(claimed) == ["attempt", "follow"]
    assert (claimed["attempt"].state, claimed["attempt"].checkpoint) == ("resume", {"at": 1})
    follow = claimed["follow"]
    assert (follow.state, follow.response, follow.checkpoint) == ("replay", OK, {"deploymentId": "dpl_1"})
    assert await a.claim_abandoned(lease=LEASE, limit=10) == []  # claimed: their leases are live again
    assert (await begin_key(a, "attempt")).state == "in_flight"
    assert follow.token is not None
    await b.settle("follow", follow.token)
    redis_clock.advance(LEASE)
    again = await a.claim_abandoned(lease=LEASE, limit=10)  # the claimer died too; the settled one is done
    assert sorted(key for key, _ in again) == ["attempt", "live"]


async def begin_key(store: IdempotencyStore, key: str) -> BeginResult:
    return await store.begin(key, "fp", lease=LEASE, keep_for=KEEP)


# --- the guard on each engine -------------------------------------------------------------------------------


def guard(store: IdempotencyStore, clock: FakeClock) -> IdempotencyGuard:
    return IdempotencyGuard(store, clock=clock, lease=LEASE, keep_for=KEEP)


class Crash(BaseException):
    """Stands for the worker dying: nothing after it runs (it is not caught by the guard's handlers here)."""


async def test_guard_resumes_a_crashed_action_instead_of_running_it_again(
    stores: Pair, redis_clock: FakeClock
) -> None:
    """Worker A checkpoints then dies; worker B's retry (after the lease) reconciles from the checkpoint."""
    a, b = stores
    began = await begin(a)  # worker A took the key ...
    assert began.token is not None
    await a.checkpoint("k", began.token, {"deploymentId": "dpl_1"}, lease=LEASE)  # ... and then died
    seen: list[tuple[Any, bool]] = []

    async def action(attempt: Attempt) -> StoredResponse:
        seen.append((attempt.resume, attempt.follow_only))
        return OK

    redis_clock.advance(LEASE)
    assert await guard(b, redis_clock).execute(scope="k", fingerprint="fp", action=action) == (OK, False)
    assert seen == [({"deploymentId": "dpl_1"}, False)]
    assert (await begin(a)).state == "replay"


async def test_guard_takes_over_an_abandoned_follow_up_and_settles_it(
    stores: Pair, redis_clock: FakeClock
) -> None:
    """The answer was stored but the worker following the operation died: a retry replays the answer and
    runs the follow-up once more; after it ends, retries are plain replays."""
    a, b = stores
    spawned: list[Callable[[], Awaitable[None]]] = []
    calls: list[tuple[Any, bool]] = []

    async def action(attempt: Attempt) -> StoredResponse:
        calls.append((attempt.resume, attempt.follow_only))
        await attempt.checkpoint({"deploymentId": "dpl_1"})
        spawned.append(attempt.follow(anyio.lowlevel.checkpoint))
        return OK

    assert await guard(a, redis_clock).execute(scope="k", fingerprint="fp", action=action) == (OK, False)
    assert len(spawned) == 1  # worker A dies before running its follow-up
    assert await guard(b, redis_clock).execute(scope="k", fingerprint="fp", action=action) == (OK, True)
    assert len(calls) == 1  # the lease is live: a plain replay
    redis_clock.advance(LEASE)
    assert await guard(b, redis_clock).execute(scope="k", fingerprint="fp", action=action) == (OK, True)
    assert calls[1] == ({"deploymentId": "dpl_1"}, True)
    await spawned[1]()  # worker B's follow-up runs to its end and settles
    redis_clock.advance(LEASE)
    assert await guard(a, redis_clock).execute(scope="k", fingerprint="fp", action=action) == (OK, True)
    assert len(calls) == 2


async def test_redis_engine_with_a_postgres_store_keeps_records_when_redis_loses_its_data(
    redis_target: RedisTarget, redis_prefix: str, postgres_schema: str, redis_clock: FakeClock, redis_raw: Any
) -> None:
    """RedisEngine(idempotency=PostgresIdempotencyStore) opens the store with itself and keeps the records in
    PostgreSQL: wiping every Redis key (a restart without persistence) loses no replay."""
    from integration_status.backends.postgres import PostgresIdempotencyStore

    store = PostgresIdempotencyStore.from_dsn(POSTGRES_DSN, schema=postgres_schema, clock=redis_clock)
    engine = redis_target.engine(prefix=redis_prefix, clock=redis_clock, idempotency=store)
    async with engine:
        assert engine.idempotency is store
        await guard(engine.idempotency, redis_clock).run(scope="k", fingerprint="fp", action=_ok)
        await redis_raw.set(f"{redis_prefix}:marker", "1")
        keys = [k async for k in redis_raw.scan_iter(match=f"{redis_prefix}:*")]
        await redis_raw.delete(*keys)
        assert await guard(engine.idempotency, redis_clock).run(scope="k", fingerprint="fp", action=_ok) == (
            OK,
            True,
        )
    assert "closed" in repr(store._pool) or store._pool.closed


async def _ok() -> StoredResponse:
    return OK


async def test_workers_starting_together_create_the_table_once(
    postgres_schema: str, redis_clock: FakeClock
) -> None:
    """Eight stores opening at once on a fresh schema all succeed (the migration runs one at a time)."""
    from integration_status.backends.postgres import PostgresIdempotencyStore

    stores = [
        PostgresIdempotencyStore.from_dsn(POSTGRES_DSN, schema=postgres_schema, clock=redis_clock)
        for _ in range(8)
    ]
    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(store.connect)
        assert (await begin(stores[0])).state == "started"
        assert (await begin(stores[7])).state == "in_flight"
    finally:
        for store in stores:
            await store.aclose()


def _postgres_behind(proxy: Any) -> str:
    """The test database's DSN through ``proxy`` (a loopback proxy in front of the PostgreSQL server)."""
    return POSTGRES_DSN.replace(f"@{POSTGRES_HOST}:{POSTGRES_PORT}/", f"@127.0.0.1:{proxy.port}/")


async def test_a_store_started_while_postgres_is_away_starts_and_migrates_once_it_answers(
    postgres_schema: str, redis_clock: FakeClock
) -> None:
    """Entered (as an engine starts it) with the database away, the store logs it and starts: calls fail
    closed meanwhile, and once the database answers the first call applies the migration and goes through."""
    from integration_status._logging import capture_logs
    from integration_status.backends.postgres import PostgresIdempotencyStore
    from integration_status.exceptions import BackendUnavailable
    from tests.backends.conftest import RedisProxy

    proxy = RedisProxy(upstream=(POSTGRES_HOST, POSTGRES_PORT))
    proxy.cut()
    try:
        store = PostgresIdempotencyStore.from_dsn(
            _postgres_behind(proxy), schema=postgres_schema, clock=redis_clock, timeout=1.0
        )
        with capture_logs() as logs:
            async with store:
                with pytest.raises(BackendUnavailable):
                    await begin(store)
                proxy.restore()
                # The pool connects again on its own backoff: until it has, a call fails closed after waiting
                # its timeout for a connection (each try waits on the pool, none on a clock of ours).
                with anyio.fail_after(30):
                    while True:
                        try:
                            first = await begin(store)
                            break
                        except BackendUnavailable:
                            continue
                assert first.state == "started"  # the table exists now
                assert (await begin(store)).state == "in_flight"
        assert [
            e["endpoint"] for e in logs if e["event"] == "integration_status.postgres.unavailable_at_start"
        ] == [f"127.0.0.1:{proxy.port}/test"]
    finally:
        proxy.cut()


async def test_connect_is_the_strict_check(postgres_schema: str, redis_clock: FakeClock) -> None:
    """connect() with the database away raises ConfigurationError naming host:port, for hosts that would rather
    not start without it."""
    from integration_status.backends.postgres import PostgresIdempotencyStore
    from integration_status.exceptions import ConfigurationError
    from tests.backends.conftest import RedisProxy

    proxy = RedisProxy(upstream=(POSTGRES_HOST, POSTGRES_PORT))
    proxy.cut()
    store = PostgresIdempotencyStore.from_dsn(_postgres_behind(proxy), schema=postgres_schema, timeout=1.0)
    with pytest.raises(ConfigurationError, match=rf"cannot use PostgreSQL at 127\.0\.0\.1:{proxy.port}"):
        await store.connect()
    await store.aclose()
