"""SnapshotCache: jittered TTL, single-flight refreshes (in-process and across workers), last good value."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status.backends._memory_cache import MemoryCacheStore
from integration_status.core.cache import SnapshotCache
from integration_status.core.clock import utcnow
from integration_status.exceptions import (
    ConfigurationError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from integration_status.models import Problem
from integration_status.protocols import CacheEntry
from integration_status.snapshot import ProviderSnapshot, Segment
from integration_status.testing import FakeClock

KEY = "p1:github"


def snap(text: str = "Linked", status: str = "connected") -> ProviderSnapshot:
    return ProviderSnapshot(provider="github", status=status, summary=(Segment(pieces=(text,)),))  # type: ignore[arg-type]


class Fetch:
    """A scripted fetch: counts calls, optionally waits on the clock or on a gate, then returns or raises."""

    def __init__(
        self, result: ProviderSnapshot | BaseException, *, clock: FakeClock | None = None, delay: float = 0
    ):
        self.result = result
        self.clock = clock
        self.delay = delay
        self.calls = 0
        self.finished = 0
        self.gate: anyio.Event | None = None

    async def __call__(self) -> ProviderSnapshot:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.clock is not None and self.delay:
            await self.clock.sleep(self.delay)
        self.finished += 1
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


class Changes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, CacheEntry]] = []

    async def __call__(self, key: str, entry: CacheEntry) -> None:
        self.seen.append((key, entry))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryCacheStore:
    return MemoryCacheStore(clock=clock)


@pytest.fixture
async def tg() -> AsyncIterator[anyio.abc.TaskGroup]:
    async with anyio.create_task_group() as group:
        yield group
        group.cancel_scope.cancel()  # stop fetches a test left hanging on purpose


def make(store: MemoryCacheStore, clock: FakeClock, tg: anyio.abc.TaskGroup, **kwargs: Any) -> SnapshotCache:
    cache = SnapshotCache(store, clock=clock, rng=random.Random(7), **kwargs)
    cache.start(tg.start_soon)
    return cache


# --- configuration and TTL ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"ttl": 0}, {"ttl": -5}, {"jitter": -0.1}, {"jitter": 1.0}, {"keep_for": 0}, {"lock_ttl": 0}],
)
def test_invalid_settings_raise_configuration_error(
    kwargs: dict[str, float], store: MemoryCacheStore
) -> None:
    """ttl <= 0, jitter outside [0, 1), keep_for or lock_ttl <= 0 are refused with a clear message."""
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        SnapshotCache(store, clock=FakeClock(), **kwargs)


@given(
    ttl=st.floats(0.001, 1000, allow_nan=False),
    jitter=st.floats(0, 0.999, allow_nan=False),
    seed=st.integers(0, 2**32),
)
def test_ttl_draw_stays_within_the_jitter_bounds(ttl: float, jitter: float, seed: int) -> None:
    """Every drawn TTL lies in [ttl * (1 - jitter), ttl * (1 + jitter)] and is positive."""
    clock = FakeClock()
    cache = SnapshotCache(
        MemoryCacheStore(clock=clock), clock=clock, ttl=ttl, jitter=jitter, rng=random.Random(seed)
    )
    for _ in range(20):
        drawn = cache.ttl_draw()
        assert ttl * (1 - jitter) <= drawn <= ttl * (1 + jitter)
        assert drawn > 0


def test_ttl_draws_spread_over_the_whole_range() -> None:
    """Draws are spread between 0.8T and 1.2T by default, not stuck at T."""
    clock = FakeClock()
    cache = SnapshotCache(MemoryCacheStore(clock=clock), clock=clock, rng=random.Random(1))
    draws = [cache.ttl_draw() for _ in range(2000)]
    assert 12.0 <= min(draws) < 12.3
    assert 17.7 < max(draws) <= 18.0


@pytest.mark.anyio
async def test_refresh_before_start_is_a_configuration_error(
    store: MemoryCacheStore, clock: FakeClock
) -> None:
    """Without start(spawn) there is nowhere to run refreshes: a clear ConfigurationError, no fetch."""
    cache = SnapshotCache(store, clock=clock)
    fetch = Fetch(snap())
    with pytest.raises(ConfigurationError, match="start"):
        await cache.refresh(KEY, fetch)
    assert fetch.calls == 0


@pytest.mark.anyio
async def test_entry_is_fresh_until_its_drawn_ttl(store: MemoryCacheStore, clock: FakeClock, tg: Any) -> None:
    """A refreshed entry is fresh for its drawn TTL, then expired, and it stays stored after expiring."""
    cache = make(store, clock, tg, ttl=10, jitter=0.2)
    entry = await cache.refresh(KEY, Fetch(snap()))
    assert entry.checked_at == clock.time()
    assert 8 <= entry.fresh_until - clock.time() <= 12
    assert cache.is_fresh(entry)
    clock.advance(7.99)
    assert cache.is_fresh(entry)
    clock.advance(entry.fresh_until - clock.time())
    assert not cache.is_fresh(entry)
    assert await cache.peek(KEY) == entry


@pytest.mark.anyio
async def test_peek_of_an_unknown_key_is_none(store: MemoryCacheStore, clock: FakeClock, tg: Any) -> None:
    """peek never fetches; an unknown key gives None."""
    cache = make(store, clock, tg)
    assert await cache.peek("nope:github") is None


# --- single-flight in one process ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_hundred_concurrent_refreshes_make_one_fetch(store: MemoryCacheStore, clock: FakeClock) -> None:
    """100 concurrent refreshes of one key make exactly one fetch and all get the same entry."""
    fetch = Fetch(snap())
    fetch.gate = anyio.Event()
    results: list[CacheEntry] = []
    async with anyio.create_task_group() as tg:
        cache = make(store, clock, tg)

        async def waiter() -> None:
            results.append(await cache.refresh(KEY, fetch))

        for _ in range(100):
            tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert fetch.calls == 1
        assert clock.sleepers == 0  # waiters in this process share the flight; none polls the store lock
        assert cache.in_flight(KEY)
        fetch.gate.set()
    assert fetch.calls == 1
    assert len(results) == 100
    assert all(r is results[0] for r in results)
    assert not cache.in_flight(KEY)


@pytest.mark.anyio
async def test_concurrent_waiters_share_the_same_exception(store: MemoryCacheStore, clock: FakeClock) -> None:
    """When the shared fetch fails, every waiter gets that one error, and only one fetch happened."""
    error = ProviderRateLimited("429", provider="github", retry_after=30)
    fetch = Fetch(error)
    fetch.gate = anyio.Event()
    caught: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        cache = make(store, clock, tg)

        async def waiter() -> None:
            try:
                await cache.refresh(KEY, fetch)
            except ProviderError as exc:
                caught.append(exc)

        for _ in range(20):
            tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        fetch.gate.set()
    assert fetch.calls == 1
    assert len(caught) == 20
    assert all(exc is error for exc in caught)


@pytest.mark.anyio
async def test_different_keys_refresh_independently(
    store: MemoryCacheStore, clock: FakeClock, tg: Any
) -> None:
    """Single-flight is per key: two keys make two fetches."""
    cache = make(store, clock, tg)
    a, b = Fetch(snap("a")), Fetch(snap("b"))
    async with anyio.create_task_group() as inner:
        inner.start_soon(cache.refresh, "p1:github", a)
        inner.start_soon(cache.refresh, "p2:github", b)
    assert (a.calls, b.calls) == (1, 1)
    assert (await cache.peek("p2:github")).snapshot == snap("b")  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_a_later_refresh_fetches_again(store: MemoryCacheStore, clock: FakeClock, tg: Any) -> None:
    """Once a refresh has finished, the next one fetches anew (no result is pinned in the flight table)."""
    cache = make(store, clock, tg)
    fetch = Fetch(snap())
    await cache.refresh(KEY, fetch)
    await cache.refresh(KEY, fetch)
    assert fetch.calls == 2


@pytest.mark.anyio
async def test_cancelled_waiters_do_not_cancel_the_fetch(
    store: MemoryCacheStore, clock: FakeClock, tg: Any
) -> None:
    """Waiters giving up (a request deadline) leave the one fetch running; it stores its entry when it ends,
    and callers arriving meanwhile join the same fetch."""
    cache = make(store, clock, tg)
    fetch = Fetch(snap(), clock=clock, delay=2.0)
    gave_up = 0

    async def impatient() -> None:
        nonlocal gave_up
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await cache.refresh(KEY, fetch)
        gave_up += scope.cancelled_caught

    scopes: list[anyio.CancelScope] = []
    async with anyio.create_task_group() as callers:
        for _ in range(10):
            callers.start_soon(impatient)
        await anyio.wait_all_tasks_blocked()
        for scope in scopes:
            scope.cancel()
    assert gave_up == 10
    assert fetch.calls == 1
    assert fetch.finished == 0
    assert await cache.peek(KEY) is None
    assert cache.in_flight(KEY)

    late: list[CacheEntry] = []
    async with anyio.create_task_group() as callers:
        callers.start_soon(lambda: _append(late, cache.refresh(KEY, fetch)))
        await anyio.wait_all_tasks_blocked()
        clock.advance(2.0)
    assert fetch.calls == 1
    assert fetch.finished == 1
    stored = await cache.peek(KEY)
    assert stored is not None
    assert late == [stored]


async def _append(out: list[Any], awaitable: Any) -> None:
    out.append(await awaitable)


@pytest.mark.anyio
async def test_an_abandoned_refresh_still_stores_its_result(
    store: MemoryCacheStore, clock: FakeClock, tg: Any
) -> None:
    """With every caller gone, the background refresh still completes as time passes and stores its entry."""
    cache = make(store, clock, tg)
    fetch = Fetch(snap(), clock=clock, delay=2.5)
    with anyio.CancelScope() as scope:
        tg.start_soon(lambda: _cancel_soon(scope))
        await cache.refresh(KEY, fetch)
    assert scope.cancelled_caught
    clock.advance(2.5)
    await anyio.wait_all_tasks_blocked()
    stored = await cache.peek(KEY)
    assert stored is not None
    assert stored.snapshot == snap()
    assert cache.is_fresh(stored)


async def _cancel_soon(scope: anyio.CancelScope) -> None:
    await anyio.wait_all_tasks_blocked()
    scope.cancel()


# --- success and failure bookkeeping ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_failure_keeps_the_last_good_value(store: MemoryCacheStore, clock: FakeClock, tg: Any) -> None:
    """A failed refresh neither overwrites the last good snapshot nor extends its freshness; it notes the
    error and re-raises it."""
    cache = make(store, clock, tg)
    good = await cache.refresh(KEY, Fetch(snap()))
    clock.advance(30)
    error = ProviderTimeout("read timeout", provider="github")
    with pytest.raises(ProviderTimeout) as caught:
        await cache.refresh(KEY, Fetch(error))
    assert caught.value is error
    after = await cache.peek(KEY)
    assert after is not None
    assert after.snapshot == good.snapshot
    assert (after.fresh_until, after.checked_at, after.changed_at) == (
        good.fresh_until,
        good.checked_at,
        good.changed_at,
    )
    assert after.error == Problem(code="timeout", hint="Try again")
    assert after.error_at == clock.time()
    assert not cache.is_fresh(after)


@pytest.mark.anyio
async def test_failure_without_a_previous_entry_stores_nothing(
    store: MemoryCacheStore, clock: FakeClock, tg: Any
) -> None:
    """A cold refresh that fails leaves the key empty and raises."""
    cache = make(store, clock, tg)
    with pytest.raises(ProviderRateLimited):
        await cache.refresh(KEY, Fetch(ProviderRateLimited("429", provider="github", retry_after=12)))
    assert await cache.peek(KEY) is None


@pytest.mark.anyio
async def test_unexpected_exceptions_become_provider_unavailable(
    store: MemoryCacheStore, clock: FakeClock, tg: Any
) -> None:
    """A non-provider exception from fetch is normalised to ProviderUnavailable (code unknown), chained."""
    cache = make(store, clock, tg)
    await cache.refresh(KEY, Fetch(snap()))
    with pytest.raises(ProviderUnavailable) as caught:
        await cache.refresh(KEY, Fetch(KeyError("token=ghp_secret")))
    assert isinstance(caught.value.__cause__, KeyError)
    assert "ghp_secret" not in str(caught.value)
    assert caught.value.provider == "github"
    entry = await cache.peek(KEY)
    assert entry is not None
    assert entry.error == Problem(code="unknown", hint="Provider error")


@pytest.mark.anyio
async def test_changed_at_moves_only_when_content_changes(
    store: MemoryCacheStore, clock: FakeClock, tg: Any
) -> None:
    """Equal content keeps changed_at (the ETag holds); new content moves it; checked_at always moves."""
    cache = make(store, clock, tg)
    first = await cache.refresh(KEY, Fetch(snap("Linked")))
    assert first.changed_at == utcnow(clock)
    clock.advance(20)
    same = await cache.refresh(KEY, Fetch(snap("Linked")))
    assert same.changed_at == first.changed_at
    assert same.checked_at == first.checked_at + 20
    clock.advance(20)
    moved = await cache.refresh(KEY, Fetch(snap("Linked", status="warning")))
    assert moved.changed_at == utcnow(clock)
    assert moved.changed_at > first.changed_at


@pytest.mark.anyio
async def test_on_change_is_called_exactly_when_expected(
    store: MemoryCacheStore, clock: FakeClock, tg: Any
) -> None:
    """on_change fires on new content, a new or different error, and a cleared error; never on repeats."""
    changes = Changes()
    cache = make(store, clock, tg, on_change=changes)

    async def step(result: ProviderSnapshot | ProviderError) -> None:
        clock.advance(20)
        with contextlib.suppress(ProviderError):
            await cache.refresh(KEY, Fetch(result))

    timeout = ProviderTimeout("t", provider="github")
    rate = ProviderRateLimited("r", provider="github", retry_after=5)
    expected = [
        (snap("a"), True),  # first value
        (snap("a"), False),  # same content
        (snap("b"), True),  # new content
        (timeout, True),  # new error
        (ProviderTimeout("t again", provider="github"), False),  # same problem again
        (rate, True),  # a different problem
        (snap("b"), True),  # same content, but the error is cleared
        (snap("b"), False),
    ]
    for result, fires in expected:
        before = len(changes.seen)
        await step(result)
        assert len(changes.seen) == before + fires, result
        if fires:
            assert changes.seen[-1] == (KEY, await cache.peek(KEY))
    assert changes.seen[-1][1].error is None
    assert changes.seen[-1][1].error_at is None


@pytest.mark.anyio
async def test_a_failing_listener_does_not_fail_the_refresh(
    store: MemoryCacheStore, clock: FakeClock, tg: Any
) -> None:
    """An exception in on_change is logged; the refresh still succeeds and the entry is stored."""

    async def broken(key: str, entry: CacheEntry) -> None:
        raise RuntimeError("listener bug")

    cache = make(store, clock, tg, on_change=broken)
    entry = await cache.refresh(KEY, Fetch(snap()))
    assert await cache.peek(KEY) == entry


@pytest.mark.anyio
async def test_invalidate_expires_but_keeps_the_entry(
    store: MemoryCacheStore, clock: FakeClock, tg: Any
) -> None:
    """invalidate makes a fresh entry stale without dropping it; unknown keys are a no-op."""
    cache = make(store, clock, tg)
    entry = await cache.refresh(KEY, Fetch(snap()))
    await cache.invalidate(KEY)
    await cache.invalidate("other:github")
    after = await cache.peek(KEY)
    assert after is not None
    assert not cache.is_fresh(after)
    assert attrs.evolve(after, fresh_until=entry.fresh_until) == entry
    assert await cache.peek("other:github") is None


@pytest.mark.anyio
async def test_invalidate_during_a_refresh_does_not_let_it_count_as_fresh(
    store: MemoryCacheStore, clock: FakeClock, tg: Any
) -> None:
    """A refresh that was running when the key was invalidated (it may have read the provider before the
    change) is kept as the last good value but not as fresh, and the next refresh fetches anew."""
    cache = make(store, clock, tg)
    old = Fetch(snap("before"))
    old.gate = anyio.Event()
    results: list[CacheEntry] = []

    async def first() -> None:
        results.append(await cache.refresh(KEY, old))

    tg.start_soon(first)
    await anyio.wait_all_tasks_blocked()
    assert old.calls == 1
    await cache.invalidate(KEY)
    old.gate.set()
    await anyio.wait_all_tasks_blocked()
    stored = await cache.peek(KEY)
    assert stored is not None
    assert not cache.is_fresh(stored)
    assert not cache.is_fresh(results[0])
    new = Fetch(snap("after"))
    entry = await cache.refresh(KEY, new)
    assert new.calls == 1
    assert cache.is_fresh(entry)


# --- across workers -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_two_workers_make_one_fetch(store: MemoryCacheStore, clock: FakeClock, tg: Any) -> None:
    """Two caches sharing a store: the second waits for the first worker's result instead of fetching."""
    one, two = make(store, clock, tg), make(store, clock, tg)
    fetch_one, fetch_two = Fetch(snap("one")), Fetch(snap("two"))
    fetch_one.gate = anyio.Event()
    results: dict[str, CacheEntry] = {}

    async def run(name: str, cache: SnapshotCache, fetch: Fetch) -> None:
        results[name] = await cache.refresh(KEY, fetch)

    async with anyio.create_task_group() as workers:
        workers.start_soon(run, "one", one, fetch_one)
        await anyio.wait_all_tasks_blocked()
        workers.start_soon(run, "two", two, fetch_two)
        await anyio.wait_all_tasks_blocked()
        assert clock.sleepers == 1  # worker two polls the store
        fetch_one.gate.set()
        await anyio.wait_all_tasks_blocked()
        clock.advance(0.05)
    assert (fetch_one.calls, fetch_two.calls) == (1, 0)
    assert results["two"] == results["one"]
    assert results["two"].snapshot == snap("one")


@pytest.mark.anyio
async def test_an_expired_lock_lets_the_waiting_worker_fetch(
    store: MemoryCacheStore, clock: FakeClock, tg: Any
) -> None:
    """If the lock holder never finishes, the other worker fetches itself once lock_ttl has passed."""
    one, two = make(store, clock, tg, lock_ttl=5), make(store, clock, tg, lock_ttl=5)
    stuck, fetch_two = Fetch(snap("one")), Fetch(snap("two"))
    stuck.gate = anyio.Event()  # never set: worker one hangs
    tg.start_soon(one.refresh, KEY, stuck)
    await anyio.wait_all_tasks_blocked()
    result: list[CacheEntry] = []
    async with anyio.create_task_group() as workers:
        workers.start_soon(lambda: _append(result, two.refresh(KEY, fetch_two)))
        await anyio.wait_all_tasks_blocked()
        clock.advance(4.9)
        await anyio.wait_all_tasks_blocked()
        assert fetch_two.calls == 0
        clock.advance(0.1)
    assert fetch_two.calls == 1
    assert result[0].snapshot == snap("two")
    # Worker two released the lock it took over.
    token = await store.try_lock(KEY, 1)
    assert token is not None


@pytest.mark.anyio
async def test_a_failure_in_another_worker_is_raised_to_the_waiter(
    store: MemoryCacheStore, clock: FakeClock, tg: Any
) -> None:
    """A waiting worker sees the lock holder's failure on the stored entry and raises it, without fetching."""
    one, two = make(store, clock, tg), make(store, clock, tg)
    await one.refresh(KEY, Fetch(snap()))
    clock.advance(30)
    failing, fetch_two = (
        Fetch(ProviderRateLimited("429", provider="github", retry_after=9)),
        Fetch(snap("two")),
    )
    failing.gate = anyio.Event()
    caught: list[BaseException] = []

    async def second() -> None:
        try:
            await two.refresh(KEY, fetch_two)
        except ProviderError as exc:
            caught.append(exc)

    async with anyio.create_task_group() as workers:
        workers.start_soon(lambda: _swallow(one.refresh(KEY, failing)))
        await anyio.wait_all_tasks_blocked()
        workers.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        failing.gate.set()
        await anyio.wait_all_tasks_blocked()
        clock.advance(0.05)
    assert fetch_two.calls == 0
    assert len(caught) == 1
    assert isinstance(caught[0], ProviderRateLimited)
    assert caught[0].hint == "Retry in 9s"


async def _swallow(awaitable: Any) -> None:
    with contextlib.suppress(ProviderError):
        await awaitable


class RacingStore(MemoryCacheStore):
    """A store where another worker finishes a refresh just before our lock attempt succeeds."""

    def __init__(self, *, clock: FakeClock, make_entry: Callable[[], CacheEntry]) -> None:
        super().__init__(clock=clock)
        self.make_entry = make_entry

    async def try_lock(self, key: str, ttl: float) -> str | None:
        await self.save(key, self.make_entry(), keep_for=60)
        return await super().try_lock(key, ttl)


@pytest.mark.anyio
async def test_a_result_stored_just_before_our_lock_is_reused(clock: FakeClock, tg: Any) -> None:
    """A fresh entry another worker stored between our load and our lock is returned without a fetch."""
    theirs = CacheEntry(
        snapshot=snap("theirs"),
        fresh_until=clock.time() + 15,
        changed_at=utcnow(clock),
        checked_at=clock.time(),
    )
    store = RacingStore(clock=clock, make_entry=lambda: theirs)
    cache = make(store, clock, tg)
    fetch = Fetch(snap("ours"))
    assert await cache.refresh(KEY, fetch) == theirs
    assert fetch.calls == 0


# --- the memory store ---------------------------------------------------------------------------------------


def _entry(clock: FakeClock, text: str = "x") -> CacheEntry:
    return CacheEntry(
        snapshot=snap(text), fresh_until=clock.time() + 15, changed_at=utcnow(clock), checked_at=clock.time()
    )


@pytest.mark.anyio
async def test_memory_store_keeps_entries_for_keep_for(clock: FakeClock) -> None:
    """An entry lives exactly keep_for seconds of the injected clock; delete removes it at once."""
    store = MemoryCacheStore(clock=clock)
    await store.save("a", _entry(clock), keep_for=100)
    await store.save("b", _entry(clock), keep_for=10)
    clock.advance(9.9)
    assert await store.load("b") is not None
    clock.advance(0.1)
    assert await store.load("b") is None
    assert await store.load("a") is not None
    await store.delete("a")
    await store.delete("missing")
    assert await store.load("a") is None


@pytest.mark.anyio
async def test_memory_store_is_bounded(clock: FakeClock) -> None:
    """Beyond maxsize the least recently used entry is evicted."""
    store = MemoryCacheStore(clock=clock, maxsize=2)
    await store.save("a", _entry(clock), keep_for=100)
    await store.save("b", _entry(clock), keep_for=100)
    assert await store.load("a") is not None  # a is now more recent than b
    await store.save("c", _entry(clock), keep_for=100)
    assert len(store) == 2
    assert await store.load("b") is None
    assert await store.load("a") is not None


@pytest.mark.parametrize("maxsize", [0, -1, 1.5, True])
def test_memory_store_rejects_a_bad_maxsize(maxsize: Any) -> None:
    """maxsize must be a positive integer."""
    with pytest.raises(ConfigurationError, match="maxsize"):
        MemoryCacheStore(clock=FakeClock(), maxsize=maxsize)


@pytest.mark.anyio
async def test_memory_store_locks_have_owners_and_expire(clock: FakeClock) -> None:
    """A held lock refuses others; only its owner token unlocks it; it expires after its TTL."""
    store = MemoryCacheStore(clock=clock)
    token = await store.try_lock("k", 5)
    assert token is not None
    assert await store.try_lock("k", 5) is None
    assert await store.try_lock("other", 5) is not None
    await store.unlock("k", "not-the-owner")
    assert await store.try_lock("k", 5) is None
    clock.advance(5)
    second = await store.try_lock("k", 5)
    assert second is not None
    assert second != token
    await store.unlock("k", token)  # the stale owner cannot release the new holder's lock
    assert await store.try_lock("k", 5) is None
    await store.unlock("k", second)
    assert await store.try_lock("k", 5) is not None


class HoldingStore(MemoryCacheStore):
    """A shared store that holds copies of some keys (a near cache) and counts its round trips."""

    shared = True

    def __init__(self, *, clock: FakeClock, held: dict[str, CacheEntry | None]) -> None:
        super().__init__(clock=clock)
        self.held = held
        self.round_trips = 0

    def cached_many(self, keys: Any) -> list[CacheEntry | None] | None:
        if not all(key in self.held for key in keys):
            return None
        return [self.held[key] for key in keys]

    async def load_many(self, keys: Any) -> list[CacheEntry | None]:
        self.round_trips += 1
        return [await self.load(key) for key in keys]


@pytest.mark.anyio
async def test_a_shared_stores_own_copies_are_read_with_no_round_trip(clock: FakeClock, tg: Any) -> None:
    """When a shared store holds a copy of every key asked (``cached_many``), a bounded read takes them, with
    no round trip to bound; one key it does not hold sends the read to the store."""
    held = _entry(clock, "held")
    store = HoldingStore(clock=clock, held={"p:github": held, "p:vercel": None})
    cache = make(store, clock, tg)
    entries, down = await cache.peek_many(["p:github", "p:vercel"], within=0.3)
    assert (entries, down) == ([held, None], False)
    assert store.round_trips == 0
    stored = _entry(clock, "stored")
    await store.save("p:sanity", stored, keep_for=60)
    entries, down = await cache.peek_many(["p:github", "p:sanity"], within=0.3)
    assert (entries, down) == ([None, stored], False)  # what the store itself has: its copies are not asked
    assert store.round_trips == 1
