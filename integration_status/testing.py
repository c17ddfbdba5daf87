"""Helpers for testing code that uses integration-status (shipped, so hosts can use them in their own tests).

>>> clock = FakeClock(start=1_000.0)
>>> clock.advance(5)
>>> clock.time()
1005.0
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

from integration_status._logging import capture_logs
from integration_status.core.webhooks import sign_github, sign_sanity, sign_vercel
from integration_status.exceptions import ProviderError
from integration_status.models import ProviderKey
from integration_status.protocols import (
    ActionHandler,
    Adapter,
    FetchContext,
    ProjectConnections,
    ProviderConnection,
)
from integration_status.snapshot import ProviderSnapshot, Segment

__all__ = [
    "FakeClock",
    "ScriptedAdapter",
    "StaticConnections",
    "Step",
    "capture_logs",
    "hang_on",
    "sign_github",
    "sign_sanity",
    "sign_vercel",
    "snapshot",
]


class FakeClock:
    """A clock that only moves when told to. ``sleep()`` returns once :meth:`advance` has reached its deadline
    (``sleep(0)`` just yields). ``time()`` (wall) and ``monotonic()`` move together."""

    def __init__(self, start: float = 1_764_136_800.0) -> None:  # 2025-11-26T06:00:00Z
        self._wall = float(start)
        self._mono = 0.0
        self._waiters: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()
        self._sleeping = 0
        self._next_sleep: list[anyio.Event] = []
        self._watchers: list[tuple[int, bool, anyio.Event]] = []

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
        self._sleeping += 1
        if self._next_sleep:
            for started in self._next_sleep:
                started.set()
            self._next_sleep.clear()
        self._sleepers_changed()
        try:
            await event.wait()
        finally:
            # A cancelled sleep (a timeout that lost its race) stays in the heap until its deadline, but it
            # is no longer sleeping.
            self._sleeping -= 1
            self._sleepers_changed()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._wall += seconds
        self._mono += seconds
        while self._waiters and self._waiters[0][0] <= self._mono:
            heapq.heappop(self._waiters)[2].set()

    def next_sleep(self) -> anyio.Event:
        """An event set as soon as some task starts a (non-zero) sleep on this clock after this call: take it
        before the step that should lead to a sleep, then wait for it instead of polling ``sleepers``, so the
        next ``advance`` is sure to find that sleeper."""
        started = anyio.Event()
        self._next_sleep.append(started)
        return started

    async def until_sleepers(self, count: int, *, at_least: bool = False) -> None:
        """Return once exactly ``count`` tasks (``at_least``: ``count`` or more) sleep on this clock, at once
        if they do now: the point where the code under test has settled into its timed waits, so that the
        next :meth:`advance` finds them. Woken by the sleeps themselves as they start and end, never by
        polling; bound the wait with ``anyio.fail_after``, in the loop the sleepers run in."""
        if count < 0:
            raise ValueError("a count of sleepers is never negative")
        if self._sleeping == count or (at_least and self._sleeping > count):
            return
        watcher = (count, at_least, anyio.Event())
        self._watchers.append(watcher)
        try:
            await watcher[2].wait()
        finally:
            if not watcher[2].is_set():
                self._watchers.remove(watcher)

    def _sleepers_changed(self) -> None:
        if not self._watchers:
            return
        now = self._sleeping
        waiting = []
        for watcher in self._watchers:
            count, at_least, reached = watcher
            if now == count or (at_least and now > count):
                reached.set()
            else:
                waiting.append(watcher)
        self._watchers = waiting

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock right now (cancelled sleeps do not count)."""
        return self._sleeping

    def __repr__(self) -> str:
        return f"FakeClock(time={self._wall!r}, monotonic={self._mono!r})"


def snapshot(
    provider: ProviderKey, status: str = "connected", text: str = "OK", **kwargs: Any
) -> ProviderSnapshot:
    """A small raw snapshot for tests: ``snapshot("github", "warning", "No recent activity")``."""
    return ProviderSnapshot(provider=provider, status=status, summary=(Segment(pieces=(text,)),), **kwargs)  # type: ignore[arg-type]


#: One step of a :class:`ScriptedAdapter`: a snapshot to return, an error to raise, or an async callable.
Step = ProviderSnapshot | ProviderError | Callable[[], Awaitable[ProviderSnapshot]]


class ScriptedAdapter(Adapter):
    """An adapter that plays a script: each fetch takes the next step (the last one repeats). A step is a
    snapshot to return, a ProviderError to raise, or an async callable (for delays on a FakeClock, or hanging).

    >>> adapter = ScriptedAdapter("github", snapshot("github"))
    >>> adapter.calls
    0
    """

    def __init__(
        self,
        provider: ProviderKey,
        *steps: Step,
        handlers: Mapping[str, ActionHandler] | None = None,
    ) -> None:
        if not steps:
            steps = (snapshot(provider),)
        self.provider: ProviderKey = provider
        self._steps = list(steps)
        self._handlers = dict(handlers or {})
        self.calls = 0
        self.in_flight = 0
        self.connections: list[ProviderConnection] = []

    def then(self, *steps: Step) -> None:
        """Replace what the following fetches do."""
        self._steps = list(steps)

    async def fetch(self, connection: ProviderConnection, ctx: FetchContext) -> ProviderSnapshot:
        self.calls += 1
        self.connections.append(connection)
        step = self._steps.pop(0) if len(self._steps) > 1 else self._steps[0]
        self.in_flight += 1
        try:
            if isinstance(step, ProviderSnapshot):
                await anyio.lowlevel.checkpoint()
                return step
            if isinstance(step, ProviderError):
                await anyio.lowlevel.checkpoint()
                raise step
            return await step()
        finally:
            self.in_flight -= 1

    def action_handlers(self) -> Mapping[str, ActionHandler]:
        return self._handlers


def hang_on(
    clock: FakeClock | None = None, seconds: float | None = None
) -> Callable[[], Awaitable[ProviderSnapshot]]:
    """A script step that never answers (or answers nothing before ``seconds`` on ``clock``)."""

    async def step() -> ProviderSnapshot:
        if clock is not None and seconds is not None:
            await clock.sleep(seconds)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    return step


class StaticConnections:
    """A ConnectionResolver over a fixed mapping of project id -> connections."""

    def __init__(self, projects: Mapping[str, ProjectConnections]) -> None:
        self.projects = dict(projects)

    @classmethod
    def linked(cls, project_id: str, *providers: ProviderKey) -> StaticConnections:
        """One project with the given providers linked (no credentials)."""
        return cls(
            {
                project_id: ProjectConnections(
                    project_id=project_id, providers={p: ProviderConnection(provider=p) for p in providers}
                )
            }
        )

    async def __call__(self, project_id: str) -> ProjectConnections | None:
        return self.projects.get(project_id)
