"""Outcome counts over a rolling time window, in fixed slots (bounded memory, O(1) per observation)."""

from __future__ import annotations

from collections import deque

from integration_status.core.clock import Clock

__all__ = ["RollingCounts"]


class RollingCounts:
    """Counts of outcomes per key over the last ``window`` seconds, in ``slots`` time slots (the window
    covers between ``window - window/slots`` and ``window`` seconds). Memory is bounded by keys x slots.

    >>> from integration_status.testing import FakeClock
    >>> clock = FakeClock()
    >>> counts = RollingCounts(clock=clock, window=60, slots=6)
    >>> counts.add("github", "ok"); counts.add("github", "timeout")
    >>> clock.advance(61); counts.add("github", "ok")
    >>> counts.totals("github")
    {'ok': 1}
    """

    def __init__(self, *, clock: Clock, window: float = 300.0, slots: int = 30) -> None:
        if not window > 0 or slots < 1:
            raise ValueError("window must be > 0 seconds and slots >= 1")
        self.window = float(window)
        self._clock = clock
        self._slots = slots
        self._width = self.window / slots
        self._rings: dict[str, deque[tuple[int, dict[str, int]]]] = {}

    def _now(self) -> int:
        return int(self._clock.monotonic() // self._width)

    def add(self, key: str, outcome: str) -> None:
        slot = self._now()
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = deque()
        if not ring or ring[-1][0] != slot:
            ring.append((slot, {}))
            while ring[0][0] <= slot - self._slots:
                ring.popleft()
        counts = ring[-1][1]
        counts[outcome] = counts.get(outcome, 0) + 1

    def totals(self, key: str) -> dict[str, int]:
        """Outcome counts of ``key`` inside the window."""
        oldest = self._now() - self._slots
        out: dict[str, int] = {}
        for slot, counts in tuple(self._rings.get(key, ())):
            if slot > oldest:
                for outcome, n in tuple(counts.items()):
                    out[outcome] = out.get(outcome, 0) + n
        return out

    def keys(self) -> tuple[str, ...]:
        return tuple(self._rings)
