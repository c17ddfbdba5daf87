"""The provider snapshot cache: TTL with jitter, single-flight refreshes (in-process and across workers),
and a last good value that a failed refresh never overwrites.

Each process also remembers the last entry it saw per key. When the shared store is unreachable
(:class:`~integration_status.exceptions.BackendUnavailable`), :meth:`SnapshotCache.peek` answers from that
copy, so status keeps being served (fresh while it lasts, then stale) instead of failing with the store.

A store that cannot answer within the caller's budget counts as unreachable too (:meth:`SnapshotCache.peek_many`
with ``within``), and for :data:`STORE_RETRY` seconds after such a failure readers are answered from the local
copies at once while one background read finds out whether the store is back: a hung store costs one request
its budget, not every request.

The cache holds raw provider snapshots per key (``"{project_id}:{provider}"``) in a ``CacheStore``.
Serving stale data while revalidating is composed by the caller: it peeks, calls
:meth:`SnapshotCache.refresh` under its own deadline, and falls back to the peeked entry when the deadline
passes. The refresh itself runs as a background task, so it finishes and stores its result however many
callers gave up on it, and it runs once per key however many callers asked.

A typical wiring::

    async with anyio.create_task_group() as tg:
        cache = SnapshotCache(MemoryCacheStore(clock=clock), clock=clock)
        cache.start(tg.start_soon)
        entry = await cache.refresh("p1:github", fetch)
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Final, cast

import anyio
import attrs
from cachetools import LRUCache

from integration_status._logging import get_logger
from integration_status.core.clock import Clock, utcnow
from integration_status.core.deadline import call_with_timeout
from integration_status.exceptions import (
    BackendUnavailable,
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from integration_status.models import Problem, ProblemCode
from integration_status.protocols import CacheEntry, CacheStore
from integration_status.snapshot import ProviderSnapshot

__all__ = ["SnapshotCache"]

#: How often a worker waiting on another worker's refresh looks at the store (seconds).
POLL_INTERVAL: Final = 0.05

#: After the store failed a read, how long readers skip it (served from local copies) before trying again.
STORE_RETRY: Final = 1.0

_ERRORS_BY_CODE: Final[dict[str, type[ProviderError]]] = {
    "oauth_revoked": ProviderAuthError,
    "rate_limited": ProviderRateLimited,
    "timeout": ProviderTimeout,
    "unknown": ProviderUnavailable,
}

OnChange = Callable[[str, CacheEntry], Awaitable[None]]
Fetch = Callable[[], Awaitable[ProviderSnapshot]]
Spawn = Callable[[Callable[[], Awaitable[None]]], None]


class _Flight:
    """One refresh in progress in this process, and the outcome its waiters share."""

    def __init__(self, started: float) -> None:
        #: When it started (monotonic): callers that did not wait for it judge by it how overdue it is.
        self.started = started
        self.done = anyio.Event()
        self.entry: CacheEntry | None = None
        self.error: BaseException | None = None
        #: Invalidated while running: what it fetched may predate the change, so it is stored but not fresh.
        self.invalidated = False


def _newer(entry: CacheEntry | None, than: CacheEntry | None) -> bool:
    return entry is not None and (than is None or entry.checked_at > than.checked_at)


def _newer_error(entry: CacheEntry | None, than: CacheEntry | None) -> bool:
    if entry is None or entry.error is None or entry.error_at is None:
        return False
    return than is None or than.error_at is None or entry.error_at > than.error_at


def _provider_of(key: str, previous: CacheEntry | None) -> str:
    return previous.snapshot.provider if previous is not None else key.rpartition(":")[2] or "unknown"


class SnapshotCache:
    """Raw snapshots per key with jittered freshness and single-flight refreshes.

    ``ttl``: seconds a successful refresh stays fresh, drawn per refresh from ``ttl * (1 ± jitter)`` so
    that keys filled together do not expire together. ``keep_for``: how long the store keeps an entry (the
    last good value served while a provider is failing). ``lock_ttl``: how long the cross-worker refresh lock
    lives, and so how long a worker waits for another worker's result before fetching itself.
    ``on_change(key, entry)`` is awaited after a refresh that changed the content, cleared an error, or hit
    a new error. ``local_size``: how many keys' last seen entries this process keeps for when the store is
    unreachable.
    """

    def __init__(
        self,
        store: CacheStore,
        *,
        clock: Clock,
        ttl: float = 15.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
        keep_for: float = 86_400.0,
        lock_ttl: float = 5.0,
        on_change: OnChange | None = None,
        local_size: int = 10_000,
    ) -> None:
        if not ttl > 0:
            raise ConfigurationError(f"cache ttl must be > 0 seconds, not {ttl!r}")
        if not 0 <= jitter < 1:
            raise ConfigurationError(f"cache jitter must be in [0, 1), not {jitter!r}")
        if not keep_for > 0:
            raise ConfigurationError(f"cache keep_for must be > 0 seconds, not {keep_for!r}")
        if not lock_ttl > 0:
            raise ConfigurationError(f"cache lock_ttl must be > 0 seconds, not {lock_ttl!r}")
        self._store = store
        self._clock = clock
        self.ttl = float(ttl)
        self.jitter = float(jitter)
        self.keep_for = float(keep_for)
        self.lock_ttl = float(lock_ttl)
        self._rng = rng if rng is not None else random.Random()
        self._on_change = on_change
        self._spawn: Spawn | None = None
        self._flights: dict[str, _Flight] = {}
        self._last_seen: LRUCache[str, CacheEntry] = LRUCache(maxsize=max(1, local_size))
        # A store that declares ``shared = False`` and counts its writes in ``generation`` lets readers reuse
        # what they read until the count moves (nothing outside this process writes to it). A shared store
        # with a near cache does the same while its ``coherent`` flag says every change made elsewhere is
        # being reported to it (it then counts those in ``generation`` too).
        self._counted = isinstance(getattr(store, "generation", None), int)
        self._local = getattr(store, "shared", True) is False and self._counted
        self._coherent = self._counted and not self._local and hasattr(store, "coherent")
        # A shared store may hand out its own copies without a round trip (``cached_many(keys)``: every one, or
        # None): those need no deadline, and a task group and a timer per read are most of a warm read's cost.
        cached_many = getattr(store, "cached_many", None)
        self._cached_many: Callable[[Sequence[str]], list[CacheEntry | None] | None] | None = (
            cached_many if callable(cached_many) else None
        )
        self._generation = 0  # bumped when peek answers from the local copy (the store failed)
        self._store_down_until = float("-inf")  # monotonic; see STORE_RETRY
        self._probing = False

    def start(self, spawn: Spawn) -> None:
        """Say how background refreshes run, e.g. a long-lived task group's ``start_soon``."""
        self._spawn = spawn

    def ttl_draw(self) -> float:
        """One freshness period, uniform in ``[ttl * (1 - jitter), ttl * (1 + jitter)]``."""
        return self._rng.uniform(self.ttl * (1 - self.jitter), self.ttl * (1 + self.jitter))

    @property
    def local(self) -> bool:
        """Whether what the store answers can change only in ways this process is told of, so that views read
        from it stay valid until :attr:`generation` moves: a store in this process only (``shared = False``
        and a ``generation`` write counter, like ``MemoryCacheStore``), or a shared store with a near cache
        while it is ``coherent`` (``RedisCacheStore`` while its invalidation channel is up). Any other store
        is read on every request."""
        return self._local or (self._coherent and bool(self._store.coherent))  # type: ignore[attr-defined]

    @property
    def generation(self) -> int:
        """A number that grows whenever what :meth:`peek` answers for any key may have changed: every change
        the store counts (see :attr:`local`), and every read that fell back to the local copy. For a store
        that counts nothing it moves only with the latter, so it says nothing: check :attr:`local` first."""
        store_generation: int = self._store.generation if self._counted else 0  # type: ignore[attr-defined]
        return self._generation + store_generation

    def is_fresh(self, entry: CacheEntry) -> bool:
        """Whether an entry may be served without a refresh."""
        return self._clock.time() < entry.fresh_until

    async def peek(self, key: str) -> CacheEntry | None:
        """The stored entry, fresh or not, without refreshing. When the store is unreachable: the last entry
        this process saw for ``key`` (None if it saw none)."""
        try:
            entry = await self._store.load(key)
        except BackendUnavailable as exc:
            get_logger(__name__).info("integration_status.cache.store_unavailable", key=key, error=str(exc))
            self._generation += 1
            return self._last_seen.get(key)
        self._remember(key, entry)
        return entry

    async def peek_many(
        self, keys: Sequence[str], *, within: float | None = None
    ) -> tuple[list[CacheEntry | None], bool]:
        """:meth:`peek` for several keys in one store round trip (``load_many`` where the store has it), and
        whether the store was unreachable (the entries are then this process's last seen copies).

        ``within``: the most the caller may spend on the store (its remaining deadline). A store that takes
        longer counts as unreachable, and so does one that failed less than :data:`STORE_RETRY` seconds ago:
        that answer comes at once, and one background read (if refreshes can run) tells when it is back.
        """
        if self._clock.monotonic() < self._store_down_until:
            self._probe(keys)
            return self._fall_back(keys), True
        try:
            held = None if self._cached_many is None else self._cached_many(keys)
            if held is not None:  # the store's own copies: no round trip, nothing to bound
                entries = held
            elif within is None or self._local:
                entries = await self._load_many(keys)
            else:
                entries = await call_with_timeout(self._clock, within, partial(self._load_many, keys))
        except (BackendUnavailable, TimeoutError) as exc:
            get_logger(__name__).info(
                "integration_status.cache.store_unavailable", keys=len(keys), error=str(exc) or "timeout"
            )
            self._store_down_until = self._clock.monotonic() + STORE_RETRY
            return self._fall_back(keys), True
        for key, entry in zip(keys, entries, strict=True):
            self._remember(key, entry)
        return entries, False

    async def _load_many(self, keys: Sequence[str]) -> list[CacheEntry | None]:
        load_many = getattr(self._store, "load_many", None)
        if load_many is not None:
            return list(await load_many(keys))
        return [await self._store.load(key) for key in keys]

    def _fall_back(self, keys: Sequence[str]) -> list[CacheEntry | None]:
        self._generation += 1
        return [self._last_seen.get(key) for key in keys]

    def _probe(self, keys: Sequence[str]) -> None:
        """Read ``keys`` once in the background; the store counts as back as soon as a read succeeds."""
        if self._probing or self._spawn is None:
            return
        self._probing = True

        async def probe() -> None:
            try:
                entries = await self._load_many(keys)
            except Exception:  # still down (or worse): the next reader after STORE_RETRY tries again
                self._store_down_until = self._clock.monotonic() + STORE_RETRY
            else:
                self._store_down_until = float("-inf")
                for key, entry in zip(keys, entries, strict=True):
                    self._remember(key, entry)
            finally:
                self._probing = False

        try:
            self._spawn(probe)
        except BaseException:
            self._probing = False
            raise

    def last_seen(self, key: str) -> CacheEntry | None:
        """The last entry this process saw for ``key`` (no store read)."""
        return self._last_seen.get(key)

    def _remember(self, key: str, entry: CacheEntry | None) -> None:
        if entry is None:
            self._last_seen.pop(key, None)
        else:
            self._last_seen[key] = entry

    async def invalidate(self, key: str) -> None:
        """Make the entry not fresh (the next read refreshes), keeping it as the last good value. A refresh of
        ``key`` already running here may have fetched before the change: its result is kept as the last good
        value but not as fresh, and the next refresh starts a new fetch instead of joining it."""
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.invalidated = True
        entry = await self._store.load(key)
        if entry is not None:
            now = self._clock.time()
            if entry.fresh_until > now:
                await self._store.save(key, attrs.evolve(entry, fresh_until=now), keep_for=self.keep_for)

    def in_flight(self, key: str) -> bool:
        """Whether a refresh of ``key`` is running in this process."""
        return key in self._flights

    async def settled(self) -> None:
        """Wait until no refresh is running in this process (simulations and tests that drive a fake clock
        let background refreshes finish before they move it)."""
        while self._flights:
            await next(iter(self._flights.values())).done.wait()

    def flight(self, key: str) -> object | None:
        """The refresh of ``key`` running in this process (an opaque token, the same object for as long as
        that refresh runs), or None: a caller that judged an entry while a refresh ran can tell whether it
        still runs, or another one does."""
        return self._flights.get(key)

    def flight_started(self, key: str) -> float | None:
        """When the refresh of ``key`` running in this process started (monotonic), or None."""
        flight = self._flights.get(key)
        return None if flight is None else flight.started

    async def refresh(self, key: str, fetch: Fetch) -> CacheEntry:
        """Refresh ``key`` with ``fetch`` and return the new entry, or raise the refresh's ProviderError.

        Concurrent calls for one key share one fetch. The fetch runs in the background: cancelling this call
        (a request deadline) leaves the fetch running until it stores its result.
        """
        flight = self._take_off(key, fetch)
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.entry is not None
        return flight.entry

    def refresh_soon(self, key: str, fetch: Fetch) -> float:
        """Start refreshing ``key`` in the background (or join the refresh already running) without waiting;
        when that refresh started (monotonic), so a caller serving the old entry meanwhile knows how overdue
        the answer is. Its outcome reaches the store and ``on_change`` as with :meth:`refresh`."""
        return self._take_off(key, fetch).started

    def _take_off(self, key: str, fetch: Fetch) -> _Flight:
        flight = self._flights.get(key)
        if flight is None:
            if self._spawn is None:
                raise ConfigurationError(
                    "SnapshotCache.start(spawn) must be called before refresh(): "
                    "refreshes run as background tasks"
                )
            flight = _Flight(self._clock.monotonic())
            self._flights[key] = flight
            try:
                self._spawn(partial(self._fly, key, fetch, flight))
            except BaseException:
                del self._flights[key]
                raise
        return flight

    async def _fly(self, key: str, fetch: Fetch, flight: _Flight) -> None:
        # Errors go to the waiters, never to the task group: one failing provider must not stop the service.
        try:
            flight.entry = await self._refresh_once(key, fetch)
            if flight.invalidated:
                flight.entry = await self._expire(key, flight.entry)
            self._remember(key, flight.entry)
        except Exception as exc:
            flight.error = exc
        finally:
            if flight.entry is None and flight.error is None:  # cancelled, e.g. the service is shutting down
                flight.error = ProviderTimeout("refresh cancelled", provider=_provider_of(key, None))
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()

    async def _expire(self, key: str, entry: CacheEntry) -> CacheEntry:
        """``entry`` no longer fresh, in the store too unless a newer result replaced it there."""
        stale = attrs.evolve(entry, fresh_until=min(entry.fresh_until, self._clock.time()))
        current = await self._store.load(key)
        if current is not None and current.checked_at == entry.checked_at:
            await self._store.save(key, stale, keep_for=self.keep_for)
        return stale

    async def _refresh_once(self, key: str, fetch: Fetch) -> CacheEntry:
        before = await self._store.load(key)
        token = await self._store.try_lock(key, self.lock_ttl)
        if token is None:
            other = await self._wait_for_other_worker(key, before)
            if other is not None:
                return other
            # The other worker's lock expired without a result; take it over if nobody else did.
            token = await self._store.try_lock(key, self.lock_ttl)
            previous = await self._store.load(key)
        else:
            previous = await self._store.load(key)
            if previous is not None and _newer(previous, before) and self.is_fresh(previous):
                return previous  # another worker stored a fresh result between our load and our lock
        try:
            return await self._fetch_and_store(key, fetch, previous)
        finally:
            if token is not None:
                with anyio.CancelScope(shield=True):
                    await self._store.unlock(key, token)

    async def _wait_for_other_worker(self, key: str, before: CacheEntry | None) -> CacheEntry | None:
        """Poll the store until the worker holding the lock stores a result (returned) or a failure (raised),
        or ``lock_ttl`` passes (None)."""
        deadline = self._clock.monotonic() + self.lock_ttl
        while self._clock.monotonic() < deadline:
            await self._clock.sleep(POLL_INTERVAL)
            current = await self._store.load(key)
            if _newer(current, before):
                assert current is not None
                return current
            if _newer_error(current, before):
                assert current is not None
                assert current.error is not None
                raise _ERRORS_BY_CODE[current.error.code](
                    "refresh failed in another worker",
                    provider=current.snapshot.provider,
                    hint=current.error.hint,
                )
        return None

    async def _fetch_and_store(self, key: str, fetch: Fetch, previous: CacheEntry | None) -> CacheEntry:
        try:
            snapshot = await fetch()
        except ProviderError as exc:
            await self._store_failure(key, previous, exc)
            raise
        except Exception as exc:
            error = ProviderUnavailable(
                f"refresh failed: {type(exc).__name__}", provider=_provider_of(key, previous)
            )
            await self._store_failure(key, previous, error)
            raise error from exc
        now = self._clock.time()
        changed = previous is None or previous.snapshot != snapshot
        entry = CacheEntry(
            snapshot=snapshot,
            # An adapter pacing a provider's rate budget may ask for a longer freshness than the TTL.
            fresh_until=now + max(self.ttl_draw(), snapshot.fresh_for or 0.0),
            changed_at=utcnow(self._clock) if previous is None or changed else previous.changed_at,
            checked_at=now,
        )
        await self._store.save(key, entry, keep_for=self.keep_for)
        if changed or (previous is not None and previous.error is not None):
            await self._notify(key, entry)
        return entry

    async def _store_failure(self, key: str, previous: CacheEntry | None, exc: ProviderError) -> None:
        """Note the failure on the last good entry; its snapshot and freshness stay as they were."""
        if previous is None:
            return
        problem = Problem(code=cast(ProblemCode, exc.problem_code), hint=exc.hint)
        entry = attrs.evolve(previous, error=problem, error_at=self._clock.time())
        await self._store.save(key, entry, keep_for=self.keep_for)
        if previous.error != problem:
            await self._notify(key, entry)

    async def _notify(self, key: str, entry: CacheEntry) -> None:
        if self._on_change is None:
            return
        try:
            await self._on_change(key, entry)
        except Exception:
            # A failing listener must not turn a good refresh into a failed one; the entry is already stored.
            get_logger(__name__).exception("integration_status.cache.on_change_failed", key=key)
