"""The Redis Streams event bus against the real Redis: fan-out, resume on another worker, gaps, cleanup."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis.asyncio.cluster import RedisCluster

from integration_status.backends.redis import RedisEngine, SubscriberLagging
from integration_status.exceptions import BackendUnavailable, ConfigurationError
from integration_status.protocols import EventBus, StoredEvent, Subscription
from tests.backends.conftest import RedisProxy
from tests.polling import WITHIN

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

# Waiting for a real XREAD BLOCK round trip is inherent here; this bounds it so a bug fails, not hangs.
WAIT = 5.0


async def take(sub: Subscription, n: int) -> list[StoredEvent]:
    """The next n events of a subscription (bounded in time)."""
    out: list[StoredEvent] = []
    with anyio.fail_after(WAIT):
        iterator: AsyncIterator[StoredEvent] = aiter(sub)
        while len(out) < n:
            out.append(await anext(iterator))
    return out


async def nothing_more(sub: Subscription, engine: RedisEngine, project_id: str) -> None:
    """Nothing else is pending for the subscription: a marker event published now is the very next one."""
    marker = await engine.events.publish(project_id, {"type": "marker"})
    assert [e.id for e in await take(sub, 1)] == [marker]


async def test_publish_returns_the_stream_id(redis_engine: RedisEngine, redis_raw: Any) -> None:
    """publish answers the stream entry id ("<ms>-<seq>"), increasing, and the stream holds the JSON."""
    bus: EventBus = redis_engine.events
    first = await bus.publish("p1", {"type": "github:push", "branch": "main"})
    second = await bus.publish("p1", {"type": "github:push", "branch": "dev"})
    ms, seq = first.split("-")
    assert ms.isdigit()
    assert seq.isdigit()
    assert tuple(map(int, second.split("-"))) > tuple(map(int, first.split("-")))
    entries = await redis_raw.xrange(f"{redis_engine.prefix}:events:{{p1}}")
    assert [e[0] for e in entries] == [first, second]
    assert entries[0][1] == {"data": '{"type":"github:push","branch":"main"}'}
    assert await redis_raw.pttl(f"{redis_engine.prefix}:events:{{p1}}") > 0


async def test_event_published_on_one_worker_reaches_another(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine
) -> None:
    """A subscriber on engine B receives what engine A publishes, with the same id and data."""
    async with redis_engine_b.events.subscribe("p1") as sub:
        assert sub.gap is False
        event_id = await redis_engine.events.publish("p1", {"type": "deploy:started", "operationId": "op_1"})
        [event] = await take(sub, 1)
    assert event == StoredEvent(id=event_id, data={"type": "deploy:started", "operationId": "op_1"})
    assert dict(event.data) == {"type": "deploy:started", "operationId": "op_1"}


async def test_without_last_event_id_only_new_events_arrive(redis_engine: RedisEngine) -> None:
    """Events published before subscribing are not delivered; later ones are, in order."""
    await redis_engine.events.publish("p1", {"n": 0})
    async with redis_engine.events.subscribe("p1") as sub:
        ids = [await redis_engine.events.publish("p1", {"n": n}) for n in (1, 2, 3)]
        got = await take(sub, 3)
    assert [e.id for e in got] == ids
    assert [e.data["n"] for e in got] == [1, 2, 3]


async def test_projects_are_separate(redis_engine: RedisEngine) -> None:
    """A subscriber of one project never sees another project's events."""
    async with redis_engine.events.subscribe("p1") as sub:
        await redis_engine.events.publish("p2", {"n": "other"})
        await nothing_more(sub, redis_engine, "p1")


async def test_resume_on_another_worker_misses_and_repeats_nothing(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine
) -> None:
    """Disconnect from A after e2, events go on, resume on B with Last-Event-ID e2: e3, e4, then live e5."""
    async with redis_engine.events.subscribe("p1") as sub:
        e1 = await redis_engine.events.publish("p1", {"n": 1})
        e2 = await redis_engine.events.publish("p1", {"n": 2})
        assert [e.id for e in await take(sub, 2)] == [e1, e2]
    e3 = await redis_engine.events.publish("p1", {"n": 3})
    e4 = await redis_engine_b.events.publish("p1", {"n": 4})
    async with redis_engine_b.events.subscribe("p1", last_event_id=e2) as resumed:
        assert resumed.gap is False
        e5 = await redis_engine.events.publish("p1", {"n": 5})
        got = await take(resumed, 3)
        assert [e.id for e in got] == [e3, e4, e5]
        assert [e.data["n"] for e in got] == [3, 4, 5]
        await nothing_more(resumed, redis_engine, "p1")


async def test_resume_from_the_newest_id_gets_only_live_events(redis_engine: RedisEngine) -> None:
    """Resuming from the last id there is: no gap, no replay, live events follow."""
    last = await redis_engine.events.publish("p1", {"n": 1})
    async with redis_engine.events.subscribe("p1", last_event_id=last) as sub:
        assert sub.gap is False
        await nothing_more(sub, redis_engine, "p1")


async def test_replay_longer_than_one_page(redis_engines: Any) -> None:
    """A replay of more entries than one XRANGE page arrives complete and in order."""
    engine = await redis_engines()
    first = await engine.events.publish("p1", {"n": 0})
    ids = [await engine.events.publish("p1", {"n": n}) for n in range(1, 251)]
    async with engine.events.subscribe("p1", last_event_id=first) as sub:
        assert sub.gap is False
        got = await take(sub, 250)
        assert [e.id for e in got] == ids
        await nothing_more(sub, engine, "p1")


async def test_trimmed_id_is_a_gap(redis_engines: Any) -> None:
    """An id trimmed out of the stream (MAXLEN) gives gap=True and only new events, no stale replay."""
    engine = await redis_engines(stream_maxlen=10)
    first = await engine.events.publish("p1", {"n": 0})
    for n in range(1, 400):
        await engine.events.publish("p1", {"n": n})
    async with engine.events.subscribe("p1", last_event_id=first) as sub:
        assert sub.gap is True
        await nothing_more(sub, engine, "p1")


@pytest.mark.parametrize(
    "last_event_id",
    [
        "not-an-id",
        "",
        "12-ab",
        "1-0",
        "99999999999999-0",
        f"{2**64}-0",  # past the 64-bit range Redis accepts
        f"1-{2**64}",
        f"{2**64}",
        "9" * 5000,
    ],
)
async def test_unknown_or_malformed_id_is_a_gap(redis_engine: RedisEngine, last_event_id: str) -> None:
    """An unparseable id, one older than the stream, or one the stream never had gives gap=True."""
    await redis_engine.events.publish("p1", {"n": 1})
    async with redis_engine.events.subscribe("p1", last_event_id=last_event_id) as sub:
        assert sub.gap is True
        await nothing_more(sub, redis_engine, "p1")


async def test_id_from_another_project_is_a_gap(redis_engine: RedisEngine, redis_raw: Any) -> None:
    """An id another project's stream issued, even one inside this stream's range, gives gap=True."""
    bus = redis_engine.events
    first = await bus.publish("p1", {"n": 0})
    ms = int(first.partition("-")[0])
    # Another project's stream, with an id between p1's two entries (ids are per stream and may collide).
    foreign = await redis_raw.xadd(f"{redis_engine.prefix}:events:{{p2}}", {"data": "{}"}, id=f"{ms}-7")
    await redis_raw.xadd(f"{redis_engine.prefix}:events:{{p1}}", {"data": '{"n":1}'}, id=f"{ms + 1}-0")
    async with bus.subscribe("p1", last_event_id=foreign) as sub:
        assert sub.gap is True
        await nothing_more(sub, redis_engine, "p1")


async def test_id_of_an_expired_stream_is_a_gap(redis_engine: RedisEngine) -> None:
    """Resuming a project whose stream no longer exists is a gap; live events still arrive."""
    async with redis_engine.events.subscribe("fresh", last_event_id="1732600000000-0") as sub:
        assert sub.gap is True
        await nothing_more(sub, redis_engine, "fresh")


async def test_one_reader_per_project_and_cleanup(redis_engine: RedisEngine) -> None:
    """Subscribers share one reader per project; when the last leaves, readers and queues are gone."""
    bus = redis_engine.events
    assert bus.reader_count() == 0
    async with bus.subscribe("p1") as a, bus.subscribe("p1") as b:
        assert bus.reader_count() == 1
        async with bus.subscribe("p2"):
            assert bus.reader_count() == 2
            assert bus.subscriber_count() == 3
            assert bus.subscriber_count("p1") == 2
        assert bus.reader_count() == 1
        assert bus.subscriber_count("p2") == 0
        event_id = await redis_engine.events.publish("p1", {"n": 1})
        assert [e.id for e in await take(a, 1)] == [event_id]
        assert [e.id for e in await take(b, 1)] == [event_id]
    assert bus.reader_count() == 0
    assert bus.subscriber_count() == 0


async def test_cancelled_subscriber_cleans_up(redis_engine: RedisEngine) -> None:
    """A subscriber task cancelled while waiting (client gone) leaves no reader and no queue behind."""
    bus = redis_engine.events
    entered = anyio.Event()

    async def listen() -> None:
        async with bus.subscribe("p1") as sub:
            entered.set()
            async for _ in sub:
                pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(listen)
        await entered.wait()
        assert bus.reader_count() == 1
        tg.cancel_scope.cancel()
    assert bus.reader_count() == 0
    assert bus.subscriber_count() == 0


async def test_slow_subscriber_is_dropped_without_blocking_others(redis_engines: Any) -> None:
    """A subscriber whose queue is full gets SubscriberLagging; a reading one receives every event."""
    engine = await redis_engines(queue_size=3)
    bus = engine.events
    async with bus.subscribe("p1") as slow, bus.subscribe("p1") as fast:
        ids = []
        got: list[StoredEvent] = []
        for n in range(6):
            ids.append(await bus.publish("p1", {"n": n}))
            got += await take(fast, 1)
        assert [e.id for e in got] == ids
        assert bus.subscriber_count("p1") == 1
        with anyio.fail_after(WAIT), pytest.raises(SubscriberLagging):
            await anext(aiter(slow))
        assert bus.reader_count() == 1
    assert bus.reader_count() == 0


async def test_concurrent_publishing_while_subscribers_join(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine
) -> None:
    """Subscribers joining B mid-stream with an earlier id each get exactly the events after it, in order."""
    published: list[str] = []
    joins: list[tuple[str, list[StoredEvent]]] = []
    done_publishing = anyio.Event()
    reached = [anyio.Event() for _ in range(8)]

    async def publisher() -> None:
        for n in range(120):
            published.append(await redis_engine.events.publish("p1", {"n": n}))
            if n % 12 == 0 and n // 12 < len(reached):
                reached[n // 12].set()
        done_publishing.set()

    async def joiner(index: int) -> None:
        await reached[index].wait()
        since = published[index * 12]
        async with redis_engine_b.events.subscribe("p1", last_event_id=since) as sub:
            assert sub.gap is False
            await done_publishing.wait()
            expected = len(published) - published.index(since) - 1
            joins.append((since, await take(sub, expected)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(publisher)
        for index in range(8):
            tg.start_soon(joiner, index)
    assert len(joins) == 8
    for since, got in joins:
        assert [e.id for e in got] == published[published.index(since) + 1 :]


async def test_subscribe_needs_a_started_engine(redis_target: Any, redis_prefix: str) -> None:
    """Subscribing before `async with engine:` is a configuration error, not a silent hang."""
    engine = redis_target.engine(prefix=redis_prefix)
    try:
        with pytest.raises(ConfigurationError, match="async with engine"):
            async with engine.events.subscribe("p1"):
                pass
    finally:
        await engine.aclose()


async def test_closing_the_engine_ends_subscriptions(redis_target: Any, redis_prefix: str) -> None:
    """Leaving `async with engine:` stops the readers and ends open subscriptions' iteration."""
    ended = anyio.Event()
    engine = redis_target.engine(prefix=redis_prefix)
    async with anyio.create_task_group() as tg:
        async with engine:
            started = anyio.Event()

            async def listen() -> None:
                async with engine.events.subscribe("p1") as sub:
                    started.set()
                    async for _ in sub:
                        pass
                ended.set()

            tg.start_soon(listen)
            await started.wait()
        with anyio.fail_after(WAIT):
            await ended.wait()
    assert engine.events.reader_count() == 0


def _queued(engine: RedisEngine, *, events: int, start: int) -> tuple[Any, Any]:
    """A subscription resuming after ``<start>-0`` over a queue a reader filled with ``1-0`` .. ``<events>-0``
    (event ``n`` carries ``{"n": n}``), and that queue."""
    from integration_status.backends._redis_events import RedisSubscription, _Reader, _Subscriber

    queue = _Subscriber(10)
    for ms in range(1, events + 1):
        assert queue.offer(((ms, 0), StoredEvent(id=f"{ms}-0", data={"n": ms})))
    reader = _Reader("p1", "unused", (0, 0))
    sub = RedisSubscription(engine.events, reader, queue, gap=False, start=(start, 0), backlog=[], until=None)
    return sub, queue


async def test_live_events_up_to_the_start_are_skipped(redis_engine: RedisEngine) -> None:
    """Live entries at or before the resume point (a reader behind it) are skipped, later ones delivered."""
    # The race (a shared reader still behind a resuming client's id) cannot be provoked reliably through
    # Redis, so this drives the subscription with a queue as such a reader would have filled it.
    sub, _ = _queued(redis_engine, events=5, start=3)
    assert [e.id for e in await take(sub, 2)] == ["4-0", "5-0"]


async def test_poll_hands_out_what_is_queued_without_waiting_and_skips_the_replayed(
    redis_engine: RedisEngine,
) -> None:
    """poll() takes queued events in order (never one at or before the resume point), then says None while
    the queue is empty instead of waiting; iterating after it goes on from where poll left off."""
    sub, queue = _queued(redis_engine, events=4, start=2)
    assert [sub.poll(), sub.poll()] == [
        StoredEvent(id="3-0", data={"n": 3}),
        StoredEvent(id="4-0", data={"n": 4}),
    ]
    assert sub.poll() is None
    assert queue.offer(((5, 0), StoredEvent(id="5-0", data={"n": 5})))
    assert [e.id for e in await take(sub, 1)] == ["5-0"]
    queue.fail(SubscriberLagging, "behind")
    assert sub.poll() is None  # the error is for iterating to raise
    with pytest.raises(SubscriberLagging):
        await take(sub, 1)


@pytest.mark.redis_single
async def test_a_burst_of_streams_opening_asks_redis_for_the_newest_id_once(
    redis_engines: Any, redis_raw: Any
) -> None:
    """Three hundred subscribers of one project arrive at once (browsers reconnecting to a restarted worker)
    on a pool of two connections: every one of them subscribes, with one XREVRANGE for all, not one each."""

    def calls() -> int:
        return int(stats.get("cmdstat_xrevrange", {}).get("calls", 0))

    engine = await redis_engines(pool_size=2)
    await engine.events.publish("burst", {"n": 0})
    stats = await redis_raw.info("commandstats")
    before = calls()
    opened = 0
    all_open = anyio.Event()
    release = anyio.Event()

    async def one() -> None:
        nonlocal opened
        await engine.events.ready("burst")
        async with engine.events.subscribe("burst"):
            opened += 1
            if opened == 300:
                all_open.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(300):
            tg.start_soon(one)
        with anyio.fail_after(WITHIN):
            await all_open.wait()  # each one behind a Redis round trip or the shared one
        stats = await redis_raw.info("commandstats")
        release.set()
    assert calls() - before <= 2  # ready() and subscribe() may each be first once


# --- a webhook delivery recorded and published in one step ---------------------------------------------------


def webhook_service(engine: RedisEngine) -> Any:
    """A service on ``engine`` that takes signed GitHub pushes for project ``p`` (secret ``s3cret``)."""
    from integration_status import Secret, StatusService, WebhookTarget
    from integration_status.testing import ScriptedAdapter, StaticConnections, snapshot

    async def resolve(provider: str, headers: Any, payload: Any) -> WebhookTarget:
        return WebhookTarget(project_id="p", secret=Secret("s3cret"))

    return StatusService(
        connections=StaticConnections.linked("p", "github"),
        adapters=[ScriptedAdapter("github", snapshot("github"))],
        engine=engine,
        clock=engine._s.clock,
        webhooks=resolve,
    )


def signed_push(digit: str, delivery: str) -> tuple[bytes, dict[str, str]]:
    """A signed push of the sha ``digit * 40`` under the delivery id ``delivery``: its body and headers."""
    from integration_status.testing import sign_github

    body = b'{"ref": "refs/heads/main", "after": "' + digit.encode() * 40 + b'"}'
    return body, {**sign_github("s3cret", body), "X-GitHub-Event": "push", "X-GitHub-Delivery": delivery}


async def test_publish_delivery_records_and_publishes_only_together(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine, redis_raw: Any
) -> None:
    """publish_delivery records a delivery's keys in order while each is new and appends its events only when
    every key was new: a replay (content known) and a re-signed retry (content new, id known) publish nothing,
    and nothing is recorded after the first known key. On a cluster the keys carry the project's hash tag, in
    the slot of its stream (the script could not run otherwise)."""
    publish, other = redis_engine.publish_delivery, redis_engine_b.publish_delivery
    stream = f"{redis_engine.prefix}:events:{{p}}"
    cluster = isinstance(redis_raw, RedisCluster)
    key = (
        f"{redis_engine.prefix}:delivery:{{p}}:".__add__
        if cluster
        else f"{redis_engine.prefix}:delivery:".__add__
    )
    ids = await publish(
        "p", [{"type": "github:push", "n": 1}, {"type": "github:push", "n": 2}], ["c1", "d1"], 3600
    )
    assert ids is not None
    assert len(ids) == 2
    assert [entry[0] for entry in await redis_raw.xrange(stream)] == ids
    assert 3_599_000 < await redis_raw.pttl(key("d1")) <= 3_600_000
    assert await other("p", [{"type": "github:push", "n": 3}], ["c1", "d2"], 3600) is None  # a replay
    assert await redis_raw.exists(key("d2")) == 0
    assert await other("p", [{"type": "github:push", "n": 4}], ["c2", "d1", "x"], 3600) is None  # re-signed
    assert await redis_raw.exists(key("c2")) == 1
    assert await redis_raw.exists(key("x")) == 0
    assert await redis_raw.xlen(stream) == 2
    assert await redis_raw.pttl(stream) > 0


async def test_a_webhook_on_redis_is_recorded_and_published_in_one_step(redis_engine: RedisEngine) -> None:
    """Through the service, on a single Redis and on a cluster: a signed push is recorded and published in one step, its
    redelivery is a duplicate that publishes nothing, and a subscriber gets the push and then the refresh's
    marker, nothing else."""
    service = webhook_service(redis_engine)
    body, headers = signed_push("a", "d-1")
    async with service, service.subscribe("p") as subscription:
        first = await service.ingest_webhook("github", headers, body)
        again = await service.ingest_webhook("github", headers, body)
        events = await take(subscription, 2)
        await nothing_more(subscription, redis_engine, "p")
    assert (first.status, first.body, first.published) == (200, {"ok": True}, True)
    assert (again.status, again.body, again.published) == (200, {"ok": True, "duplicate": True}, False)
    assert [e.data["type"] for e in events] == ["github:push", "status:update"]
    assert events[0].data["sha"] == "a" * 40


@pytest.mark.redis_single
async def test_a_webhook_that_cannot_reach_redis_records_nothing(redis_engines: Any) -> None:
    """Redis gone while a push arrives: the delivery fails (503 for the provider) with nothing recorded, so
    the provider's retry, once Redis is back, is accepted and published once."""
    proxy = RedisProxy()
    try:
        engine = await redis_engines(url=proxy.url, socket_timeout=0.5)
        service = webhook_service(engine)
        body, headers = signed_push("b", "d-2")
        async with service:
            proxy.cut()
            with anyio.fail_after(WAIT), pytest.raises(BackendUnavailable):
                await service.ingest_webhook("github", headers, body)
            proxy.restore()
            with anyio.fail_after(WAIT):
                retry = await service.ingest_webhook("github", headers, body)
            assert (retry.status, retry.body, retry.published) == (200, {"ok": True}, True)
    finally:
        proxy.cut()


@pytest.mark.redis_single
async def test_a_webhook_whose_script_runs_after_it_timed_out_is_published_once(
    redis_engines: Any, redis_raw: Any, redis_prefix: str
) -> None:
    """A hung server that resumes runs the commands it was sent meanwhile: the delivery the provider was told
    failed (503) is then recorded and published after all, together, so its retry is a duplicate and its push
    is on the stream once, neither lost nor twice."""
    proxy = RedisProxy()
    try:
        engine = await redis_engines(url=proxy.url, socket_timeout=0.5)
        service = webhook_service(engine)
        body, headers = signed_push("c", "d-3")
        stream = f"{redis_prefix}:events:{{p}}"
        async with service:
            proxy.hung = True
            with anyio.fail_after(WAIT), pytest.raises(BackendUnavailable):
                await service.ingest_webhook("github", headers, body)
            proxy.hung = False  # the held script reaches Redis now
            with anyio.fail_after(WAIT):
                arrived = await redis_raw.xread({stream: "0-0"}, block=int(WAIT * 1000))
                retry = await service.ingest_webhook("github", headers, body)
            assert (retry.status, retry.body) == (200, {"ok": True, "duplicate": True})
            [(_, entries)] = arrived
            assert [json.loads(fields["data"])["sha"] for _, fields in entries] == ["c" * 40]
            assert await redis_raw.xlen(stream) == 1
    finally:
        proxy.cut()
