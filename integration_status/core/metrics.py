"""What the core reports while it works: the :class:`Metrics` protocol and the default that records nothing.

Implementations live above the core (``integration_status.observability``: Prometheus, the health recorder).
"""

from __future__ import annotations

from typing import Final, Literal, Protocol, TypeAlias

__all__ = ["NO_METRICS", "BreakerPhaseName", "CacheEvent", "FetchOutcome", "Metrics", "NoMetrics"]

#: ``ok``; ``timeout``; ``error`` (any other failure); ``auth`` (access lost: the provider answered
#: correctly).
FetchOutcome: TypeAlias = Literal["ok", "timeout", "error", "auth"]
#: ``hit``: a fresh entry served with no call; ``miss``: no fresh entry, a refresh was awaited;
#: ``stale``: the last good value served because the refresh failed or missed the deadline.
CacheEvent: TypeAlias = Literal["hit", "miss", "stale"]
BreakerPhaseName: TypeAlias = Literal["closed", "half_open", "open"]


class Metrics(Protocol):
    """Where the service reports. Every method is called on the event loop and must return quickly."""

    def observe_fetch(self, provider: str, seconds: float, outcome: FetchOutcome) -> None:
        """One adapter fetch finished (or timed out) after ``seconds``."""

    def observe_request(self, endpoint: str, seconds: float, status: int) -> None:
        """One ``status`` or ``actions`` request was answered with HTTP ``status`` after ``seconds``."""

    def cache(self, event: CacheEvent) -> None:
        """A provider was served fresh (``hit``), refreshed (``miss``) or served ``stale``."""

    def breaker_state(self, provider: str, state: BreakerPhaseName, previous: BreakerPhaseName) -> None:
        """One of ``provider``'s breakers (there is one per project) moved from ``previous`` to ``state``."""

    def sse_connections(self, delta: int, *, dropped: bool = False) -> None:
        """An event stream opened (+1) or ended (-1); ``dropped`` when it ended by an error on our side."""

    def action(self, provider: str, action: str, outcome: str) -> None:
        """A quick action ran to an outcome: ``ok``, ``timeout`` or ``error``."""


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
