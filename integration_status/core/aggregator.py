"""Fan out to the linked providers, bounded by breakers, the adapter timeout and the response deadline.

For each provider of a project the aggregator takes, in order: a fresh cache entry (no call); else a refresh
(single-flight in the cache, guarded by the provider's breaker and timed out after the adapter timeout) awaited
until the response deadline; when that refresh fails or is not done by the deadline, the last good value marked
``stale`` with the problem, or a placeholder. Refreshes still running at the deadline go on in the background
and the cache's ``on_change`` reports their result.

When the shared cache store is unreachable, a provider is served from the cache's process-local copy (fresh
while it lasts, then ``stale``) and no refresh is attempted.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

import anyio
import attrs
from cachetools import LRUCache

from integration_status._config import check_connection, report_provider_error
from integration_status._logging import get_logger
from integration_status.core.activity import WebhookActivity
from integration_status.core.breaker import BreakerConfig, BreakerPhase, CircuitBreaker
from integration_status.core.cache import SnapshotCache
from integration_status.core.clock import Clock, utcnow
from integration_status.core.deadline import call_with_timeout
from integration_status.core.metrics import NO_METRICS, CacheEvent, FetchOutcome, Metrics, NoMetrics
from integration_status.core.policy import ProviderView
from integration_status.exceptions import (
    BackendUnavailable,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
)
from integration_status.models import PROVIDERS, Problem, ProviderKey
from integration_status.protocols import (
    Adapter,
    CacheEntry,
    FetchContext,
    ProjectConnections,
    ProviderConnection,
)
from integration_status.snapshot import ProviderSnapshot, Segment

_log = get_logger("integration_status.aggregator")


def cache_key(project_id: str, provider: ProviderKey) -> str:
    """The cache key of one project's provider; ``split_cache_key`` inverts it (providers have no colon)."""
    return f"{project_id}:{provider}"


def split_cache_key(key: str) -> tuple[str, ProviderKey]:
    project_id, _, provider = key.rpartition(":")
    if provider not in PROVIDERS:
        raise ValueError(f"not a cache key: {key!r}")
    return project_id, provider


def disconnected_snapshot(provider: ProviderKey) -> ProviderSnapshot:
    return ProviderSnapshot(
        provider=provider, status="disconnected", summary=(Segment(pieces=("Not connected",)),)
    )


# Cached: the same object for the same failure lets the service reuse the envelope it rendered for it.
@functools.lru_cache(maxsize=256)
def error_snapshot(provider: ProviderKey, problem: Problem) -> ProviderSnapshot:
    """What a provider shows when it failed and there is no good value to fall back on."""
    text = {
        "oauth_revoked": "Auth expired",
        "rate_limited": "Rate limited",
        "timeout": "Not responding",
        "unknown": "Provider error",
    }[problem.code]
    return ProviderSnapshot(
        provider=provider, status="error", summary=(Segment(pieces=(text,)),), problem=problem
    )


@functools.lru_cache(maxsize=8)
def placeholder_snapshot(provider: ProviderKey) -> ProviderSnapshot:
    """A cold start whose first answer is not in yet (a warning, stale, with problem timeout)."""
    problem = Problem(code="timeout", hint="Try again")
    return ProviderSnapshot(
        provider=provider, status="warning", summary=(Segment(pieces=("Checking…",)),), problem=problem
    )


def problem_of(exc: ProviderError) -> Problem:
    return Problem(code=exc.problem_code, hint=exc.hint)  # type: ignore[arg-type]


def fallback_view(
    provider: ProviderKey, entry: CacheEntry | None, problem: Problem | None, since: datetime
) -> ProviderView:
    """The pure fallback rule for a provider whose refresh did not succeed.

    - access lost (``oauth_revoked``): ``status: error`` whatever was cached
    - any other failure with a last good value: that value, ``stale: true``, plus the problem
    - any other failure without one: ``status: error``
    - no answer yet (``problem`` None) with a last good value: that value, ``stale: true``
    - no answer yet on a cold start: the placeholder

    ``since`` is when this error or placeholder was first shown: its ``updatedAt``, so that a provider which
    keeps failing the same way keeps its ETag.
    """
    if problem is not None and problem.code == "oauth_revoked":
        return ProviderView(provider=provider, snapshot=error_snapshot(provider, problem), changed_at=since)
    if entry is not None:
        return ProviderView(
            provider=provider,
            snapshot=entry.snapshot,
            changed_at=entry.changed_at,
            stale=True,
            problem=problem,
        )
    if problem is not None:
        return ProviderView(provider=provider, snapshot=error_snapshot(provider, problem), changed_at=since)
    snapshot = placeholder_snapshot(provider)
    return ProviderView(
        provider=provider, snapshot=snapshot, changed_at=since, stale=True, problem=snapshot.problem
    )


@attrs.frozen(kw_only=True)
class AggregatorConfig:
    adapter_timeout: float = attrs.field(default=2.5, validator=attrs.validators.gt(0))
    deadline: float = attrs.field(default=0.45, validator=attrs.validators.gt(0))
    breaker: BreakerConfig = attrs.field(factory=BreakerConfig)
    max_breakers: int = 10_000


class Aggregator:
    """Collects the four raw provider views of one project (see the module docstring)."""

    def __init__(
        self,
        *,
        adapters: Mapping[ProviderKey, Adapter],
        cache: SnapshotCache,
        clock: Clock,
        config: AggregatorConfig | None = None,
        metrics: Metrics = NO_METRICS,
        activity: WebhookActivity | None = None,
    ) -> None:
        self._adapters = dict(adapters)
        self._activity = activity
        self._metrics = metrics
        # A sink whose ``cache`` is the no-op one (NoMetrics, the health recorder) is not told of each hit of
        # the warm path: four calls per request that record nothing.
        self._counts_hits = getattr(type(metrics), "cache", None) is not NoMetrics.cache
        self._cache = cache
        self._clock = clock
        self._config = config or AggregatorConfig()
        self._breakers: LRUCache[str, CircuitBreaker] = LRUCache(maxsize=self._config.max_breakers)
        # The last failure a breaker saw, to explain an open breaker with no cached value.
        self._last_problem: LRUCache[str, Problem] = LRUCache(maxsize=self._config.max_breakers)
        # When each fallback state (an error or a placeholder without a usable value) was first shown.
        self._fallback_since: LRUCache[str, tuple[tuple[object, ...], datetime]] = LRUCache(
            maxsize=self._config.max_breakers
        )
        # Per project, with a process-local (or coherent) cache store only: the views of the last collect that
        # judged every provider without waiting (no cold start, the store reachable), and what they depend on.
        # Until one of those moves, reading and judging the four entries again would give the very same views.
        self._known: dict[str, _Known] = {}

    @property
    def config(self) -> AggregatorConfig:
        return self._config

    def breaker(self, key: str) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            provider = key.rpartition(":")[2]

            def transition(old: BreakerPhase, new: BreakerPhase) -> None:
                self._metrics.breaker_state(provider, new, old)

            breaker = CircuitBreaker(
                self._config.breaker, clock=self._clock, name=key, on_transition=transition
            )
            self._breakers[key] = breaker
        return breaker

    async def collect(self, project_id: str, connections: ProjectConnections) -> tuple[ProviderView, ...]:
        """Four views in :data:`PROVIDERS` order, within the deadline whatever the providers and the store do.
        While a project's entries stay fresh in a local (or coherent) store, the very same tuple is handed out
        again without reading anything."""
        cache = self._cache
        local = cache.local
        judged: _Known | None = None
        if local:
            generation = cache.generation
            known = self._known.get(project_id)
            if known is not None and known.valid(generation, self._clock, cache):
                if self._counts_hits:
                    for event in known.events:
                        self._metrics.cache(event)
                return known.views
            judged = _Known(generation)
        started = self._clock.monotonic()
        keys = [cache_key(project_id, provider) for provider in PROVIDERS]
        # One round trip for the four entries, bounded by the deadline: a hung store is an unreachable one.
        entries, unreachable = await cache.peek_many(keys, within=self._config.deadline)
        views: dict[ProviderKey, ProviderView] = {}
        cold: list[tuple[ProviderKey, str, ProviderConnection | None]] = []
        now = utcnow(self._clock)
        for provider, key, entry in zip(PROVIDERS, keys, entries, strict=True):
            if judged is not None and entry is not None:
                # Kept by the store at least keep_for after it was checked.
                judged.until = min(judged.until, entry.checked_at + cache.keep_for)
            if entry is not None and cache.is_fresh(entry):
                self._metrics.cache("hit")
                views[provider] = ProviderView(
                    provider=provider, snapshot=entry.snapshot, changed_at=entry.changed_at
                )
                if judged is not None:
                    judged.events.append("hit")
                    judged.until = min(judged.until, entry.fresh_until)  # then it needs a refresh
                continue
            self._metrics.cache("miss")
            if judged is not None:
                judged.events.append("miss")
            connection = connections.get(provider)
            if connection is not None:  # warns once about a connection that cannot work as configured
                check_connection(project_id, provider, connection, self._adapters.get(provider))
            if connection is not None and provider not in self._adapters:
                connection = None  # linked, but the host configured no adapter for it
            if unreachable:
                # The store is down: serve what this process last saw, never fail, and refresh nothing.
                _log.info(
                    "integration_status.aggregator.store_unavailable",
                    provider=provider,
                    stale=entry is not None,
                )
                problem = entry.error if entry is not None else None
                views[provider] = self._fallback(provider, key, entry, problem, now)
            elif entry is None and key not in self._last_problem:
                cold.append((provider, key, connection))  # nothing to show yet: worth waiting for
            else:
                views[provider] = self._serve_known(provider, key, connection, entry, now, judged)
        if len(views) == len(PROVIDERS) and not cold:
            collected = tuple([views[p] for p in PROVIDERS])
            # Not when the store was unreachable (the local copies moved the generation anyway), nor when
            # something was written while we read.
            if judged is not None and judged.reusable and not unreachable and cache.generation == generation:
                judged.views = collected
                self._remember(project_id, judged)
            return collected
        budget = max(0.0, self._config.deadline - (self._clock.monotonic() - started))
        # A cold refresh that earlier requests already waited for is waited for only up to ITS first deadline:
        # one cold start spends the deadline once, not once per request that arrives while it runs.
        clock_now = self._clock.monotonic()
        ages = [
            clock_now - s for s in map(self._cache.flight_started, (k for _, k, _ in cold)) if s is not None
        ]
        if len(ages) == len(cold):
            budget = min(budget, max(0.0, self._config.deadline - min(ages)))
        await self._wait_cold(views, cold, budget, now)
        return tuple([views[p] for p in PROVIDERS])

    async def refresh(self, project_id: str, provider: ProviderKey, connections: ProjectConnections) -> None:
        """Refresh one provider now (or join its running refresh) and wait for the outcome, which reaches the
        store and ``on_change``; a provider failure is recorded there, not raised. For callers that just did
        something to the provider (an action, a webhook), not for status requests."""
        key = cache_key(project_id, provider)
        connection = connections.get(provider)
        if connection is not None and provider not in self._adapters:
            connection = None
        try:
            if self._cache.in_flight(key):
                await self._cache.refresh(key, _never_called)
            else:
                entry = self._cache.last_seen(key)
                previous = None if entry is None else entry.snapshot
                await self._cache.refresh(key, self._fetcher(provider, key, connection, previous))
        except ProviderError as exc:
            _log.info(
                "integration_status.aggregator.refresh_failed", provider=provider, problem=exc.problem_code
            )

    def _serve_known(
        self,
        provider: ProviderKey,
        key: str,
        connection: ProviderConnection | None,
        entry: CacheEntry | None,
        now: datetime,
        judged: _Known | None = None,
    ) -> ProviderView:
        """The view of a provider that has something to show (a last good value, or a known failure) while its
        entry is not fresh: its refresh (or breaker probe) is started or joined in the background and never
        waited for. While that refresh is younger than the deadline, the last good value is shown as it is:
        a request waiting for the answer would not have called it stale yet either.

        ``judged`` collects what this view depends on besides the store: the refresh it joined (the same one
        must still be running), when that refresh becomes overdue, or when a refusing breaker lets a probe
        through (then the next request must ask it again)."""
        events = None if judged is None else judged.events
        try:
            started = self._refresh_soon(provider, key, connection, entry)
        except ProviderError as exc:  # the breaker refused before anything ran
            if judged is not None:
                retry = self.breaker(key).retry_at() if isinstance(exc, _BreakerOpen) else None
                if retry is None:
                    judged.reusable = False
                else:
                    judged.until_monotonic = min(judged.until_monotonic, retry)
                    judged.flights.append((key, self._cache.flight(key)))
            return self._fallback(provider, key, entry, problem_of(exc), now, events)
        overdue = self._clock.monotonic() - started >= self._config.deadline
        if judged is not None:
            judged.flights.append((key, self._cache.flight(key)))
            if not overdue:
                judged.until_monotonic = min(judged.until_monotonic, started + self._config.deadline)
        if entry is not None and entry.error is None and not overdue:
            return ProviderView(provider=provider, snapshot=entry.snapshot, changed_at=entry.changed_at)
        problem = entry.error if entry is not None else self._last_problem.get(key)
        return self._fallback(provider, key, entry, problem, now, events)

    async def _wait_cold(
        self,
        views: dict[ProviderKey, ProviderView],
        cold: list[tuple[ProviderKey, str, ProviderConnection | None]],
        budget: float,
        now: datetime,
    ) -> None:
        """Refresh providers that have nothing to show yet, waiting for them at most ``budget`` seconds (the
        rest of the deadline); those not done by then get the placeholder and go on in the background."""
        started = self._clock.monotonic()
        results: dict[ProviderKey, CacheEntry | ProviderError] = {}
        unreachable: set[ProviderKey] = set()
        remaining = len(cold)

        async with anyio.create_task_group() as tg:

            async def one(provider: ProviderKey, key: str, connection: ProviderConnection | None) -> None:
                nonlocal remaining
                try:
                    results[provider] = await self._refresh(provider, key, connection)
                except ProviderError as exc:
                    results[provider] = exc
                except BackendUnavailable:
                    # The store is down: serve what this process last saw, never fail the status request.
                    unreachable.add(provider)
                finally:
                    remaining -= 1
                    if remaining == 0:
                        tg.cancel_scope.cancel()

            async def deadline() -> None:
                await self._clock.sleep(budget)
                tg.cancel_scope.cancel()

            tg.start_soon(deadline)
            for provider, key, connection in cold:
                tg.start_soon(one, provider, key, connection)

        failed = [(p, k) for p, k, _ in cold if isinstance(results.get(p), ProviderError)]
        left = budget - (self._clock.monotonic() - started)
        if failed and left > 0:
            # Another worker may hold a last good value by now; only as long as the deadline allows.
            found, _ = await self._cache.peek_many([k for _, k in failed], within=left)
            latest = {p: e for (p, _), e in zip(failed, found, strict=True)}
        else:
            latest = {}
        for provider, key, _ in cold:
            result = results.get(provider)
            if isinstance(result, CacheEntry):
                views[provider] = ProviderView(
                    provider=provider, snapshot=result.snapshot, changed_at=result.changed_at
                )
                continue
            entry = latest.get(provider)
            if isinstance(result, ProviderError):
                problem: Problem | None = problem_of(result)
            else:  # not done by the deadline (the refresh goes on in the background), or the store is down
                problem = None
                why = "store_unavailable" if provider in unreachable else "deadline"
                _log.info(f"integration_status.aggregator.{why}", provider=provider, stale=False)
            views[provider] = self._fallback(provider, key, entry, problem, now)

    def _fallback(
        self,
        provider: ProviderKey,
        key: str,
        entry: CacheEntry | None,
        problem: Problem | None,
        now: datetime,
        events: list[CacheEvent] | None = None,
    ) -> ProviderView:
        view = fallback_view(provider, entry, problem, self._since(key, entry, problem, now))
        if entry is not None and view.stale:
            self._metrics.cache("stale")
            if events is not None:
                events.append("stale")
            code = None if problem is None else problem.code
            _log.info("integration_status.aggregator.stale_served", provider=provider, problem=code)
        return view

    def _since(self, key: str, entry: CacheEntry | None, problem: Problem | None, now: datetime) -> datetime:
        """The first time this key showed this fallback state (per process; a new state starts now)."""
        state = (problem, entry is None or (problem is not None and problem.code == "oauth_revoked"))
        known = self._fallback_since.get(key)
        if known is not None and known[0] == state:
            return known[1]
        self._fallback_since[key] = (state, now)
        return now

    def _remember(self, project_id: str, known: _Known) -> None:
        projects = self._known
        if project_id not in projects and len(projects) >= self._config.max_breakers:
            del projects[next(iter(projects))]  # the oldest project
        projects[project_id] = known

    async def _refresh(
        self, provider: ProviderKey, key: str, connection: ProviderConnection | None
    ) -> CacheEntry:
        """Refresh a provider that has no entry yet and wait for it (the caller bounds the wait)."""
        if self._cache.in_flight(key):  # join it; a new call would take a breaker permit for nothing
            return await self._cache.refresh(key, _never_called)
        return await self._cache.refresh(key, self._fetcher(provider, key, connection, None))

    def _refresh_soon(
        self, provider: ProviderKey, key: str, connection: ProviderConnection | None, entry: CacheEntry | None
    ) -> float:
        """Start (or join) a background refresh; when it started. Joining asks the breaker nothing: only a
        new call takes one of its permits."""
        if self._cache.in_flight(key):
            return self._cache.refresh_soon(key, _never_called)
        previous = None if entry is None else entry.snapshot
        return self._cache.refresh_soon(key, self._fetcher(provider, key, connection, previous))

    def _fetcher(
        self,
        provider: ProviderKey,
        key: str,
        connection: ProviderConnection | None,
        previous: ProviderSnapshot | None,
    ) -> Callable[[], Awaitable[ProviderSnapshot]]:
        """The fetch for one refresh: the adapter under its timeout, reported to the breaker; raises
        :class:`_BreakerOpen` at once when the breaker refuses the call."""
        if connection is None:

            async def unlinked() -> ProviderSnapshot:
                return disconnected_snapshot(provider)

            return unlinked
        adapter = self._adapters[provider]
        breaker = self.breaker(key)
        if not breaker.allow():
            # Open breaker: nothing reaches the provider; the last good value is served, flagged.
            problem = self._last_problem.get(key) or Problem(code="timeout", hint="Try again")
            _log.info("integration_status.aggregator.breaker_open", provider=provider)
            raise _BreakerOpen(problem, provider=provider)

        project_id = key.rpartition(":")[0]

        async def fetch() -> ProviderSnapshot:
            started = self._clock.monotonic()
            ctx = FetchContext(
                clock=self._clock,
                timeout=self._config.adapter_timeout,
                started=started,
                previous=previous,
                ttl=self._cache.ttl,
                project_id=project_id,
                webhooks_arriving=self._activity is not None
                and self._activity.live(provider, project_id, now=self._clock.time()),
            )
            # Our own errors are raised outside the ``except`` blocks: an adapter's exception (which may hold
            # a request with its credentials) must not travel on as ``__context__``.
            failure: ProviderError | None = None
            try:
                snapshot = await call_with_timeout(
                    self._clock, self._config.adapter_timeout, lambda: adapter.fetch(connection, ctx)
                )
            except TimeoutError:
                failure = ProviderTimeout(
                    f"{provider} did not answer within {self._config.adapter_timeout:g}s", provider=provider
                )
            except ProviderError as exc:
                self._failed(key, breaker, exc, started)
                report_provider_error(*split_cache_key(key), exc)  # once, if the configuration is the cause
                raise
            except Exception as exc:  # an adapter bug must not take the status endpoint down
                _log.warning(
                    "integration_status.aggregator.adapter_crashed",
                    provider=provider,
                    error=type(exc).__name__,
                )
                failure = ProviderUnavailable(f"{provider} adapter failed", provider=provider)
            if failure is not None:
                self._failed(key, breaker, failure, started)
                raise failure
            took = self._clock.monotonic() - started
            breaker.record(success=True, duration=took)
            self._metrics.observe_fetch(provider, took, "ok")
            return snapshot

        return fetch

    def _failed(self, key: str, breaker: CircuitBreaker, exc: ProviderError, started: float) -> None:
        # Losing access is the provider answering correctly, not an outage: it does not trip the breaker.
        success = exc.problem_code == "oauth_revoked"
        took = self._clock.monotonic() - started
        breaker.record(success=success, duration=took)
        self._last_problem[key] = problem_of(exc)
        self._metrics.observe_fetch(key.rpartition(":")[2], took, fetch_outcome(exc))


class _Known:
    """The views one collect judged for a project, and until when the next collect would judge the same: the
    store's generation (any write, invalidation, or read from the local copies moves it), the earliest
    ``fresh_until`` and ``checked_at + keep_for`` of its entries (``clock.time()``), the earliest moment a
    running refresh becomes overdue or a refusing breaker lets a probe through (``clock.monotonic()``), and
    the refreshes it joined (``(key, flight)``: each must still be the one running, None for none)."""

    __slots__ = ("events", "flights", "generation", "reusable", "until", "until_monotonic", "views")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.until = float("inf")
        self.until_monotonic = float("inf")
        self.flights: list[tuple[str, object | None]] = []
        self.events: list[CacheEvent] = []  # the cache events to count again on each reuse
        self.reusable = True
        self.views: tuple[ProviderView, ...] = ()

    def valid(self, generation: int, clock: Clock, cache: SnapshotCache) -> bool:
        if generation != self.generation or clock.time() >= self.until:
            return False
        if self.until_monotonic != float("inf") and clock.monotonic() >= self.until_monotonic:
            return False
        for key, flight in self.flights:  # noqa: SIM110 - no generator on the hot path
            if cache.flight(key) is not flight:
                return False
        return True


def fetch_outcome(exc: ProviderError) -> FetchOutcome:
    """How a failed fetch is counted: ``timeout``, ``auth`` (access lost) or ``error``."""
    if exc.problem_code == "timeout":
        return "timeout"
    return "auth" if exc.problem_code == "oauth_revoked" else "error"


async def _never_called() -> ProviderSnapshot:  # pragma: no cover - joining a running refresh never fetches
    raise AssertionError("a refresh that is already running was started again")


class _BreakerOpen(ProviderError):
    """Internal: the breaker refused the call; carries the problem that opened it."""

    def __init__(self, problem: Problem, *, provider: str) -> None:
        super().__init__(f"{provider} circuit open", provider=provider, hint=problem.hint)
        self.problem_code = problem.code  # type: ignore[misc]
