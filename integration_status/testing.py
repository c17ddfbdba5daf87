"""Helpers for testing code that uses integration-status (shipped, so hosts can use them in their own tests).

>>> clock = FakeClock(start=1_000.0)
>>> clock.advance(5)
>>> clock.time()
1005.0
"""

from __future__ import annotations

import heapq
import itertools

import anyio

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that only moves when told to. ``sleep()`` returns once :meth:`advance` has reached its deadline
    (``sleep(0)`` just yields). ``time()`` (wall) and ``monotonic()`` move together."""

    def __init__(self, start: float = 1_764_136_800.0) -> None:  # 2025-11-26T06:00:00Z
        self._wall = float(start)
        self._mono = 0.0
        self._waiters: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._waiters, (self._mono + seconds, next(self._seq), event))
        await event.wait()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._wall += seconds
        self._mono += seconds
        while self._waiters and self._waiters[0][0] <= self._mono:
            heapq.heappop(self._waiters)[2].set()

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock right now."""
        return sum(1 for _, _, e in self._waiters if not e.is_set())

    def __repr__(self) -> str:
        return f"FakeClock(time={self._wall!r}, monotonic={self._mono!r})"
