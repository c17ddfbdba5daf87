"""Events on Redis Streams: one stream per project, one blocking reader per project per worker.

Publishing is ``XADD {prefix}:events:{<project>} MAXLEN ~ n`` and its expiry, in one script; the entry id
("1732600000000-0") is the SSE id, so a client can resume with ``Last-Event-ID`` on any worker. Each worker runs
ONE ``XREAD BLOCK`` loop per project that has local subscribers and fans the entries out to their bounded queues;
a subscriber that falls a full queue behind is dropped (:class:`SubscriberLagging`) rather than slowing everyone
else down.

How nothing is lost between replay and live: a subscriber is registered with the reader in the same step (no
await between) as it reads the reader's cursor ``C``. Everything after ``C`` reaches its queue; everything
from its starting point up to ``C`` is read with ``XRANGE``; ids at or before the last one handed out are
skipped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc

from integration_status._logging import get_logger
from integration_status.backends._redis_base import Shared, dumps, to_ms
from integration_status.core.wake import Wake
from integration_status.exceptions import (
    BackendUnavailable,
    ConfigurationError,
    SubscriberLagging,
)
from integration_status.protocols import StoredEvent

_log = get_logger(__name__)

StreamId = tuple[int, int]
_ZERO: StreamId = (0, 0)


#: How long a project's reader keeps retrying failed reads before its subscribers are told the store is gone
#: (seconds on the engine's clock), and the pause between retries after the first (which is at once).
READ_OUTAGE = 3.0
READ_RETRY = 0.1

#: Both halves of a stream id are unsigned 64-bit numbers; Redis refuses anything larger.
_ID_PART_LIMIT = 2**64


def parse_id(text: str) -> StreamId | None:
    """A Redis stream id as a comparable pair, or None when it is not one (also when a half does not fit in
    64 bits: Redis would refuse it, and a client resending it must get a fresh start, not a broken stream).

    >>> parse_id("1732600000000-3"), parse_id("1732600000000"), parse_id("abc"), parse_id(f"{2**64}-0")
    ((1732600000000, 3), (1732600000000, 0), None, None)
    """
    ms, _, seq = text.partition("-")
    if not (ms.isascii() and ms.isdigit() and (not seq or (seq.isascii() and seq.isdigit()))):
        return None
    if len(ms) > 20 or len(seq) > 20:  # before int(): a megabyte of digits is not worth converting
        return None
    sid = int(ms), int(seq or 0)
    return sid if sid[0] < _ID_PART_LIMIT and sid[1] < _ID_PART_LIMIT else None


def format_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


def _decode(entries: Any) -> list[tuple[StreamId, StoredEvent | None]]:
    """Stream entries as the driver returns them (``[(id, {field: value})]``) -> (id, event or None if
    unreadable); entries with an id that is not a stream id are left out."""
    out: list[tuple[StreamId, StoredEvent | None]] = []
    for entry_id, fields in entries or ():
        sid = parse_id(str(entry_id))
        if sid is None:
            continue
        try:
            event: StoredEvent | None = StoredEvent(id=str(entry_id), data=json.loads(fields["data"]))
        except (KeyError, TypeError, ValueError):
            _log.warning("integration_status.redis.events.unreadable", id=str(entry_id))
            event = None
        out.append((sid, event))
    return out


# KEYS[1] the project's stream. ARGV: maxlen, the event JSON, ms to keep an idle stream. The append and the
# expiry in one step (a script: one slot, so also on a Redis Cluster); streams of projects nobody touches any
# more disappear on their own.
_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return id
"""

# KEYS[1] the project's stream, KEYS[2..] a webhook delivery's log keys in order. ARGV[1] MAXLEN, ARGV[2] the
# stream's TTL (ms), ARGV[3] how long to remember each delivery key (ms), ARGV[4..] the events. The keys are
# recorded in order while each is new; only when every one was, the events are appended (their ids returned).
# One step: a delivery is never recorded without its events, nor its events published twice.
_PUBLISH_DELIVERY = """
for i = 2, #KEYS do
  if not redis.call('SET', KEYS[i], '1', 'NX', 'PX', ARGV[3]) then
    return false
  end
end
local ids = {}
for j = 4, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[j])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return ids
"""


class _Subscriber:
    """One local subscriber's bounded queue; fed by the reader without ever waiting."""

    def __init__(self, size: int) -> None:
        self.size = size
        # A list, not a deque: an empty deque costs ~600 bytes, and thousands of subscribers sit idle with
        # none or one event queued (pop(0) is cheap then).
        self.queue: list[tuple[StreamId, StoredEvent]] = []  # with each event its parsed id
        self.error: tuple[type[Exception], str] | None = None
        self.closed = False
        #: The id of the last event handed out (or where the subscription starts): the live queue may hold
        #: entries at or before it, which are skipped.
        self.cursor: StreamId = _ZERO
        self._wake: Wake | None = None  # only while the subscriber waits

    def offer(self, queued: tuple[StreamId, StoredEvent]) -> bool:
        """Queue one (id, event) pair, the same object for every subscriber; False when the queue is full."""
        if len(self.queue) >= self.size:
            return False
        self.queue.append(queued)
        if self._wake is not None:
            self._wake.set()
        return True

    def fail(self, kind: type[Exception], message: str) -> None:
        self.error = (kind, message)
        self.queue.clear()
        if self._wake is not None:
            self._wake.set()

    def close(self) -> None:
        self.closed = True
        if self._wake is not None:
            self._wake.set()

    def take(self) -> StoredEvent | None:
        """The next queued event after :attr:`cursor`, or None (nothing queued, or an error or the end that
        ``next`` reports)."""
        if self.error is not None:
            return None
        queue = self.queue
        while queue:
            sid, event = queue.pop(0)
            if sid > self.cursor:
                self.cursor = sid
                return event
        return None

    async def next(self) -> StoredEvent:
        """The next event after :attr:`cursor` (an entry at or before it, which a reader behind a resuming
        client's id can queue, is skipped), waiting for it."""
        while True:
            if self.error is not None:
                raise self.error[0](self.error[1])
            queue = self.queue
            while queue:
                sid, event = queue.pop(0)
                if sid > self.cursor:
                    self.cursor = sid
                    return event
            if self.closed:
                raise StopAsyncIteration
            self._wake = wake = Wake()
            try:
                # The wake is this subscriber's alone, so a cancellation here is always its own task's:
                # ``bare()`` spares the generator of ``await wake`` (see Wake.bare).
                await wake.bare()
            finally:
                self._wake = None


class _Reader:
    def __init__(self, project_id: str, key: str, cursor: StreamId) -> None:
        self.project_id = project_id
        self.key = key
        self.cursor = cursor
        self.subscribers: set[_Subscriber] = set()
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()


class _Lookup:
    """One ``XREVRANGE`` in flight for a project, shared by every caller that wants its answer meanwhile."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = Wake()
        self.result: StreamId | None = None
        self.error: str | None = None


class RedisSubscription:
    """Events of one project in id order: first the replay after ``Last-Event-ID``, then live events."""

    def __init__(
        self,
        bus: RedisEventBus,
        reader: _Reader,
        sub: _Subscriber,
        *,
        gap: bool,
        start: StreamId,
        backlog: list[tuple[StreamId, StoredEvent]],
        until: StreamId | None,
    ) -> None:
        self.gap = gap
        #: The newest id before the events this subscription delivers (see the Subscription protocol).
        self.resume_id = format_id(start) if start != _ZERO else None
        self._bus = bus
        self._reader = reader
        self._sub = sub
        sub.cursor = start  # the last id handed out (or the starting point)
        self._backlog = backlog[::-1]  # reversed: pop() takes the oldest; a list, lighter than a deque
        self._until = until  # replay with XRANGE up to here, then switch to the live queue

    def __aiter__(self) -> AsyncIterator[StoredEvent]:
        return self

    def __anext__(self) -> Awaitable[StoredEvent]:
        """The next event: the subscriber's own wait once the replay is over, with no coroutine of this
        subscription's around it (thousands of streams wait at once; see Wake.bare)."""
        if self._backlog or self._until is not None:
            return self._replaying()
        return self._sub.next()

    async def _replaying(self) -> StoredEvent:
        sub = self._sub
        while self._backlog or self._until is not None:
            if self._backlog:
                return self._hand_out(*self._backlog.pop())
            if self._until is not None:
                if sub.cursor < self._until:
                    page = await self._bus._range(self._reader.key, sub.cursor, self._until)
                    if page:
                        self._backlog = page[::-1]  # the backlog is empty here
                        continue
                self._until = None
        return await sub.next()

    def poll(self) -> StoredEvent | None:
        """The next event if one is already here, without waiting; None when the next one must be waited
        or read for (a replay page, an error or the end: iterating then says which)."""
        if self._backlog:
            return self._hand_out(*self._backlog.pop())
        if self._until is not None:
            return None
        return self._sub.take()

    def _hand_out(self, sid: StreamId, event: StoredEvent) -> StoredEvent:
        self._sub.cursor = sid
        return event


class RedisEventBus:
    """The :class:`~integration_status.protocols.EventBus` on Redis Streams (see the module docstring)."""

    def __init__(
        self,
        shared: Shared,
        *,
        maxlen: int = 500,
        ttl: float = 3_600.0,
        queue_size: int = 256,
        block: float = 0.1,
        batch: int = 100,
    ) -> None:
        self._s = shared
        self._maxlen = maxlen
        self._ttl = ttl
        self._queue_size = queue_size
        self._block_ms = to_ms(block)
        self._batch = batch
        self._readers: dict[str, _Reader] = {}
        self._lookups: dict[str, _Lookup] = {}
        self._running = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._publish = shared.client.register_script(_PUBLISH)
        self._publish_delivery = shared.client.register_script(_PUBLISH_DELIVERY)

    # --- lifecycle (driven by the engine) ---

    def _attach(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg

    def _detach(self) -> None:
        self._tg = None

    def subscriber_count(self, project_id: str | None = None) -> int:
        """How many local subscribers this worker has (for one project, or in all)."""
        if project_id is not None:
            reader = self._readers.get(project_id)
            return 0 if reader is None else len(reader.subscribers)
        return sum(len(r.subscribers) for r in self._readers.values())

    def reader_count(self) -> int:
        """How many ``XREAD`` reader tasks this worker is running (one per project with local subscribers)."""
        return self._running

    # --- publishing ---

    async def publish(self, project_id: str, event: Mapping[str, Any]) -> str:
        """Append an event to the project's stream; its stream id, used verbatim as the SSE id."""
        key = self._s.tagged("events", project_id)
        args: list[str | int] = [self._maxlen, dumps(dict(event)), to_ms(self._ttl)]
        with self._s.errors("publishing an event"):
            entry_id = await self._publish(keys=[key], args=args)
        return str(entry_id)

    async def publish_delivery(
        self, project_id: str, events: Sequence[Mapping[str, Any]], delivery_keys: Sequence[str], ttl: float
    ) -> list[str] | None:
        """Record a webhook delivery's log keys (as ``RedisDeliveryLog.first_seen_all`` does) and, when every
        one was new, append ``events`` to the project's stream, in one script: their ids, or None when a key
        was already known (nothing appended). A script that timed out here may still run on a server that
        resumes: it then records and publishes together, so the provider's retry is a duplicate and the
        events go out once either way.

        On a single Redis the keys are the delivery log's own (``{prefix}:delivery:<key>``). On a cluster they
        carry the project's hash tag (``{prefix}:delivery:{<project>}:<key>``), in the slot of its stream: a
        delivery belongs to one project (its integration is found from the body), so its replay keys may live
        beside that project's events."""
        stream = self._s.tagged("events", project_id)
        if self._s.cluster:
            logged = [self._s.tagged("delivery", project_id, k) for k in delivery_keys]
        else:
            logged = [self._s.key("delivery", k) for k in delivery_keys]
        keys = [stream, *logged]
        args: list[str | int] = [
            self._maxlen,
            to_ms(self._ttl),
            to_ms(ttl),
            *(dumps(dict(e)) for e in events),
        ]
        with self._s.errors("publishing a webhook's events"):
            ids = await self._publish_delivery(keys=keys, args=args)
        return None if ids is None else [str(entry_id) for entry_id in ids]

    # --- subscribing ---

    async def ready(self, project_id: str) -> None:
        """Raise BackendUnavailable when the project's stream cannot be read now: called before an event
        stream answers 200, so that an outage is a 503 instead of a stream that breaks after its headers.
        While the project's reader is running (it reads the stream without pause), that is proof enough: a
        burst of thousands of streams opening costs no round trip each."""
        reader = self._readers.get(project_id)
        if reader is not None and not reader.done.is_set():
            return
        await self._latest(project_id, "opening an event stream")

    async def _latest(self, project_id: str, doing: str) -> StreamId:
        """The newest id in the project's stream (``0-0`` when empty), asked with ONE ``XREVRANGE`` however
        many callers want it at once: thousands of browsers reconnecting to a restarted worker must not take
        the whole connection pool (and fail on it) before the project's reader runs."""
        while True:
            lookup = self._lookups.get(project_id)
            if lookup is None:
                lookup = self._lookups[project_id] = _Lookup()
                try:
                    with self._s.errors(doing):
                        newest = _decode(
                            await self._s.client.xrevrange(
                                self._s.tagged("events", project_id), "+", "-", count=1
                            )
                        )
                    lookup.result = newest[0][0] if newest else _ZERO
                except BackendUnavailable as exc:
                    lookup.error = str(exc)
                    raise
                finally:
                    del self._lookups[project_id]
                    lookup.done.set()
                return lookup.result
            await lookup.done.wait()
            if lookup.error is not None:
                raise BackendUnavailable(lookup.error)
            if lookup.result is not None:
                return lookup.result
            # The caller that asked was cancelled before the answer: ask again.

    @asynccontextmanager
    async def subscribe(
        self, project_id: str, *, last_event_id: str | None = None
    ) -> AsyncIterator[RedisSubscription]:
        """Events of one project. With ``last_event_id``, first every later entry still in the stream; if that
        id is unparseable or no longer in the stream, ``gap`` is True and only new events follow."""
        tg = self._tg
        if tg is None:
            raise ConfigurationError("the Redis event bus runs inside `async with engine:`; enter it first")
        key = self._s.tagged("events", project_id)
        after = None if last_event_id is None else parse_id(last_event_id)
        reader = self._readers.get(project_id)
        if reader is not None and not reader.done.is_set():
            latest = reader.cursor  # the running reader hands this subscriber everything after it
        else:
            latest = await self._latest(project_id, "subscribing to events")
            reader = self._readers.get(project_id)  # another subscriber may have started one meanwhile

        sub = _Subscriber(self._queue_size)
        if reader is None or reader.done.is_set():
            reader = self._readers[project_id] = _Reader(project_id, key, latest)
            fresh = True
        else:
            fresh = False
        reader.subscribers.add(sub)
        registered = reader.cursor  # the queue gets everything after this
        try:
            if fresh:
                await tg.start(self._run, reader)
            gap, start, backlog = last_event_id is not None, latest, list[tuple[StreamId, StoredEvent]]()
            if after is not None:
                # Inclusive of ``after``: seeing it proves nothing between it and the next entry was trimmed.
                with self._s.errors("replaying events"):
                    page = _decode(
                        await self._s.client.xrange(
                            key, format_id(after), format_id(max(after, registered)), count=self._batch + 1
                        )
                    )
                if page and page[0][0] == after:
                    gap, start = False, after
                    backlog = [(sid, e) for sid, e in page[1:] if e is not None]
            until = registered if registered > start else None
            yield RedisSubscription(self, reader, sub, gap=gap, start=start, backlog=backlog, until=until)
        finally:
            reader.subscribers.discard(sub)
            if not reader.subscribers:
                await self._stop(reader)

    async def _stop(self, reader: _Reader) -> None:
        if self._readers.get(reader.project_id) is reader:
            del self._readers[reader.project_id]
        reader.scope.cancel()
        # Wait for the reader to be gone, so "last subscriber left" means "no reader task" (and no leaked
        # connection), even when this subscriber is itself being cancelled.
        with anyio.CancelScope(shield=True):
            await reader.done.wait()

    async def _range(self, key: str, after: StreamId, until: StreamId) -> list[tuple[StreamId, StoredEvent]]:
        with self._s.errors("replaying events"):
            page = _decode(
                await self._s.client.xrange(key, f"({format_id(after)}", format_id(until), count=self._batch)
            )
        return [(sid, e) for sid, e in page if e is not None]

    async def _run(self, reader: _Reader, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._running += 1
        try:
            with reader.scope:
                task_status.started()
                await self._read(reader)
        except BackendUnavailable as exc:
            _log.warning("integration_status.redis.events.reader_failed", error=str(exc))
            for sub in reader.subscribers:
                sub.fail(BackendUnavailable, str(exc))
        except Exception:
            # A bug here must end this project's subscriptions, not the engine's task group and every reader.
            _log.exception("integration_status.redis.events.reader_crashed", project_id=reader.project_id)
            for sub in reader.subscribers:
                sub.fail(BackendUnavailable, "the event reader stopped unexpectedly")
        finally:
            self._running -= 1
            if self._readers.get(reader.project_id) is reader:
                del self._readers[reader.project_id]
            for sub in reader.subscribers:
                sub.close()
            reader.done.set()

    async def _read(self, reader: _Reader) -> None:
        clock = self._s.clock
        failing_since: float | None = None  # when the reads started to fail (service clock)
        while True:
            try:
                with self._s.errors("reading events"):
                    # One stream per XREAD: on a cluster it goes straight to the node holding its slot.
                    route = await self._s.reader_route(reader.key)
                    reply: Any = await self._s.reader.execute_command(
                        "XREAD",
                        "COUNT",
                        self._batch,
                        "BLOCK",
                        self._block_ms,
                        "STREAMS",
                        reader.key,
                        format_id(reader.cursor),
                        **route,
                    )
            except BackendUnavailable:
                # A failed read is retried on a fresh connection, from the same cursor (nothing is lost): at
                # once, then every READ_RETRY seconds. A connection reset by a proxy, or replies read late by
                # a worker whose loop lags behind its socket timeout, must not end every stream of the
                # project. Reads failing for READ_OUTAGE seconds are an outage.
                now = clock.monotonic()
                if failing_since is None:
                    failing_since = now
                    continue
                if now - failing_since >= READ_OUTAGE:
                    raise
                await clock.sleep(READ_RETRY)
                continue
            failing_since = None
            # RESP2 answers [[stream, entries]], RESP3 {stream: entries}; nothing new within BLOCK is empty.
            streams = reply.items() if isinstance(reply, dict) else (reply or ())
            for _stream, entries in streams:
                for sid, event in _decode(entries):
                    reader.cursor = sid
                    if event is not None:
                        self._fan_out(reader, (sid, event))

    def _fan_out(self, reader: _Reader, queued: tuple[StreamId, StoredEvent]) -> None:
        for sub in list(reader.subscribers):
            if not sub.offer(queued):
                reader.subscribers.discard(sub)
                sub.fail(SubscriberLagging, f"subscriber fell {sub.size} events behind and was dropped")
                _log.info("integration_status.redis.events.subscriber_dropped", project_id=reader.project_id)
