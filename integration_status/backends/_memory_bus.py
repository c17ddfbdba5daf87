"""The in-process event bus: a bounded replay buffer per project and a bounded queue per subscriber.

Contract (shared with the Redis engine):

- ``publish(project_id, event)`` gives the event the project's next id (see
  :mod:`integration_status.core.events`), keeps it in the project's replay buffer (the newest ``buffer_size``
  events) and hands it to every current subscriber of the project. It never waits for a subscriber.
- ``subscribe(project_id, last_event_id=L)`` is an async context manager yielding a
  :class:`MemorySubscription`, an async iterator of :class:`~integration_status.protocols.StoredEvent` in id
  order:

  - ``L`` None: only events published after subscribing; ``gap`` is False.
  - ``L`` a valid id this bus issued for the project, with every later event still buffered (``L`` is not
    older than the newest evicted event): first every buffered event after ``L``, then live events; ``gap`` is
    False.
  - otherwise (malformed, older than what the buffer still covers, unknown to this bus - e.g. from before a
    restart - or newer than any id issued): ``gap`` is True and only live events follow; the caller sends a
    fresh snapshot instead of a replay.

  Nothing published after subscribing is lost and nothing is yielded twice.
- A subscriber whose queue (``queue_size`` events) is full when an event arrives is dropped at once: it is
  removed from the project, ``dropped`` becomes True, and its iterator, after yielding what was already
  queued, raises :class:`SubscriberLagging`. The client reconnects with its last id and resumes from the
  buffer.
- Leaving the context (normally, by an error, or by cancellation) unsubscribes. :meth:`MemoryEventBus.close`
  ends every subscriber's iteration normally (shutdown).

Events are kept as given (raw, unredacted), as one shallow copy shared by all subscribers: do not mutate them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs

from integration_status.core.clock import SYSTEM_CLOCK, Clock, epoch_ms
from integration_status.core.events import format_event_id, next_event_id, parse_event_id
from integration_status.core.wake import Wake
from integration_status.exceptions import SubscriberLagging
from integration_status.protocols import StoredEvent

__all__ = ["MemoryEventBus", "MemorySubscription", "SubscriberLagging"]


@attrs.define(eq=False)
class _Project:
    buffer: deque[tuple[tuple[int, int], StoredEvent]]
    subscribers: set[MemorySubscription] = attrs.field(factory=set)
    last_id: tuple[int, int] | None = None
    first_id: tuple[int, int] | None = None
    #: The newest id evicted from the buffer: every later event is still buffered.
    evicted_id: tuple[int, int] | None = None


class MemorySubscription:
    """One subscriber's view: replayed events first, then live ones. See the module docstring.

    The live queue is a bounded list with one wake-up event, set only while the subscriber waits: no memory
    object stream (its two halves and waiter tables cost more than the events it holds). A wait cancelled
    before it resumes takes nothing from the queue, so a stream may interrupt it (heartbeat) without losing
    an event.
    """

    __slots__ = ("_ended", "_last", "_queue", "_replay", "_size", "_wake", "dropped", "gap", "resume_id")

    def __init__(
        self, *, gap: bool, replay: list[StoredEvent], queue_size: int, resume_id: str | None = None
    ) -> None:
        self.gap = gap
        #: The newest id before the events this subscription delivers (see the Subscription protocol).
        self.resume_id = replay[-1].id if replay else resume_id
        self.dropped = False
        # Lists, not deques: an empty deque costs ~750 bytes, and thousands of subscriptions sit idle.
        self._replay: list[StoredEvent] | None = replay[::-1] or None  # reversed: pop() takes the oldest
        self._last: tuple[int, int] | None = parse_event_id(replay[-1].id) if replay else None
        self._queue: list[StoredEvent] = []  # usually 0-1 events: pop(0) is cheap
        self._size = queue_size
        self._ended = False
        self._wake: Wake | None = None

    def _offer(self, event: StoredEvent) -> bool:
        """Queue ``event`` without waiting; False when the queue is full (the subscriber is then dropped)."""
        if self._ended:
            return False
        if len(self._queue) >= self._size:
            self.dropped = True
            self._end()
            return False
        self._queue.append(event)
        if self._wake is not None:
            self._wake.set()
        return True

    def _end(self) -> None:
        self._ended = True
        if self._wake is not None:
            self._wake.set()

    def _close(self) -> None:
        self._end()
        self._queue.clear()

    def __aiter__(self) -> AsyncIterator[StoredEvent]:
        return self

    def poll(self) -> StoredEvent | None:
        """The next event if one is already here, without waiting; None when the next one must be waited
        for (or the subscription has ended: iterating then says how)."""
        if self._replay:
            event = self._replay.pop()
            if not self._replay:
                self._replay = None
            return event
        while self._queue:
            event = self._queue.pop(0)
            if self._skip(event):
                continue
            return event
        return None

    def _skip(self, event: StoredEvent) -> bool:
        """Only a replayed event can come again through the queue: True for one of those. Live events come
        in id order, so once one is past the replay no later one needs the check."""
        if self._last is None:
            return False
        parts = parse_event_id(event.id)
        if parts is not None and parts <= self._last:
            return True
        self._last = None
        return False

    async def __anext__(self) -> StoredEvent:
        if self._replay:
            event = self._replay.pop()
            if not self._replay:
                self._replay = None
            return event
        while True:
            if self._queue:
                event = self._queue.pop(0)
                if self._skip(event):
                    continue
                return event
            if self._ended:
                if self.dropped:
                    raise SubscriberLagging("event subscriber fell behind and was dropped")
                raise StopAsyncIteration
            self._wake = wake = Wake()
            try:
                # The wake is this subscription's alone, so a cancellation here is always its own task's:
                # ``bare()`` spares the generator of ``await wake`` (see Wake.bare).
                await wake.bare()
            finally:
                self._wake = None

    def __repr__(self) -> str:
        return f"MemorySubscription(gap={self.gap}, dropped={self.dropped})"


class MemoryEventBus:
    """Events in process memory; one worker only (use the Redis bus to share events between workers)."""

    def __init__(
        self, *, clock: Clock = SYSTEM_CLOCK, buffer_size: int = 1000, queue_size: int = 256
    ) -> None:
        if buffer_size < 1 or queue_size < 1:
            raise ValueError("buffer_size and queue_size must be at least 1")
        self._clock = clock
        self._buffer_size = buffer_size
        self._queue_size = queue_size
        self._projects: dict[str, _Project] = {}
        self._closed = False

    def _project(self, project_id: str) -> _Project:
        project = self._projects.get(project_id)
        if project is None:
            project = self._projects[project_id] = _Project(buffer=deque())
        return project

    async def publish(self, project_id: str, event: Mapping[str, Any]) -> str:
        """Buffer ``event`` and hand it to the project's subscribers; its id."""
        project = self._project(project_id)
        parts = next_event_id(project.last_id, epoch_ms(self._clock))
        stored = StoredEvent(id=format_event_id(parts), data=dict(event))
        project.last_id = parts
        if project.first_id is None:
            project.first_id = parts
        project.buffer.append((parts, stored))
        if len(project.buffer) > self._buffer_size:
            project.evicted_id = project.buffer.popleft()[0]
        for subscriber in list(project.subscribers):
            if not subscriber._offer(stored):
                project.subscribers.discard(subscriber)
        return stored.id

    def _resume_point(
        self, project: _Project, last_event_id: str | None
    ) -> tuple[bool, tuple[int, int] | None]:
        """``(gap, replay after this id)`` for a subscribe call."""
        if last_event_id is None:
            return False, None
        parts = parse_event_id(last_event_id)
        if parts is None or project.first_id is None or project.last_id is None:
            return True, None
        floor = project.evicted_id if project.evicted_id is not None else project.first_id
        if not floor <= parts <= project.last_id:
            return True, None
        # Only an id this project was actually given counts: one of another project's ids (or a made-up one)
        # can fall in the range and would silently skip events.
        if parts == project.evicted_id or any(known == parts for known, _ in project.buffer):
            return False, parts
        return True, None

    async def ready(self, project_id: str) -> None:
        """Always ready: the bus lives in this process (the Redis bus checks the server here)."""

    @asynccontextmanager
    async def subscribe(
        self, project_id: str, *, last_event_id: str | None = None
    ) -> AsyncIterator[MemorySubscription]:
        """Events of ``project_id``, resuming after ``last_event_id`` when the buffer still covers it."""
        project = self._project(project_id)
        gap, after = self._resume_point(project, last_event_id)
        replay = [event for parts, event in project.buffer if after is not None and parts > after]
        # Registered in the same step as the buffer is copied: no event can fall between replay and live.
        resume = after if after is not None and not replay else project.last_id
        subscription = MemorySubscription(
            gap=gap,
            replay=replay,
            queue_size=self._queue_size,
            resume_id=None if resume is None else format_event_id(resume),
        )
        if self._closed:
            subscription._end()
        else:
            project.subscribers.add(subscription)
        try:
            yield subscription
        finally:
            project.subscribers.discard(subscription)
            subscription._close()
            if not project.subscribers and not project.buffer:
                self._projects.pop(project_id, None)

    def subscriber_count(self, project_id: str | None = None) -> int:
        """Current subscribers of one project, or of all projects."""
        if project_id is not None:
            project = self._projects.get(project_id)
            return len(project.subscribers) if project is not None else 0
        return sum(len(p.subscribers) for p in self._projects.values())

    def close(self) -> None:
        """End every subscription's iteration (shutdown); later subscriptions end at once."""
        self._closed = True
        for project in self._projects.values():
            for subscriber in project.subscribers:
                subscriber._end()
            project.subscribers.clear()

    def __repr__(self) -> str:
        return f"MemoryEventBus(projects={len(self._projects)}, subscribers={self.subscriber_count()})"
