"""The default :class:`~integration_status.protocols.Metrics` sink: records nothing.

The protocol is a seam (``integration_status.protocols``); implementations that record live above the core
(``integration_status.observability``: Prometheus, the health recorder).
"""

from __future__ import annotations

from typing import Final

from integration_status.protocols import BreakerPhaseName, CacheEvent, FetchOutcome, Metrics

__all__ = ["NO_METRICS", "BreakerPhaseName", "CacheEvent", "FetchOutcome", "Metrics", "NoMetrics"]


class NoMetrics:
    """Records nothing."""

    def observe_fetch(self, provider: str, seconds: float, outcome: FetchOutcome) -> None:
        pass

    def observe_request(self, endpoint: str, seconds: float, status: int) -> None:
        pass

    def cache(self, event: CacheEvent) -> None:
        pass

    def breaker_state(self, provider: str, state: BreakerPhaseName, previous: BreakerPhaseName) -> None:
        pass

    def sse_connections(self, delta: int, *, dropped: bool = False) -> None:
        pass

    def action(self, provider: str, action: str, outcome: str) -> None:
        pass


NO_METRICS: Final = NoMetrics()
