from __future__ import annotations

import inspect
import itertools
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from integration_status.backends._memory_bus import MemoryEventBus, MemorySubscription, SubscriberLagging
from integration_status.backends._memory_state import MemoryIdempotencyStore, MemoryRateLimiter
from integration_status.core.events import event_id_after
from integration_status.protocols import EventBus, IdempotencyStore, RateLimiter, StoredEvent, StoredResponse
from integration_status.testing import FakeClock

OK = StoredResponse(status=200, body={"success": True, "operationId": "op"})


def test_engines_satisfy_the_protocols() -> None:
    """Each memory engine has every protocol method with the protocol's parameters (mypy checks the types)."""
    clock = FakeClock()
    store: IdempotencyStore = MemoryIdempotencyStore(clock=clock)
    limiter: RateLimiter = MemoryRateLimiter(clock=clock)
    bus: EventBus = MemoryEventBus(clock=clock)
    for engine, protocol in [(store, IdempotencyStore), (limiter, RateLimiter), (bus, EventBus)]:
        for name in ("begin", "complete", "release", "hit", "publish", "subscribe"):
            if hasattr(protocol, name):
                expected = list(inspect.signature(getattr(protocol, name)).parameters)[1:]
                assert list(inspect.signature(getattr(engine, name)).parameters) == expected


# --- idempotency store --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_store_state_machine() -> None:
    """started -> in_flight for the same request, mismatch for another, replay once completed."""
    store = MemoryIdempotencyStore(clock=FakeClock())
    first = await store.begin("k", "f", lease=60, keep_for=100)
    assert first.state == "started"
    assert first.token
    assert (await store.begin("k", "f", lease=60, keep_for=100)).state == "in_flight"
    assert (await store.begin("k", "g", lease=60, keep_for=100)).state == "mismatch"
    await store.complete("k", first.token, OK, keep_for=100)
    replay = await store.begin("k", "f", lease=60, keep_for=100)
    assert (replay.state, replay.response) == ("replay", OK)
    assert (await store.begin("k", "g", lease=60, keep_for=100)).state == "mismatch"
    assert (await store.begin("other", "f", lease=60, keep_for=100)).state == "started"


@pytest.mark.anyio
async def test_a_stale_token_cannot_complete_or_release_a_new_owners_record() -> None:
    """After a lease expires and another request takes over, the first owner's calls are no-ops."""
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock=clock)
    old = await store.begin("k", "f", lease=10, keep_for=100)
    clock.advance(10)
    new = await store.begin("k", "f", lease=10, keep_for=100)
    assert new.state == "started"
    assert new.token != old.token
    assert old.token is not None
    assert new.token is not None
    await store.complete("k", old.token, OK, keep_for=100)
    await store.release("k", old.token)
    assert (await store.begin("k", "f", lease=10, keep_for=100)).state == "in_flight"
    await store.complete("k", new.token, OK, keep_for=100)
    assert (await store.begin("k", "f", lease=10, keep_for=100)).state == "replay"


@pytest.mark.anyio
async def test_release_never_deletes_a_finished_record() -> None:
    """Once completed, a release with the same token leaves the stored response in place."""
    store = MemoryIdempotencyStore(clock=FakeClock())
    begun = await store.begin("k", "f", lease=10, keep_for=100)
    assert begun.token is not None
    await store.complete("k", begun.token, OK, keep_for=100)
    await store.release("k", begun.token)
    assert (await store.begin("k", "f", lease=10, keep_for=100)).state == "replay"


@pytest.mark.anyio
async def test_finished_records_expire_after_keep_for() -> None:
    """A record lives exactly keep_for seconds after completion."""
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock=clock)
    begun = await store.begin("k", "f", lease=10, keep_for=100)
    assert begun.token is not None
    clock.advance(5)
    await store.complete("k", begun.token, OK, keep_for=100)
    clock.advance(99.9)
    assert (await store.begin("k", "f", lease=10, keep_for=100)).state == "replay"
    clock.advance(0.1)
    assert (await store.begin("k", "g", lease=10, keep_for=100)).state == "started"


@pytest.mark.anyio
async def test_expired_records_are_swept_so_memory_stays_bounded() -> None:
    """Keys nobody asks about again are dropped by the periodic sweep."""
    clock = FakeClock()
    store = MemoryIdempotencyStore(clock=clock, sweep_every=60)
    for i in range(100):
        begun = await store.begin(f"k{i}", "f", lease=10, keep_for=30)
        assert begun.token is not None
        await store.complete(f"k{i}", begun.token, OK, keep_for=30)
    assert len(store) == 100
    clock.advance(61)
    await store.begin("fresh", "f", lease=10, keep_for=30)
    assert len(store) == 1


# --- rate limiter -------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fifty_concurrent_hits_admit_exactly_five() -> None:
    """Of 50 simultaneous actions on one (user, project), exactly 5 are admitted."""
    limiter = MemoryRateLimiter(clock=FakeClock())
    decisions: list[bool] = []

    async def hit() -> None:
        decisions.append((await limiter.hit("u:p", limit=5, window=60)).allowed)

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(hit)
    assert decisions.count(True) == 5
    assert len(decisions) == 50


@pytest.mark.anyio
async def test_limiter_window_rolls_on_the_clock() -> None:
    """A refused key is admitted again once its oldest hit is a window old."""
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    for _ in range(5):
        assert (await limiter.hit("k", limit=5, window=60)).allowed
        clock.advance(1)
    refused = await limiter.hit("k", limit=5, window=60)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(55)
    assert (await limiter.hit("other", limit=5, window=60)).allowed
    clock.advance(55)
    assert (await limiter.hit("k", limit=5, window=60)).allowed
    assert not (await limiter.hit("k", limit=5, window=60)).allowed


@pytest.mark.anyio
async def test_idle_keys_are_pruned() -> None:
    """Keys whose hits have all left the window are dropped, so memory stays bounded."""
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock, sweep_every=30)
    for i in range(200):
        await limiter.hit(f"k{i}", limit=5, window=60)
    assert len(limiter) == 200
    clock.advance(61)
    await limiter.hit("live", limit=5, window=60)
    assert len(limiter) == 1


# --- event bus ----------------------------------------------------------------------------------------------


def event(n: int, kind: str = "sanity:webhook") -> dict[str, Any]:
    return {"type": kind, "projectId": "p", "count": n, "ts": n}


async def take(subscription: MemorySubscription, n: int) -> list[StoredEvent]:
    it: AsyncIterator[StoredEvent] = aiter(subscription)
    return [await anext(it) for _ in range(n)]


def counts(events: list[StoredEvent]) -> list[int]:
    return [e.data["count"] for e in events]


@pytest.mark.anyio
async def test_ids_are_clock_milliseconds_and_strictly_increase() -> None:
    """Ids are `<ms>-<seq>` from the clock; several in one millisecond differ by seq."""
    clock = FakeClock(start=1000.0)
    bus = MemoryEventBus(clock=clock)
    ids = [await bus.publish("p", event(i)) for i in range(3)]
    clock.advance(0.002)
    ids.append(await bus.publish("p", event(3)))
    assert ids == ["1000000-0", "1000000-1", "1000000-2", "1000002-0"]
    assert await bus.publish("q", event(0)) == "1000002-0"  # per project


@pytest.mark.anyio
async def test_new_subscriber_gets_only_later_events() -> None:
    """Without Last-Event-ID, a subscriber starts with the next published event."""
    bus = MemoryEventBus(clock=FakeClock())
    await bus.publish("p", event(1))
    async with bus.subscribe("p") as sub:
        assert sub.gap is False
        await bus.publish("other", event(99))
        await bus.publish("p", event(2))
        assert counts(await take(sub, 1)) == [2]


@pytest.mark.anyio
async def test_resume_replays_buffered_events_then_live_ones_exactly_once() -> None:
    """With Last-Event-ID, every later buffered event comes first, then live ones, none twice or lost."""
    clock = FakeClock()
    bus = MemoryEventBus(clock=clock)
    ids = [await bus.publish("p", event(i)) for i in range(5)]
    async with bus.subscribe("p", last_event_id=ids[1]) as sub:
        assert sub.gap is False
        await bus.publish("p", event(5))  # published before the subscriber reads anything
        got = await take(sub, 3)
        await bus.publish("p", event(6))
        got += await take(sub, 2)
    assert counts(got) == [2, 3, 4, 5, 6]
    assert all(event_id_after(b.id, a.id) for a, b in itertools.pairwise(got))


@pytest.mark.anyio
async def test_resume_from_the_newest_id_replays_nothing() -> None:
    """A client that saw everything gets only new events, without a gap."""
    bus = MemoryEventBus(clock=FakeClock())
    last = await bus.publish("p", event(1))
    async with bus.subscribe("p", last_event_id=last) as sub:
        assert sub.gap is False
        await bus.publish("p", event(2))
        assert counts(await take(sub, 1)) == [2]


@pytest.mark.anyio
async def test_an_id_that_fell_out_of_the_buffer_is_a_gap() -> None:
    """When later events were evicted, gap is True and only live events follow."""
    bus = MemoryEventBus(clock=FakeClock(), buffer_size=3)
    ids = [await bus.publish("p", event(i)) for i in range(6)]  # 0..2 evicted
    async with bus.subscribe("p", last_event_id=ids[1]) as sub:
        assert sub.gap is True
        await bus.publish("p", event(6))
        assert counts(await take(sub, 1)) == [6]
    # Event 6 evicted event 3. The newest evicted id is still a complete resume point: all later are buffered.
    async with bus.subscribe("p", last_event_id=ids[3]) as sub:
        assert sub.gap is False
        assert counts(await take(sub, 3)) == [4, 5, 6]


@pytest.mark.parametrize(
    "last_event_id",
    ["garbage", "", "1-2-3", "0-0", "99999999999999-0", f"{2**64}-0", f"1-{2**64}", "9" * 5000],
)
@pytest.mark.anyio
async def test_unusable_ids_are_a_gap(last_event_id: str) -> None:
    """Malformed ids, ids from before this bus (a restart) and ids never issued are gaps."""
    bus = MemoryEventBus(clock=FakeClock())
    await bus.publish("p", event(1))
    async with bus.subscribe("p", last_event_id=last_event_id) as sub:
        assert sub.gap is True
        await bus.publish("p", event(2))
        assert counts(await take(sub, 1)) == [2]


@pytest.mark.anyio
async def test_an_id_from_another_project_is_a_gap() -> None:
    """An id issued to another project, inside this project's range of ids, is a gap, not a resume point."""
    clock = FakeClock()
    bus = MemoryEventBus(clock=clock)
    await bus.publish("p", event(0))
    clock.advance(1)
    foreign = await bus.publish("q", event(0))
    clock.advance(1)
    await bus.publish("p", event(1))
    async with bus.subscribe("p", last_event_id=foreign) as sub:
        assert sub.gap is True
        await bus.publish("p", event(2))
        assert counts(await take(sub, 1)) == [2]


@pytest.mark.anyio
async def test_an_id_for_a_project_without_events_is_a_gap() -> None:
    """After a restart the buffer is empty: any id may have missed events, so a snapshot is needed."""
    bus = MemoryEventBus(clock=FakeClock())
    async with bus.subscribe("p", last_event_id="1764136800000-0") as sub:
        assert sub.gap is True


@pytest.mark.anyio
async def test_a_slow_subscriber_is_dropped_without_holding_up_others() -> None:
    """A full queue drops that subscriber; it gets its queued events then SubscriberLagging; others go on."""
    bus = MemoryEventBus(clock=FakeClock(), queue_size=2)
    async with bus.subscribe("p") as slow, bus.subscribe("p") as fast:
        await bus.publish("p", event(1))
        assert counts(await take(fast, 1)) == [1]
        await bus.publish("p", event(2))
        assert counts(await take(fast, 1)) == [2]
        assert bus.subscriber_count("p") == 2
        await bus.publish("p", event(3))  # slow's queue (1, 2) is full: dropped, publish does not wait
        assert slow.dropped is True
        assert fast.dropped is False
        assert bus.subscriber_count("p") == 1
        await bus.publish("p", event(4))
        assert counts(await take(fast, 2)) == [3, 4]
        assert counts(await take(slow, 2)) == [1, 2]
        with pytest.raises(SubscriberLagging):
            await anext(aiter(slow))


@pytest.mark.anyio
async def test_leaving_the_context_unsubscribes() -> None:
    """Subscribers are removed on exit, also by an exception."""
    bus = MemoryEventBus(clock=FakeClock())
    async with bus.subscribe("p"), bus.subscribe("q"):
        assert bus.subscriber_count() == 2
        assert bus.subscriber_count("p") == 1
    assert bus.subscriber_count() == 0
    with pytest.raises(RuntimeError):
        async with bus.subscribe("p"):
            raise RuntimeError
    assert bus.subscriber_count() == 0


@pytest.mark.anyio
async def test_a_cancelled_subscriber_is_removed() -> None:
    """A stream task cancelled while waiting (client gone) leaves no subscriber behind."""
    bus = MemoryEventBus(clock=FakeClock())
    waiting = anyio.Event()

    async def stream() -> None:
        async with bus.subscribe("p") as sub:
            waiting.set()
            async for _ in sub:
                pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(stream)
        await waiting.wait()
        assert bus.subscriber_count("p") == 1
        tg.cancel_scope.cancel()
    assert bus.subscriber_count() == 0
    await bus.publish("p", event(1))  # no one to deliver to, no error


@pytest.mark.anyio
async def test_live_delivery_to_a_waiting_subscriber_in_order() -> None:
    """A subscriber blocked on the next event receives every event published meanwhile, in order."""
    bus = MemoryEventBus(clock=FakeClock())
    received: list[int] = []
    ready = anyio.Event()

    async def consume() -> None:
        async with bus.subscribe("p") as sub:
            ready.set()
            async for stored in sub:
                received.append(stored.data["count"])
                if len(received) == 20:
                    return

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await ready.wait()
        for i in range(20):
            await bus.publish("p", event(i))
            if i % 3 == 0:
                await anyio.lowlevel.checkpoint()
    assert received == list(range(20))


@pytest.mark.anyio
async def test_close_ends_every_subscription() -> None:
    """On shutdown, iterators end normally, and new subscriptions end at once."""
    bus = MemoryEventBus(clock=FakeClock())
    async with bus.subscribe("p") as sub:
        await bus.publish("p", event(1))
        bus.close()
        assert [e.data["count"] async for e in sub] == [1]
    async with bus.subscribe("p") as late:
        assert [e async for e in late] == []
    assert bus.subscriber_count() == 0


@pytest.mark.anyio
async def test_buffer_keeps_only_the_newest_events() -> None:
    """The replay buffer holds buffer_size events per project."""
    bus = MemoryEventBus(clock=FakeClock(), buffer_size=4)
    ids = [await bus.publish("p", event(i)) for i in range(10)]
    async with bus.subscribe("p", last_event_id=ids[5]) as sub:
        assert counts(await take(sub, 4)) == [6, 7, 8, 9]


@pytest.mark.anyio
async def test_published_events_are_copied() -> None:
    """Changing the caller's dict after publishing does not change what subscribers get."""
    bus = MemoryEventBus(clock=FakeClock())
    before = await bus.publish("p", event(0))
    raw = event(1)
    await bus.publish("p", raw)
    raw["count"] = 666
    async with bus.subscribe("p", last_event_id=before) as sub:
        assert counts(await take(sub, 1)) == [1]


@pytest.mark.parametrize(("buffer_size", "queue_size"), [(0, 1), (1, 0)])
def test_bus_sizes_must_be_positive(buffer_size: int, queue_size: int) -> None:
    """Zero-sized buffers or queues are refused."""
    with pytest.raises(ValueError, match="at least 1"):
        MemoryEventBus(buffer_size=buffer_size, queue_size=queue_size)


@pytest.mark.anyio
async def test_poll_takes_replay_then_queued_events_without_waiting() -> None:
    """poll() hands out the replay, then what is queued, in order, and None when the next event must be
    waited for; iterating carries on after it, and an event the replay already gave is never given twice."""
    bus = MemoryEventBus(clock=FakeClock())
    first = await bus.publish("p", event(1))
    await bus.publish("p", event(2))
    async with bus.subscribe("p", last_event_id=first) as sub:
        assert sub.poll() is not None
        assert sub.poll() is None
        await bus.publish("p", event(3))
        await bus.publish("p", event(4))
        got = [sub.poll(), sub.poll(), sub.poll()]
        assert [e.data["count"] if e else None for e in got] == [3, 4, None]
        await bus.publish("p", event(5))
        assert counts(await take(sub, 1)) == [5]


@pytest.mark.anyio
async def test_wake_wakes_its_one_waiter_and_a_cancelled_wait_leaves_it_usable() -> None:
    """A Wake set before or during the wait ends the wait; cancelling the waiter ends the wait with no error
    for the one who sets it later."""
    from integration_status.core.wake import Wake

    early = Wake()
    early.set()
    early.set()
    with anyio.fail_after(1):
        await early.wait()
    assert early.is_set()
    late = Wake()
    async with anyio.create_task_group() as tg:
        tg.start_soon(late.wait)
        await anyio.lowlevel.checkpoint()
        late.set()
    cancelled = Wake()
    with anyio.move_on_after(0) as scope:
        await cancelled.wait()
    assert scope.cancelled_caught
    assert not cancelled.is_set()
    cancelled.set()  # harmless after the waiter is gone
