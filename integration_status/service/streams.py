"""What the event streams of one process share: one heartbeat timer, one shutdown signal, and encoded frames.

Thousands of viewers may hold a stream of the same project open. Per stream there is then only the task the
server runs the response in; everything else is process-wide:

- :class:`StreamHub` keeps one task that sleeps on the service clock until the next stream's heartbeat is due
  and wakes exactly the streams whose time has come (each stream's heartbeats still fall every ``interval``
  seconds after it connected). Shutdown wakes every stream at once.
- :class:`FrameCache` renders, redacts and encodes an event once per kind of viewer: frames are keyed by the
  project, the event id and everything of the viewer that the rendering depends on (visibility for a
  provider event; allowed actions and visibility per provider for a ``status:update``), so viewers with the
  same permissions share bytes and viewers with different ones never do.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

import anyio
from cachetools import LRUCache

from integration_status.core.clock import Clock, utcnow
from integration_status.core.events import redact_event
from integration_status.core.policy import ProviderView, view_item
from integration_status.core.sse import encode_comment, encode_event
from integration_status.models import IntegrationStatus
from integration_status.protocols import StoredEvent
from integration_status.snapshot import Visibility

__all__ = ["HEARTBEAT", "FrameCache", "StatusFrames", "StreamBeat", "StreamHub"]

#: The heartbeat comment every stream sends (one object for all).
HEARTBEAT: Final = encode_comment()
#: Deadlines closer than this count as reached (float sums of a clock's steps are not exact).
_EPSILON = 1e-9
#: The last frame of a stream ended by shutdown: reconnect (to another worker, with Last-Event-ID) in 1-3 s,
#: spread so that a restarting worker's clients do not all arrive at once.
SHUTDOWN_RETRY_MS: Final = (1000, 3000)


def shutdown_frame() -> bytes:
    return encode_comment("server stopping") + f"retry: {random.randint(*SHUTDOWN_RETRY_MS)}\n\n".encode()


class StreamBeat:
    """One stream's registration with the hub: whether a heartbeat is due, and the cancel scope the hub uses
    to interrupt the stream's wait for its next event (heartbeat) or to end it (shutdown)."""

    __slots__ = ("_hub", "_scope", "_waiting", "due", "open")

    def __init__(self, hub: StreamHub) -> None:
        self.due = False
        self.open = True
        self._hub = hub
        self._waiting = False
        self._scope: anyio.CancelScope | None = None

    async def pump(
        self,
        events: AsyncIterator[StoredEvent],
        send: Callable[[StoredEvent], Awaitable[None]],
        write: Callable[[bytes], Awaitable[None]],
    ) -> None:
        """Hand each event of ``events`` to ``send`` and write a heartbeat whenever one is due, until the
        subscription ends or the hub shuts down.

        One cancel scope lives from one heartbeat to the next (scopes are not free: thousands of streams
        wait at once). The hub cancels it only while the stream waits for an event, so ``events.__anext__``
        must not lose an event when cancelled while it waits: both built-in buses hand an event out only
        after their wait has returned (an async generator would be closed by the cancellation instead). An
        event that arrives together with the cancellation is sent in the next scope.
        """
        pending: StoredEvent | None = None
        while not self._hub.closed:
            self._scope = scope = anyio.CancelScope()
            with scope:
                if self.due:
                    self.due = False
                    await write(HEARTBEAT)
                while not self.due:
                    if pending is None:
                        self._waiting = True
                        try:
                            pending = await events.__anext__()
                        except StopAsyncIteration:
                            return
                        finally:
                            self._waiting = False
                        if scope.cancel_called:
                            break
                    event, pending = pending, None
                    await send(event)
        # Ended by shutdown: the hint that tells the browser to come back soon (bounded: a stuck client).
        with anyio.move_on_after(1):
            await write(shutdown_frame())

    def _wake(self) -> None:
        self.due = True
        if self._waiting and self._scope is not None:
            self._scope.cancel()

    def _end(self) -> None:
        if self._scope is not None:
            self._scope.cancel()


class StreamHub:
    """Heartbeats and shutdown for every event stream of a service (see the module docstring).

    ``spawn`` starts the timer task in the service's task group on the first stream; the task sleeps on
    ``clock`` only while some stream is open.
    """

    def __init__(
        self, *, clock: Clock, interval: float, spawn: Callable[[Callable[[], Awaitable[None]]], None]
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._spawn = spawn
        # Deadlines only grow (each stream's next one is ``interval`` after its last): a FIFO stays sorted.
        self._due: deque[tuple[float, StreamBeat]] = deque()
        self._streams: set[StreamBeat] = set()
        self._ticking = False
        self._added: anyio.Event | None = None
        self.closed = False

    def __len__(self) -> int:
        return len(self._streams)

    def open(self) -> StreamBeat:
        """Register a stream; its first heartbeat is due ``interval`` seconds from now."""
        beat = StreamBeat(self)
        if self.closed:
            return beat
        if not self._ticking:
            self._spawn(self._tick)
            self._ticking = True
        self._streams.add(beat)
        self._due.append((self._clock.monotonic() + self._interval, beat))
        if self._added is not None:
            self._added.set()
        return beat

    def close_stream(self, beat: StreamBeat) -> None:
        """Unregister a stream (its queued deadline is dropped when reached)."""
        beat.open = False
        self._streams.discard(beat)

    def reopen(self) -> None:
        """The service starts (again): streams may open."""
        self.closed = False

    def shutdown(self) -> None:
        """End every open stream now, and any stream opened later at once."""
        self.closed = True
        for beat in self._streams:
            beat._end()
        self._streams.clear()
        self._due.clear()

    async def _tick(self) -> None:
        try:
            while True:
                if not self._due:
                    self._added = added = anyio.Event()
                    try:
                        await added.wait()
                    finally:
                        self._added = None
                    continue
                deadline, beat = self._due[0]
                delay = deadline - self._clock.monotonic()
                if delay > _EPSILON:
                    await self._clock.sleep(delay)
                    continue
                self._due.popleft()
                if beat.open:
                    beat._wake()
                    self._due.append((deadline + self._interval, beat))
        finally:
            self._ticking = False


class _StatusEntry:
    """One rendering of a project's items for one kind of viewer within one clock bucket."""

    __slots__ = ("frames", "head", "items", "views")

    def __init__(
        self, views: tuple[ProviderView, ...], items: tuple[IntegrationStatus, ...], head: str
    ) -> None:
        self.views = views  # keeps the snapshots alive: the id()s in this entry's key cannot be reused
        self.items = items
        self.head = head  # the JSON data up to the ts value
        self.frames: dict[tuple[str | None, str], bytes] = {}


class StatusFrames:
    """``status:update`` frames for a viewer's current items, rendered once per (project, permissions,
    provider views, clock second) and encoded once per (event id, ts)."""

    def __init__(self, *, clock: Clock, size: int = 256, bucket: float = 1.0) -> None:
        self._clock = clock
        self._bucket = bucket
        self._entries: LRUCache[tuple[Any, ...], _StatusEntry] = LRUCache(maxsize=size)

    def frame(
        self,
        project_id: str,
        views: tuple[ProviderView, ...],
        grants: tuple[tuple[frozenset[str], Visibility], ...],
        *,
        event_id: str | None,
        ts: object,
    ) -> tuple[bytes, tuple[IntegrationStatus, ...]]:
        """The encoded frame and the items it carries. ``grants`` are the viewer's allowed actions and
        visibility for each of ``views`` (in order); they are part of the key, so frames never cross viewers
        with different permissions."""
        key = (
            project_id,
            grants,
            int(self._clock.time() // self._bucket),
            tuple((id(v.snapshot), v.changed_at, v.stale, v.problem) for v in views),
        )
        entry = self._entries.get(key)
        if entry is None:
            now = utcnow(self._clock)
            items = tuple(
                view_item(view, allowed=allowed, visibility=visibility, now=now)
                for view, (allowed, visibility) in zip(views, grants, strict=True)
            )
            # Key order of StatusUpdate.to_json(); the items are encoded once for every frame of this entry.
            head = (
                '{"type":"status:update","projectId":'
                + _dumps(project_id)
                + ',"items":'
                + _dumps([i.to_json() for i in items])
                + ',"ts":'
            )
            entry = self._entries[key] = _StatusEntry(views, items, head)
        ts_text = _dumps(ts)
        frame = entry.frames.get((event_id, ts_text))
        if frame is None:
            if len(entry.frames) >= 8:
                entry.frames.pop(next(iter(entry.frames)))
            frame = entry.frames[(event_id, ts_text)] = encode_event(
                data=entry.head + ts_text + "}", event="status:update", id=event_id
            )
        return frame, entry.items


class FrameCache:
    """Redacted, encoded frames of provider events (``github:push``, ``deploy:*``, ``sanity:webhook``), keyed
    by (project, event id, visibility). A hit is used only for the very same event data (the same object, or
    an equal one), so an id that came back with other content is rendered again."""

    def __init__(self, *, size: int = 1024) -> None:
        self._frames: LRUCache[tuple[str, str, Visibility], tuple[Mapping[str, Any], bytes | None]]
        self._frames = LRUCache(maxsize=size)

    def frame(self, project_id: str, stored: StoredEvent, visibility: Visibility) -> bytes | None:
        """The frame ``stored`` becomes for a viewer with ``visibility``; None when it is not sent."""
        key = (project_id, stored.id, visibility)
        hit = self._frames.get(key)
        if hit is not None and (hit[0] is stored.data or hit[0] == stored.data):
            return hit[1]
        redacted = redact_event(stored.data, visibility)
        frame = None
        if redacted is not None:
            frame = encode_event(data=redacted, event=str(redacted["type"]), id=stored.id)
        self._frames[key] = (stored.data, frame)
        return frame


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
