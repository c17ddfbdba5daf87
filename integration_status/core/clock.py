"""Time, injected. Every component takes a ``clock=``; tests pass :class:`integration_status.testing.FakeClock`.

``time()`` is wall-clock epoch seconds (shared across processes: cache freshness, idempotency expiry, event ``ts``);
``monotonic()`` is for local durations (breaker windows, deadlines); ``sleep()`` waits on the same clock.
"""

from __future__ import annotations

import time as _time
from datetime import UTC, datetime

import anyio

from integration_status.protocols import Clock

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "epoch_ms", "utcnow"]


class SystemClock:
    """The real clock. ``time`` and ``monotonic`` are the ``time`` module's own functions: the status path
    reads the clock five times a request, and a wrapper method each time is a Python frame for nothing."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


def utcnow(clock: Clock) -> datetime:
    """The clock's wall time as an aware UTC datetime."""
    return datetime.fromtimestamp(clock.time(), tz=UTC)


def epoch_ms(clock: Clock) -> int:
    """The clock's wall time in epoch milliseconds (the event ``ts``)."""
    return int(clock.time() * 1000)
