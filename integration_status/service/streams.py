"""The event streams: the whole Server-Sent Events fan-out of a service, framework-neutral.

A mount authenticates the viewer and finds the project, then asks :meth:`EventStreams.open` for a writer; the
writer streams frames until the client goes away, the subscription ends, or the service stops. Per stream there
is only the task the server runs the response in; everything else is shared:

- the caps (per viewer and per process): over either, a ``retry:`` hint under ``event: overloaded`` and the
  stream ends at once;
- on connect, a ``status:update`` snapshot of the viewer's items carrying the resume point as its id, unless
  ``Last-Event-ID`` is still in the bus's buffer, in which case every later event is replayed instead;
- a raw ``status:update`` on the bus is a marker: the provider views behind it are collected ONCE per project
  and marker, however many streams are open, and rendered once per viewer class (the service's render cache);
  each stream writes the shared frame only when its content tag differs from the last one it sent;
- provider events (``deploy:*``, ``github:push``, ``sanity:webhook``) are redacted and encoded once per
  event and visibility;
- what an event becomes for a viewer class is worked out by the first stream of the class and looked up by
  the others (a stream's viewer, and so its class, is asked once, when it opens); every event already waiting
  when a stream wakes goes out in ONE write;
- :class:`StreamHub` keeps one task that sleeps on the service clock until the next stream's heartbeat is due
  and wakes exactly the streams whose time has come. Shutdown wakes every stream at once;
- a stream's writes are at least the write interval apart (``Settings.sse_write_interval``): under a steady
  flow of events each write carries everything that arrived since the last, so the cost per event falls as
  the rate rises; after a quiet spell an event goes out at once.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol

import anyio

from integration_status._logging import get_logger
from integration_status.core.connections import ConnectionLimiter
from integration_status.core.policy import Grants, ProviderView
from integration_status.core.sse import encode_comment, encode_event
from integration_status.core.wake import Waiter, Wake, set_all
from integration_status.exceptions import BackendUnavailable, ConfigurationError, SubscriberLagging
from integration_status.models import ProviderKey
from integration_status.protocols import Clock, Metrics, ProjectConnections, StoredEvent, Subscription, Viewer
from integration_status.service.render import Renderer
from integration_status.snapshot import Visibility

__all__ = [
    "CONNECTED",
    "EVENT_PROVIDER",
    "HEARTBEAT",
    "EventStreams",
    "StreamBeat",
    "StreamHub",
    "StreamSource",
    "Writer",
]

_log = get_logger("integration_status.sse")

#: Which provider's visibility applies to an event type.
EVENT_PROVIDER: Final[Mapping[str, ProviderKey]] = {
    "deploy:started": "vercel",
    "deploy:finished": "vercel",
    "github:push": "github",
    "sanity:webhook": "sanity",
}

#: The first frame of every event stream.
CONNECTED: Final = encode_comment("connected")
#: What a stream over a cap is sent before it ends: reconnect in 30 s.
OVERLOADED: Final = encode_event(data="too many connections", event="overloaded", retry=30_000)

#: Markers whose views are kept per project, for streams a few events behind the others.
MARKERS_PER_PROJECT: Final = 64

#: Events a stream takes from its queue for one write at most.
BATCH_LIMIT: Final = 64
#: What events became for one viewer class, kept (while a stream of the class is open) for the class's streams
#: that reach them later: streams further behind than this work an event out again.
RENDERED_PER_CLASS: Final = 64
#: (frame or None, content tag of a status:update or None, the event's data it was made from)
_Rendered = tuple[bytes | None, str | None, Mapping[str, object]]

#: How a writer sends one chunk; the mount implements it over its server.
Write = Callable[[bytes], Awaitable[None]]
#: A stream's body: the mount runs it with its ``write`` and cancels it when the client goes away.
Writer = Callable[[Write], Awaitable[None]]


class StreamSource(Protocol):
    """What the streams need from the service: the project's provider views, the viewer's grants, the bus."""

    def views(self, connections: ProjectConnections) -> Awaitable[tuple[ProviderView, ...]]: ...

    def grants(self, viewer: Viewer, project_id: str) -> Grants: ...

    def visibility(self, viewer: Viewer, project_id: str, provider: ProviderKey) -> Visibility: ...

    def subscribe(
        self, project_id: str, *, last_event_id: str | None = None
    ) -> AbstractAsyncContextManager[Subscription]: ...

    def now_ms(self) -> int: ...


#: The heartbeat comment every stream sends (one object for all).
HEARTBEAT: Final = encode_comment()
#: Deadlines closer than this count as reached (float sums of a clock's steps are not exact).
_EPSILON = 1e-9
#: How the holds follow the releases' lateness (see StreamHub._note_lateness): the weight of each new sample,
#: the stretch per second of smoothed lateness, and the longest stretch, in write intervals.
LAG_SMOOTHING: Final = 0.1
STRETCH_GAIN: Final = 4.0
STRETCH_MAX: Final = 2.0
#: The last frame of a stream ended by shutdown: reconnect (to another worker, with Last-Event-ID) in 1-3 s,
#: spread so that a restarting worker's clients do not all arrive at once.
SHUTDOWN_RETRY_MS: Final = (1000, 3000)


def shutdown_frame() -> bytes:
    return encode_comment("server stopping") + f"retry: {random.randint(*SHUTDOWN_RETRY_MS)}\n\n".encode()


#: The last frame of a stream ended because the shared store stopped answering: reconnect in 5 s (a new stream
#: is answered 503 with ``Retry-After: 5`` while the store is still away). A comment and a hint, no named
#: event: ``error`` is EventSource's own name for a broken connection.
STORE_GONE: Final = encode_comment("store unavailable") + b"retry: 5000\n\n"


class StreamBeat:
    """One stream's registration with the hub: whether a heartbeat is due, and the cancel scope the hub uses
    to interrupt the stream's wait for its next event (heartbeat) or to end it (shutdown, or a stall).

    A stream is *stalled* when a heartbeat falls due while the previous one is still unwritten and the stream
    is not waiting for an event: for a whole interval it has been stuck writing (a client that stopped
    reading, whose socket buffer is full). It is then ended with :class:`SubscriberLagging`, which frees its
    slot; the client resumes with ``Last-Event-ID``.
    """

    __slots__ = ("_hold_waiter", "_holding", "_hub", "_scope", "_waiting", "due", "open", "stalled")

    def __init__(self, hub: StreamHub) -> None:
        self.due = False
        self.stalled = False
        self.open = True
        self._hub = hub
        self._waiting = False
        self._holding = False
        self._scope: anyio.CancelScope | None = None
        self._hold_waiter: Waiter | None = None

    async def pump(
        self,
        events: AsyncIterator[StoredEvent],
        render: Callable[[StoredEvent], bytes | Awaitable[bytes | None] | None],
        write: Callable[[bytes], Awaitable[None]],
        poll: Callable[[], StoredEvent | None] | None = None,
    ) -> None:
        """Write the frame ``render`` makes of each event of ``events`` (None: nothing to send) and a heartbeat
        whenever one is due, until the subscription ends or the hub shuts down. ``render`` answers the frame
        itself when it has it at hand (no coroutine per event and stream), or an awaitable of it.

        Every event that is already waiting when the stream wakes (``poll``: the next one without waiting, or
        None; at most :data:`BATCH_LIMIT`) is rendered too and the frames go out in ONE write: a stream that
        fell behind catches up in a few steps instead of one wake-up and one write per frame, so the cost of a
        busy moment shrinks per event as the load grows. The batch is taken before any of it is rendered, so
        events that arrive while it renders wait in the bus (whose bound still drops a stream that cannot keep
        up) and heartbeats still go out between batches.

        One cancel scope lives from one heartbeat to the next (scopes are not free: thousands of streams
        wait at once). The hub cancels it only while the stream waits for an event, so ``events.__anext__``
        must not lose an event when cancelled while it waits: both built-in buses hand an event out only
        after their wait has returned (an async generator would be closed by the cancellation instead). An
        event that arrives together with the cancellation is sent in the next scope.

        After each write the stream holds for the hub's write interval (:meth:`StreamHub.hold`) before it looks
        for more: a stream's writes are at least that far apart, and whatever arrives meanwhile goes out
        together. A held stream counts as waiting (a heartbeat interrupts the hold; it is not a stall).
        """
        pending: StoredEvent | None = None
        hold = self._hub.write_interval > 0
        while not self._hub.closed:
            if self.stalled:
                raise SubscriberLagging("the stream's writes made no progress for a heartbeat interval")
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
                    more = None if poll is None else poll()
                    if more is None or poll is None:  # the usual case: one event, no lists
                        frame = render(event)
                        if frame is not None and not isinstance(frame, bytes):
                            frame = await frame
                    else:
                        # What is queued now, bounded; what arrives while it renders waits in the bus.
                        frame = await _joined(_batch(event, more, poll), render)
                    del event, more  # nothing of this round is kept through the hold
                    if frame is not None:
                        await write(frame)
                        frame = None
                        if hold:
                            # What arrives meanwhile goes out in the next write (see StreamHub.hold).
                            self._waiting = self._holding = True
                            try:
                                # The stream's one waiter, awaited again each hold (see Waiter): thousands of
                                # streams hold at once, and each object of a wait that is alive when the
                                # collector's middle generation runs moves to the old one, which brings the
                                # next full collection (a pause of the whole worker) closer.
                                waiter = self._hold_waiter
                                if waiter is None:
                                    waiter = self._hold_waiter = Waiter()
                                self._hub.hold(waiter)
                                await waiter
                            finally:
                                self._waiting = self._holding = False
                            if scope.cancel_called:
                                break
        # Ended by shutdown: the hint that tells the browser to come back soon (bounded: a stuck client).
        with anyio.move_on_after(1):
            await write(shutdown_frame())

    def _wake(self) -> None:
        if self.due and not self._waiting:
            self.stalled = True
            if self._scope is not None:
                self._scope.cancel()
            return
        self.due = True
        if self._holding and not self._hub.beats_end_holds:
            return  # the heartbeat goes out when the hold ends, a small part of the heartbeat interval later
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
        self,
        *,
        clock: Clock,
        interval: float,
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
        write_interval: float = 0.0,
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._spawn = spawn
        #: The shortest time between two writes to one stream (0: every event is written at once).
        self.write_interval = write_interval
        # Groups of held streams by release time: every hold lasts ``write_interval`` from its start, so a FIFO
        # stays sorted, and one task releases them (a timer per stream would cost a handle and a task wake
        # each). Holds that start within ``_join`` of each other share one group and its one wake-up.
        self._held: deque[tuple[float, list[Waiter]]] = deque()
        self._join = write_interval / 20
        self._lag = 0.0  # how late the releases run, smoothed (seconds)
        #: What a hold lasts beyond ``write_interval`` now: a worker whose loop runs behind holds longer.
        self.stretch = 0.0
        #: Whether a heartbeat interrupts a hold: only when a hold could delay it by more than a tenth of the
        #: heartbeat interval (a write interval of seconds); a shorter hold just runs out first.
        self.beats_end_holds = write_interval > interval / 10
        self._releasing = False
        self._held_added: Wake | None = None
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
        """Unregister a stream (its queued deadline is dropped when reached; until then the queue holds only the
        bare registration, not the stream's last cancel scope and through it its task)."""
        beat.open = False
        beat._scope = None
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
        for _, group in self._held:
            set_all(group, group)
        self._held.clear()

    def hold(self, waiter: Waiter) -> None:
        """Arm ``waiter``, which a stream that has just written awaits before it looks for its next events:
        it is set once ``write_interval`` has passed (released up to a tenth of it early, in groups, so that
        the releasing task wakes a few times per interval however many streams hold). Under a steady flow of
        events each stream then writes at most once per interval, carrying everything that arrived
        meanwhile: fewer writes, wake-ups and system calls per event exactly when there are many; an event
        after a quiet spell still goes out at once.

        A stream awaits its one :class:`Waiter` at every hold and the streams of a group are woken from one
        loop callback: under load thousands of streams hold at any moment, and a future apiece (with its
        iterator and callback entry) would be that many more objects for the garbage collector, made and
        dropped ten times a second per stream."""
        if self.closed:  # shutting down: nothing to hold for
            waiter.arm()
            waiter.set()
            return
        if not self._releasing:
            try:
                self._spawn(self._release)
            except ConfigurationError:  # the service stopped under the stream: no hold
                waiter.arm()
                waiter.set()
                return
            self._releasing = True
        held = self._held
        due = self._clock.monotonic() + self.write_interval + self.stretch
        if held and held[-1][0] >= due - self._join:
            group = held[-1][1]  # the group that started a moment ago (or ends later: the stretch fell)
        else:
            group = []
            held.append((due, group))
            if self._held_added is not None:
                self._held_added.set()
        waiter.arm(group)
        group.append(waiter)

    def _note_lateness(self, late: float) -> None:
        """A release ran ``late`` seconds after its time: the loop is that far behind. Holds stretch by a
        multiple of the smoothed lateness (up to twice the interval), so that a busy worker writes less
        often, each write carrying more, until it has caught up: the writes' system calls are most of what
        a stream costs, and a worker that stays saturated turns a short stall (a full garbage collection,
        CPU taken by a neighbour) into seconds of backlog."""
        self._lag += LAG_SMOOTHING * (late - self._lag)
        self.stretch = min(STRETCH_GAIN * self._lag, STRETCH_MAX * self.write_interval)

    async def _release(self) -> None:
        held = self._held
        early = self._join  # a group's last members joined up to ``_join`` after its first
        try:
            while True:
                if not held:
                    self._held_added = added = Wake()
                    try:
                        await added
                    finally:
                        self._held_added = None
                    continue
                delay = held[0][0] - early - self._clock.monotonic()
                if delay > _EPSILON:
                    await self._clock.sleep(delay)
                    continue
                self._note_lateness(-delay)
                until = self._clock.monotonic() + early + _EPSILON
                while held and held[0][0] <= until:
                    group = held.popleft()[1]
                    set_all(group, group)  # a stream gone meanwhile, or woken otherwise: skipped
        finally:
            self._releasing = False

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


class _Pending:
    """An event being worked out for a viewer class: the class's other streams wait for it."""

    __slots__ = ("data", "done", "result")

    def __init__(self, data: Mapping[str, object]) -> None:
        self.data = data
        self.done = Wake()
        self.result: _Rendered | None = None


class _ClassTable:
    """What events became for one viewer class of one project, shared by the class's open streams."""

    __slots__ = ("events", "grants", "streams")

    def __init__(self, grants: Grants) -> None:
        self.grants = grants
        self.events: dict[str, _Rendered | _Pending] = {}
        self.streams = 0


class _Marker:
    """The provider views behind one ``status:update`` marker of one project, collected once for every stream."""

    __slots__ = ("done", "event_id", "views")

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        # Every stream of the project that reaches the marker meanwhile waits on this one future: setting it
        # wakes them from C, where an anyio/asyncio Event loops over its waiters in Python.
        self.done = Wake()
        self.views: tuple[ProviderView, ...] | None = None


class EventStreams:
    """Every event stream of one service (see the module docstring)."""

    def __init__(
        self,
        source: StreamSource,
        *,
        renderer: Renderer,
        clock: Clock,
        metrics: Metrics,
        heartbeat: float,
        per_viewer: int,
        per_process: int,
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
        write_interval: float = 0.0,
    ) -> None:
        self._source = source
        self._renderer = renderer
        self._metrics = metrics
        self.caps = ConnectionLimiter(per_viewer=per_viewer, per_process=per_process)
        self.hub = StreamHub(clock=clock, interval=heartbeat, spawn=spawn, write_interval=write_interval)
        self._spawn = spawn
        # Per project with a stream open: the scope of the task that collects each marker's views as soon as
        # the marker arrives (see _start_collector).
        self._collectors: dict[str, anyio.CancelScope] = {}
        # The newest markers per project with a stream open (streams of a project see markers in one order;
        # a few are kept for streams that lag a little behind the others).
        self._markers: dict[str, dict[str, _Marker]] = {}
        self._open_per_project: dict[str, int] = {}
        # Per project with a stream open, per viewer class (by identity, the class kept alongside so an id is
        # never mistaken for a later object's): event id -> what the event became for that class.
        self._rendered: dict[str, dict[int, _ClassTable]] = {}
        self._collected = 0

    def __len__(self) -> int:
        return self.caps.count

    @property
    def markers_collected(self) -> int:
        """How many markers had their views collected (for tests and benchmarks: one per marker)."""
        return self._collected

    def open(self, viewer: Viewer, connections: ProjectConnections, last_event_id: str | None) -> Writer:
        """The body of one stream for ``viewer``: over a cap, one ``retry:`` frame and the end."""
        if not self.caps.acquire(viewer.user_id):
            _log.info("integration_status.sse.refused", reason="connection cap")

            async def refuse(write: Write) -> None:
                await write(OVERLOADED)

            return refuse

        # A partial, not a closure: a few objects less for each of thousands of streams.
        return functools.partial(self._stream, viewer, connections, last_event_id)

    async def _stream(
        self, viewer: Viewer, connections: ProjectConnections, last_event_id: str | None, write: Write
    ) -> None:
        project_id = connections.project_id
        source = self._source
        dropped = False  # ended by an error on our side (not the client going away, not shutdown)
        self._metrics.sse_connections(1)
        self._open_per_project[project_id] = self._open_per_project.get(project_id, 0) + 1
        try:
            async with source.subscribe(project_id, last_event_id=last_event_id) as subscription:
                await write(CONNECTED)
                self._start_collector(connections)
                # A stream's viewer is fixed: its class (what it may do and see) is asked once.
                grants = source.grants(viewer, project_id)
                # The content tag of the last status sent: several raw markers can render alike.
                last_tag: str | None = None
                if last_event_id is None or subscription.gap:
                    rendering = self._renderer.rendering(project_id, await source.views(connections), grants)
                    last_tag = rendering.tag
                    await write(rendering.frame(subscription.resume_id, source.now_ms()))
                    del rendering  # not kept while the stream lives
                frames = _Frames(self, viewer, connections, grants, last_tag)
                beat = self.hub.open()
                try:
                    await beat.pump(aiter(subscription), frames.render, write, _poll_of(subscription))
                except SubscriberLagging as exc:
                    # End the stream; the client reconnects and resumes with Last-Event-ID.
                    _log.info("integration_status.sse.dropped", error=type(exc).__name__)
                    dropped = True
                finally:
                    self.hub.close_stream(beat)
                    self._leave(project_id, grants)
        except BackendUnavailable as exc:
            # The store stopped answering (its subscription, or the views behind a status): the stream ends
            # with a hint to come back once it may be back, and resumes with Last-Event-ID then.
            _log.info("integration_status.sse.dropped", error=type(exc).__name__)
            dropped = True
            with anyio.move_on_after(1):  # bounded: a client that stopped reading
                await write(STORE_GONE)
        except Exception as exc:
            dropped = not isinstance(exc, OSError)  # OSError: the connection broke under the write
            raise
        finally:
            self.caps.release(viewer.user_id)
            self._metrics.sse_connections(-1, dropped=dropped)
            left = self._open_per_project.get(project_id, 1) - 1
            if left > 0:
                self._open_per_project[project_id] = left
            else:
                self._open_per_project.pop(project_id, None)
                self._markers.pop(project_id, None)
                self._rendered.pop(project_id, None)
                collector = self._collectors.pop(project_id, None)
                if collector is not None:
                    collector.cancel()

    def _start_collector(self, connections: ProjectConnections) -> None:
        """Once per project with a stream open: a task of the service that collects each marker's views the
        moment the marker arrives. The streams then find the views ready and render at once, instead of the
        first stream of each class collecting them (behind a store round trip) while the class's other streams
        wait for it, each woken twice. It is only a head start: a collector that falls behind or loses the
        store ends, and the streams collect for themselves as before."""
        project_id = connections.project_id
        if project_id in self._collectors:
            return
        scope = self._collectors[project_id] = anyio.CancelScope()

        async def collect() -> None:
            try:
                with scope:
                    async with self._source.subscribe(project_id) as subscription:
                        async for stored in subscription:
                            if project_id not in self._open_per_project:
                                return  # the last stream left: its cancellation is on its way
                            if stored.data.get("type") == "status:update":
                                await self._marker_views(stored, connections)
            except (SubscriberLagging, BackendUnavailable):
                pass
            except Exception:  # a bug here must not end the service's task group
                _log.exception("integration_status.sse.collector_failed", project_id=project_id)
            finally:
                if self._collectors.get(project_id) is scope:
                    del self._collectors[project_id]

        try:
            self._spawn(collect)
        except ConfigurationError:  # the service is not running: the streams collect for themselves
            del self._collectors[project_id]

    def _rendered_for(self, project_id: str, grants: Grants) -> dict[str, _Rendered | _Pending]:
        """Event id -> what the event became for the viewer class ``grants`` in ``project_id``: one table per
        class, shared by its open streams (keyed by the class's identity, kept alongside so an id is never
        taken for a later object's) and dropped with the last of them (:meth:`_leave`). A policy that answers
        each viewer with a new object gives each stream a small table of its own."""
        classes = self._rendered.setdefault(project_id, {})
        entry = classes.get(id(grants))
        if entry is None or entry.grants is not grants:
            entry = classes[id(grants)] = _ClassTable(grants)
        entry.streams += 1
        return entry.events

    def _leave(self, project_id: str, grants: Grants) -> None:
        classes = self._rendered.get(project_id)
        entry = None if classes is None else classes.get(id(grants))
        if classes is None or entry is None or entry.grants is not grants:
            return
        entry.streams -= 1
        if entry.streams <= 0:
            del classes[id(grants)]

    async def _render(
        self, stored: StoredEvent, viewer: Viewer, connections: ProjectConnections, grants: Grants
    ) -> _Rendered:
        """What ``stored`` becomes for a viewer of class ``grants``: (the frame or None, the content tag of a
        ``status:update`` or None, the event's data)."""
        project_id = connections.project_id
        kind = stored.data.get("type")
        if kind == "status:update":
            views = await self._marker_views(stored, connections)
            rendering = self._renderer.rendering(project_id, views, grants)
            ts = _ts(stored.data.get("ts"), self._source.now_ms())
            return rendering.frame(stored.id, ts), rendering.tag, stored.data
        provider = EVENT_PROVIDER.get(str(kind))
        if provider is None:
            return None, None, stored.data
        visibility = self._source.visibility(viewer, project_id, provider)
        return self._renderer.event_frame(project_id, stored, visibility), None, stored.data

    async def _marker_views(
        self, stored: StoredEvent, connections: ProjectConnections
    ) -> tuple[ProviderView, ...]:
        """The views behind a marker, collected by the first stream that reaches it; the others wait for that
        collection instead of starting their own."""
        markers = self._markers.setdefault(connections.project_id, {})
        marker = markers.get(stored.id)
        if marker is not None:
            await marker.done.wait()
            if marker.views is not None:
                return marker.views
            return await self._source.views(connections)  # the first collection failed: try for ourselves
        if len(markers) >= MARKERS_PER_PROJECT:
            del markers[next(iter(markers))]
        marker = markers[stored.id] = _Marker(stored.id)
        try:
            marker.views = await self._source.views(connections)
            self._collected += 1
        finally:
            marker.done.set()
        return marker.views

    def shutdown(self) -> None:
        """End every open stream now, and any stream opened later at once."""
        self.hub.shutdown()

    def reopen(self) -> None:
        """The service starts (again): streams may open."""
        self.hub.reopen()


class _Frames:
    """What one stream sends for each event: one object with the stream's class and last status tag, instead
    of closures (each a function, its cells and their tuple: some twenty objects more per stream for the
    collector to walk on every full collection).

    What an event becomes for a viewer class is worked out by the first stream of that class to reach it; the
    others only look it up (no coroutine on that path), or wait for it while it is being worked out (a
    marker's views may take a round trip to the store)."""

    __slots__ = ("_connections", "_grants", "_last_tag", "_rendered", "_streams", "_viewer")

    def __init__(
        self,
        streams: EventStreams,
        viewer: Viewer,
        connections: ProjectConnections,
        grants: Grants,
        last_tag: str | None,
    ) -> None:
        self._streams = streams
        self._viewer = viewer
        self._connections = connections
        self._grants = grants
        self._rendered = streams._rendered_for(connections.project_id, grants)
        self._last_tag = last_tag  # the content tag of the last status sent: several markers can render alike

    def render(self, stored: StoredEvent) -> bytes | Awaitable[bytes | None] | None:
        hit = self._rendered.get(stored.id)
        if hit is None:
            return self._work_out(stored)
        if isinstance(hit, _Pending):
            if hit.data is stored.data or hit.data == stored.data:
                return self._wait_for(hit, stored)
            return self._work_out(stored)
        if not (hit[2] is stored.data or hit[2] == stored.data):
            return self._work_out(stored)
        return self._sent(hit)

    async def _work_out(self, stored: StoredEvent) -> bytes | None:
        rendered = self._rendered
        pending = _Pending(stored.data)
        if len(rendered) >= RENDERED_PER_CLASS:
            del rendered[next(iter(rendered))]
        rendered[stored.id] = pending
        try:
            hit = pending.result = await self._streams._render(
                stored, self._viewer, self._connections, self._grants
            )
        finally:
            if rendered.get(stored.id) is pending:
                if pending.result is None:
                    del rendered[stored.id]  # failed or cancelled: the waiters work it out
                else:
                    rendered[stored.id] = pending.result
            pending.done.set()
        return self._sent(hit)

    async def _wait_for(self, pending: _Pending, stored: StoredEvent) -> bytes | None:
        await pending.done
        if pending.result is None:
            return await self._work_out(stored)
        return self._sent(pending.result)

    def _sent(self, hit: _Rendered) -> bytes | None:
        frame, tag = hit[0], hit[1]
        if tag is not None:  # a status:update: only what changed for this viewer
            if tag == self._last_tag:
                return None
            self._last_tag = tag
        return frame


def _batch(
    first: StoredEvent, second: StoredEvent, poll: Callable[[], StoredEvent | None]
) -> list[StoredEvent]:
    """What is queued now, bounded (:data:`BATCH_LIMIT`); what arrives while it renders waits in the bus. A
    function of its own, so that the list goes with the call instead of living on in the stream's frame."""
    batch = [first, second]
    while len(batch) < BATCH_LIMIT and (more := poll()) is not None:
        batch.append(more)
    return batch


async def _joined(
    batch: list[StoredEvent], render: Callable[[StoredEvent], bytes | Awaitable[bytes | None] | None]
) -> bytes | None:
    """The frames of ``batch``, in order, as one chunk (None when none of them is sent)."""
    frames: list[bytes] = []
    for event in batch:
        made = render(event)
        if made is not None and not isinstance(made, bytes):
            made = await made
        if made is not None:
            frames.append(made)
    return b"".join(frames) if frames else None


def _poll_of(subscription: Subscription) -> Callable[[], StoredEvent | None] | None:
    """The subscription's ``poll()`` (see the Subscription protocol), when it offers a plain (not async) one."""
    poll = getattr(subscription, "poll", None)
    if not callable(poll) or inspect.iscoroutinefunction(poll):
        return None
    return poll  # type: ignore[no-any-return]


def _ts(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
