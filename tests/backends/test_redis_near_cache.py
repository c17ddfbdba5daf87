"""The near cache in front of the shared Redis cache: warm reads make no round trip, writes anywhere reach every
worker's copy through the invalidation channel, and a worker that lost the channel trusts nothing it holds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from integration_status.backends.redis import RedisEngine
from integration_status.core.cache import SnapshotCache
from integration_status.core.clock import utcnow
from integration_status.exceptions import BackendUnavailable
from integration_status.models import PROVIDERS
from integration_status.protocols import CacheEntry, RequestInfo, Viewer
from integration_status.service import Settings, StatusService
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections, snapshot
from tests.backends.conftest import RedisProxy, until_store
from tests.polling import WITHIN

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def entry(clock: FakeClock, text: str) -> CacheEntry:
    now = clock.time()
    return CacheEntry(
        snapshot=snapshot("github", text=text), fresh_until=now + 15, changed_at=utcnow(clock), checked_at=now
    )


@contextmanager
def counting(engine: RedisEngine) -> Iterator[list[str]]:
    """The names of the commands the engine's ordinary client sends while inside."""
    client = engine._s.client
    sent: list[str] = []
    original = client.execute_command

    async def execute(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await original(*args, **options)

    client.execute_command = execute  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        del client.execute_command


def text_of(found: CacheEntry | None) -> str | None:
    return None if found is None else str(found.snapshot.summary[0].pieces[0])


async def test_a_warm_read_makes_no_round_trip(redis_engine: RedisEngine, redis_clock: FakeClock) -> None:
    """Once a key was read (or written) while the channel is up, reading it again sends nothing to Redis."""
    store = redis_engine.cache_store
    assert store.coherent
    await store.save("p:github", entry(redis_clock, "one"), keep_for=60)
    with counting(redis_engine) as sent:
        for _ in range(10):
            assert text_of(await store.load("p:github")) == "one"
        assert await store.load_many(["p:github"]) == [await store.load("p:github")]
    assert sent == []


async def test_a_project_is_read_in_one_round_trip(redis_engine: RedisEngine, redis_clock: FakeClock) -> None:
    """The four entries of a project come in ONE MGET when not held, and with none once they are."""
    store = redis_engine.cache_store
    keys = [f"p:{provider}" for provider in PROVIDERS]
    await redis_engine.cache_store.save("p:github", entry(redis_clock, "gh"), keep_for=60)
    store._trust(True)  # forget what the save left in the near cache
    with counting(redis_engine) as cold:
        found = await store.load_many(keys)
    with counting(redis_engine) as warm:
        again = await store.load_many(keys)
    assert cold == ["MGET"]
    assert warm == []
    assert [text_of(e) for e in found] == [None, "gh", None, None]
    assert again == found


async def test_a_write_by_another_worker_reaches_this_workers_copy(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine, redis_clock: FakeClock
) -> None:
    """Worker A holds a copy; worker B writes the key: A's next reads soon see B's value (pub/sub), and a
    delete on B is a miss on A."""
    a, b = redis_engine.cache_store, redis_engine_b.cache_store
    await a.save("p:github", entry(redis_clock, "one"), keep_for=60)
    assert text_of(await a.load("p:github")) == "one"
    generation = a.generation
    await b.save("p:github", entry(redis_clock, "two"), keep_for=60)
    with anyio.fail_after(WITHIN):
        generation = await a.wait_changed(generation)  # B's announcement reached A
    assert text_of(await a.load("p:github")) == "two"
    await b.delete("p:github")
    with anyio.fail_after(WITHIN):
        await a.wait_changed(generation)
    assert await a.load("p:github") is None


async def test_wait_changed_returns_once_the_store_has_moved_past(redis_engine: RedisEngine) -> None:
    """``wait_changed(g)`` answers at once when the store is already past ``g``, else as soon as it changes
    (here: an announcement from another worker), with the new generation."""
    store = redis_engine.cache_store
    now = store.generation
    assert await store.wait_changed(now - 1) == now
    got: list[int] = []

    async def wait() -> None:
        got.append(await store.wait_changed(now))

    with anyio.fail_after(WITHIN):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            while store._changed is None:  # the waiter is registered
                await anyio.lowlevel.checkpoint()
            assert got == []
            store._hear("another-worker p:github")
    assert got == [now + 1]


async def test_a_read_that_overlapped_an_announcement_is_not_kept(
    redis_engine: RedisEngine, redis_clock: FakeClock
) -> None:
    """What Redis answered while an invalidation arrived may predate it: it is returned but not kept."""
    store = redis_engine.cache_store
    heard = store._heard
    store._hear("another-worker p:github")
    store._keep("p:github", entry(redis_clock, "maybe old"), heard)
    store._keep("p:vercel", None, store._heard)
    assert "p:github" not in store._near
    assert "p:vercel" in store._near


@pytest.mark.redis_single
async def test_a_lost_channel_stops_trust_until_it_is_back(
    redis_engines: Any, redis_clock: FakeClock
) -> None:
    """Redis goes away: the worker stops trusting its copies (reads go to Redis and fail closed), and the
    near cache and its reuse of views come back by themselves once the channel is subscribed again."""
    proxy = RedisProxy()
    try:
        engine = await redis_engines(url=proxy.url, socket_timeout=0.5)
        store = engine.cache_store
        cache = SnapshotCache(store, clock=redis_clock)
        await store.save("p:github", entry(redis_clock, "one"), keep_for=60)
        assert store.coherent
        assert cache.local
        proxy.cut()
        await until_store(store, lambda: not store.coherent)
        assert not cache.local  # views read while the channel was down are not reused
        with pytest.raises(BackendUnavailable):
            await store.load("p:github")  # the copy is not trusted
        proxy.restore()
        await until_store(store, lambda: store.coherent)
        assert cache.local
        assert text_of(await store.load("p:github")) == "one"
    finally:
        proxy.cut()


@pytest.mark.redis_single
async def test_a_silent_channel_is_taken_as_lost(redis_engines: Any) -> None:
    """A Redis that stops answering (no pong on the channel) costs the worker its trust too, and answering
    again brings it back."""
    proxy = RedisProxy()
    try:
        engine = await redis_engines(url=proxy.url, socket_timeout=0.5)
        assert engine.cache_store.coherent
        proxy.hung = True
        await until_store(engine.cache_store, lambda: not engine.cache_store.coherent)
        proxy.hung = False
        await until_store(engine.cache_store, lambda: engine.cache_store.coherent)
    finally:
        proxy.cut()


async def authenticate(request: RequestInfo) -> Viewer | None:
    return Viewer(user_id="u", project_roles={"p": {"owner"}})


async def test_a_warm_status_request_makes_no_redis_round_trip(redis_engine: RedisEngine) -> None:
    """With every entry fresh and the channel up, a status request sends no command to Redis at all."""
    service = StatusService(
        connections=StaticConnections.linked("p", *PROVIDERS),
        adapters={p: ScriptedAdapter(p, snapshot(p)) for p in PROVIDERS},
        engine=redis_engine,
        clock=redis_engine._s.clock,
        settings=Settings(cache_ttl=60.0),
    )
    viewer = Viewer(user_id="u", project_roles={"p": {"owner"}})
    async with service:
        first = await service.status("p", viewer)
        with counting(redis_engine) as sent:
            for _ in range(20):
                again = await service.status("p", viewer, if_none_match=first.etag)
                assert again.not_modified
    assert sent == []


async def test_the_copies_are_handed_out_only_when_all_are_held_and_trusted(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine, redis_clock: FakeClock
) -> None:
    """``cached_many`` answers the worker's copies only when it holds an entry for every key asked and trusts
    its channel; a key it lacks, a remembered miss (another worker may be filling it), another worker's write
    or a lost channel make it answer None, so the read goes to Redis."""
    store = redis_engine.cache_store
    await store.save("p:github", entry(redis_clock, "one"), keep_for=60)
    await store.save("p:supabase", entry(redis_clock, "two"), keep_for=60)
    assert await store.load("p:vercel") is None  # a miss, now held as None
    with counting(redis_engine) as sent:
        held = store.cached_many(["p:github", "p:supabase"])
    assert sent == []
    assert held is not None
    assert [text_of(e) for e in held] == ["one", "two"]
    assert store.cached_many(["p:github", "p:vercel"]) is None
    assert store.cached_many(["p:github", "p:sanity"]) is None
    await redis_engine_b.cache_store.save("p:github", entry(redis_clock, "two"), keep_for=60)
    await until_store(store, lambda: store.cached_many(["p:github"]) is None, within=WITHIN)
    assert await store.load("p:github") is not None
    assert store.cached_many(["p:github"]) is not None
    store._trust(False)
    assert store.cached_many(["p:github"]) is None


async def test_a_stopped_listener_leaves_its_connection_closed(redis_engine: RedisEngine) -> None:
    """Stopping the listener closes its channel's socket; the driver answers the failed read by connecting
    again before the listener sees the failure, and that connection must not outlive the listener either."""
    store = redis_engine.cache_store
    pubsub = store._pubsub
    connection = pubsub.connection
    assert connection is not None
    assert connection.is_connected
    await store.stop()
    # The listener ends on its own (its read failed while stopping): nothing cancels it here.
    with anyio.fail_after(10):
        await store.stopped()
    assert store._pubsub is None
    assert pubsub.connection is None  # given back to the pool
    assert not connection.is_connected
