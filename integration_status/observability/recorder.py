"""The health recorder (always on inside the service) and the tee that reports to several sinks."""

from __future__ import annotations

from integration_status.core.clock import SYSTEM_CLOCK, Clock
from integration_status.core.health import (
    AdapterStats,
    HealthReport,
    HealthStats,
    HealthThresholds,
    SseStats,
    evaluate,
)
from integration_status.core.metrics import (
    NO_METRICS,
    BreakerPhaseName,
    CacheEvent,
    FetchOutcome,
    Metrics,
    NoMetrics,
)
from integration_status.core.rolling import RollingCounts

__all__ = ["HealthRecorder", "combine"]


class _Tee:
    """Reports to several sinks in order."""

    def __init__(self, *parts: Metrics) -> None:
        self.parts = parts

    def observe_fetch(self, provider: str, seconds: float, outcome: FetchOutcome) -> None:
        for part in self.parts:
            part.observe_fetch(provider, seconds, outcome)

    def observe_request(self, endpoint: str, seconds: float, status: int) -> None:
        for part in self.parts:
            part.observe_request(endpoint, seconds, status)

    def cache(self, event: CacheEvent) -> None:
        for part in self.parts:
            part.cache(event)

    def breaker_state(self, provider: str, state: BreakerPhaseName, previous: BreakerPhaseName) -> None:
        for part in self.parts:
            part.breaker_state(provider, state, previous)

    def sse_connections(self, delta: int, *, dropped: bool = False) -> None:
        for part in self.parts:
            part.sse_connections(delta, dropped=dropped)

    def action(self, provider: str, action: str, outcome: str) -> None:
        for part in self.parts:
            part.action(provider, action, outcome)


def combine(*metrics: Metrics | None) -> Metrics:
    """One sink reporting to each of ``metrics``, skipping None and :class:`NoMetrics`."""
    # Exactly NoMetrics: HealthRecorder reuses its no-op methods but records.
    live = tuple(m for m in metrics if m is not None and type(m) is not NoMetrics)
    if not live:
        return NO_METRICS
    return live[0] if len(live) == 1 else _Tee(*live)


class HealthRecorder(NoMetrics):
    """The statistics behind the health endpoint: adapter outcomes and stream ends over a rolling window,
    and the last ``reservoir`` status request durations (only those inside the window count, so a quiet
    instance recovers once the slow requests age out)."""

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        window: float = 300.0,
        reservoir: int = 1024,
        thresholds: HealthThresholds | None = None,
    ) -> None:
        if reservoir < 1:
            raise ValueError("reservoir must be >= 1")
        self.thresholds = thresholds or HealthThresholds()
        self._clock = clock
        self._fetches = RollingCounts(clock=clock, window=window)
        self._streams = RollingCounts(clock=clock, window=window)
        self._open = 0
        # Preallocated rings: recording a status duration is two stores and an increment.
        self._at = [float("-inf")] * reservoir
        self._took = [0.0] * reservoir
        self._next = 0

    @property
    def window(self) -> float:
        return self._fetches.window

    def observe_fetch(self, provider: str, seconds: float, outcome: FetchOutcome) -> None:
        self._fetches.add(provider, outcome)

    def observe_request(self, endpoint: str, seconds: float, status: int) -> None:
        if endpoint == "status" and (status == 200 or status == 304):
            i = self._next % len(self._took)
            self._at[i] = self._clock.monotonic()
            self._took[i] = seconds
            self._next += 1

    def sse_connections(self, delta: int, *, dropped: bool = False) -> None:
        self._open += delta
        if delta < 0:
            self._streams.add("sse", "dropped" if dropped else "ended")

    def stats(self) -> HealthStats:
        """The statistics now, frozen."""
        adapters = []
        for provider in self._fetches.keys():  # noqa: SIM118 - not a dict
            t = self._fetches.totals(provider)
            adapters.append(
                AdapterStats(
                    provider=provider,
                    calls=sum(t.values()),
                    timeouts=t.get("timeout", 0),
                    errors=t.get("error", 0),
                )
            )
        since = self._clock.monotonic() - self.window
        durations = tuple(d for at, d in zip(tuple(self._at), tuple(self._took), strict=True) if at > since)
        streams = self._streams.totals("sse")
        dropped = streams.get("dropped", 0)
        sse = SseStats(open=max(0, self._open), ended=streams.get("ended", 0) + dropped, dropped=dropped)
        return HealthStats(window=self.window, adapters=tuple(adapters), status_durations=durations, sse=sse)

    def report(self) -> HealthReport:
        """The health verdict over :meth:`stats`."""
        return evaluate(self.stats(), self.thresholds)
