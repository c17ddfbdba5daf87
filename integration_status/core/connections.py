"""Caps on open event streams, per viewer and per process.

A stream takes a slot with :meth:`ConnectionLimiter.acquire` before it starts and gives it back with
:meth:`ConnectionLimiter.release` when it ends, whatever the reason. ``count`` feeds the
``integration_sse_connection_count`` gauge. One process, one event loop: no lock is needed because neither
method awaits.

>>> caps = ConnectionLimiter(per_viewer=1, per_process=10)
>>> caps.acquire("u1"), caps.acquire("u1"), caps.acquire("u2")
(True, False, True)
>>> caps.release("u1"); caps.count
1
"""

from __future__ import annotations

from collections import Counter

__all__ = ["ConnectionLimiter"]


class ConnectionLimiter:
    """Counts open streams and refuses one over ``per_viewer`` for its viewer or ``per_process`` in total."""

    def __init__(self, per_viewer: int = 5, per_process: int = 1000) -> None:
        if per_viewer < 1 or per_process < 1:
            raise ValueError("connection caps must be at least 1")
        self.per_viewer = per_viewer
        self.per_process = per_process
        self._by_viewer: Counter[str] = Counter()
        self._total = 0

    def acquire(self, viewer_id: str) -> bool:
        """Take a slot for ``viewer_id``; False (and nothing taken) when either cap is reached."""
        if self._total >= self.per_process or self._by_viewer[viewer_id] >= self.per_viewer:
            return False
        self._by_viewer[viewer_id] += 1
        self._total += 1
        return True

    def release(self, viewer_id: str) -> None:
        """Give back a slot of ``viewer_id``. Releasing a slot that was never taken does nothing."""
        held = self._by_viewer.get(viewer_id, 0)
        if held <= 0:
            return
        if held == 1:
            del self._by_viewer[viewer_id]  # keeps memory bounded by the viewers currently connected
        else:
            self._by_viewer[viewer_id] = held - 1
        self._total -= 1

    @property
    def count(self) -> int:
        """Open streams in this process."""
        return self._total

    def count_for(self, viewer_id: str) -> int:
        """Open streams of one viewer."""
        return self._by_viewer.get(viewer_id, 0)

    def __repr__(self) -> str:
        return (
            f"ConnectionLimiter(count={self._total}, per_viewer={self.per_viewer}, "
            f"per_process={self.per_process})"
        )
