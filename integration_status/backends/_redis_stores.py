"""Redis implementations of the cache, idempotency, rate-limit and webhook-delivery stores.

Every multi-step decision runs as ONE Lua script, so it is atomic across all workers sharing the Redis.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import anyio
import anyio.abc
import structlog
from cachetools import TTLCache

from integration_status.backends._redis_base import Shared, dumps, to_ms
from integration_status.exceptions import BackendUnavailable, InvalidModel
from integration_status.models import Problem
from integration_status.protocols import BeginResult, CacheEntry, RateDecision, StoredResponse
from integration_status.snapshot import ProviderSnapshot

_log = structlog.get_logger()

# --- cache --------------------------------------------------------------------------------------------------

# KEYS[1] lock key; ARGV[1] owner token. Only the owner may release.
_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] the entry. ARGV[1] its new value ('' deletes it), ARGV[2] ms to keep it, ARGV[3] the invalidation
# channel, ARGV[4] the message. Written and announced in one step: no worker can see the write without the
# announcement following it.
_WRITE_AND_ANNOUNCE = """
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

#: How often the invalidation listener pings Redis on its channel (seconds, real time).
PING_INTERVAL: Final = 1.0
#: A channel silent (not even a pong) for this long is taken as lost.
CHANNEL_TIMEOUT: Final = 3.0
#: How long a copy stays in the near cache at most, even with nothing announced (Redis may expire the key).
NEAR_MAX_AGE: Final = 60.0
#: The most a listener waits between attempts to get its channel back (seconds, real time).
MAX_BACKOFF: Final = 2.0


def entry_to_json(entry: CacheEntry) -> dict[str, Any]:
    """The stored form of a cache entry (lossless; it carries sensitive values and stays on the server)."""
    return {
        "v": 1,
        "snapshot": entry.snapshot.to_json(),
        "freshUntil": entry.fresh_until,
        "changedAt": entry.changed_at.isoformat(),
        "checkedAt": entry.checked_at,
        "error": None if entry.error is None else entry.error.to_json(),
        "errorAt": entry.error_at,
    }


def entry_from_json(data: Mapping[str, Any]) -> CacheEntry:
    """Inverse of :func:`entry_to_json`; anything else raises InvalidModel."""
    try:
        return CacheEntry(
            snapshot=ProviderSnapshot.from_json(data["snapshot"]),
            fresh_until=float(data["freshUntil"]),
            changed_at=datetime.fromisoformat(data["changedAt"]),
            checked_at=float(data["checkedAt"]),
            error=None if data["error"] is None else Problem.from_json(data["error"]),
            error_at=None if data["errorAt"] is None else float(data["errorAt"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidModel(f"not a cache entry: {type(exc).__name__}") from None


def _tagged(key: str) -> tuple[str, str]:
    """A cache key ``"{project}:{provider}"`` as (hash tag, rest): a project's entries share one cluster slot.

    >>> _tagged("proj_1:github"), _tagged("plain")
    (('proj_1', ':github'), ('plain', ''))
    """
    project, sep, provider = key.rpartition(":")
    return (project, sep + provider) if sep else (key, "")


class RedisCacheStore:
    """Raw provider snapshots shared by all workers, with a near cache in each worker in front of them.

    Entries live at ``{prefix}:cache:{<project>}:<provider>`` (the project in braces: one Redis Cluster slot
    per project), expiring after ``keep_for``; ``try_lock``/``unlock`` give the core's cache its cross-worker
    single-flight at ``{prefix}:lock:{<project>}:<provider>``.

    The near cache: every write is announced on the channel ``{prefix}:invalidate`` in the same script that
    makes it, and every worker's :meth:`listen` task drops its copy of an announced key. While that channel
    is up (``coherent``), a key read once is answered from the worker's copy with no round trip until it is
    announced (or :data:`NEAR_MAX_AGE` passes), and ``generation`` counts every change this worker is told
    of, so ``SnapshotCache`` may reuse views as it does for an in-process store. A worker whose channel breaks
    or falls silent (no pong for :data:`CHANNEL_TIMEOUT` seconds) empties its copies and reads Redis on every
    request until it has subscribed again.
    """

    #: Other processes write these entries too.
    shared = True

    def __init__(self, shared: Shared, *, near_size: int = 10_000) -> None:
        self._s = shared
        self._unlock = shared.client.register_script(_COMPARE_AND_DELETE)
        self._write = shared.client.register_script(_WRITE_AND_ANNOUNCE)
        self._channel = shared.key("invalidate")
        self._origin = uuid.uuid4().hex  # this worker's writes, which it need not hear about again
        self._near: TTLCache[str, CacheEntry | None] = TTLCache(
            maxsize=max(1, near_size), ttl=NEAR_MAX_AGE, timer=shared.clock.monotonic
        )
        #: Whether every change made elsewhere is being reported to this worker (its channel is up).
        self.coherent = False
        #: Grows with every change this worker makes or is told of, and whenever ``coherent`` changes.
        self.generation = 0
        # Grows with what this worker hears (and trust changes): a read that overlapped one is not kept.
        self._heard = 0
        self._pubsub: Any = None
        self._stopping = False

    def _key(self, kind: str, key: str) -> str:
        tag, rest = _tagged(key)
        return f"{self._s.prefix}:{kind}:{{{tag}}}{rest}"

    def _parse(self, key: str, raw: str | bytes | None) -> CacheEntry | None:
        if raw is None:
            return None
        try:
            return entry_from_json(json.loads(raw))
        except ValueError:  # json.JSONDecodeError and InvalidModel are both ValueErrors
            # An entry written by an incompatible version is a miss, not an outage: the next refresh
            # overwrites it.
            _log.warning("integration_status.redis.cache.unreadable", key=key)
            return None

    def _keep(self, key: str, entry: CacheEntry | None, heard: int) -> None:
        """Keep what Redis answered unless something was announced meanwhile (it may be older than that)."""
        if self.coherent and heard == self._heard:
            self._near[key] = entry
        else:
            self._near.pop(key, None)

    async def load(self, key: str) -> CacheEntry | None:
        if self.coherent and key in self._near:
            return self._near[key]
        heard = self._heard
        with self._s.errors("reading the provider cache"):
            raw = await self._s.client.get(self._key("cache", key))
        entry = self._parse(key, raw)
        self._keep(key, entry, heard)
        return entry

    async def load_many(self, keys: Sequence[str]) -> list[CacheEntry | None]:
        """:meth:`load` for several keys: the near copies, and ONE ``MGET`` for the rest (one project's keys
        share a slot, so this works on a cluster too)."""
        near = self._near
        found: dict[str, CacheEntry | None] = {}
        if self.coherent:
            for key in keys:
                if key in near:
                    found[key] = near[key]
        missing = [key for key in keys if key not in found]
        if missing:
            heard = self._heard
            with self._s.errors("reading the provider cache"):
                raws = await self._s.client.mget([self._key("cache", key) for key in missing])
            for key, raw in zip(missing, raws, strict=True):
                found[key] = entry = self._parse(key, raw)
                self._keep(key, entry, heard)
        return [found[key] for key in keys]

    async def save(self, key: str, entry: CacheEntry, *, keep_for: float) -> None:
        await self._announced_write(key, entry, keep_for, "writing the provider cache")

    async def delete(self, key: str) -> None:
        await self._announced_write(key, None, 0.0, "invalidating the provider cache")

    async def _announced_write(self, key: str, entry: CacheEntry | None, keep_for: float, doing: str) -> None:
        heard = self._heard
        value = "" if entry is None else dumps(entry_to_json(entry))
        args: list[str | int] = [value, to_ms(keep_for), self._channel, f"{self._origin} {key}"]
        try:
            with self._s.errors(doing):
                await self._write(keys=[self._key("cache", key)], args=args)
        except BaseException:
            self._near.pop(key, None)  # it may or may not have been written
            self.generation += 1
            raise
        self.generation += 1
        if entry is None:
            self._near.pop(key, None)
        else:
            self._keep(key, entry, heard)

    async def try_lock(self, key: str, ttl: float) -> str | None:
        token = uuid.uuid4().hex
        with self._s.errors("taking a refresh lock"):
            taken = await self._s.client.set(self._key("lock", key), token, nx=True, px=to_ms(ttl))
        return token if taken else None

    async def unlock(self, key: str, token: str) -> None:
        with self._s.errors("releasing a refresh lock"):
            await self._unlock(keys=[self._key("lock", key)], args=[token])

    # --- the invalidation channel ---

    def _trust(self, coherent: bool) -> None:
        """Start or stop trusting the near cache; either way it starts empty."""
        self._near.clear()
        self.coherent = coherent
        self._heard += 1
        self.generation += 1

    def _hear(self, data: object) -> None:
        origin, _, key = str(data).partition(" ")
        if origin == self._origin:
            return  # our own write: the copy was updated when it was made
        self._heard += 1
        self.generation += 1
        self._near.pop(key, None)

    async def listen(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the invalidation listener until cancelled: subscribe, trust the near cache while the channel
        answers, distrust it and subscribe again (with backoff) when it does not. ``task_status`` is set once
        the first attempt to subscribe has succeeded or failed."""
        backoff = 0.05
        first = True
        self._stopping = False
        while not self._stopping:
            pubsub = self._pubsub = self._s.reader.pubsub()
            try:
                try:
                    await self._subscribe(pubsub)
                finally:
                    if first:
                        first = False
                        task_status.started()
                backoff = 0.05
                await self._follow(pubsub)
            except BackendUnavailable as exc:
                if self._stopping:
                    break
                _log.warning("integration_status.redis.cache.channel_lost", error=str(exc))
            except Exception:
                # A bug here must cost this worker its near cache, not the engine's task group.
                _log.exception("integration_status.redis.cache.listener_crashed")
            finally:
                if self.coherent:
                    self._trust(False)
                await self._drop(pubsub)
            await anyio.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)

    async def stop(self) -> None:
        """End :meth:`listen` by closing its connection (its read then fails and it returns): the driver's
        read can outlive a cancellation, so the engine does not rely on cancelling it."""
        self._stopping = True
        if self._pubsub is not None:
            await self._drop(self._pubsub)

    async def _drop(self, pubsub: Any) -> None:
        """Close the channel's connection without the PubSub's own ``aclose`` (which takes a lock that a
        cancelled read can leave waiting): shielded, as the listener may be being cancelled, and bounded."""
        connection, pubsub.connection = pubsub.connection, None
        if connection is None:
            return
        with anyio.move_on_after(CHANNEL_TIMEOUT, shield=True), contextlib.suppress(Exception):
            await connection.disconnect(nowait=True)
            await self._s.reader.connection_pool.release(connection)

    async def _subscribe(self, pubsub: Any) -> None:
        with self._s.errors("subscribing to cache invalidations"), anyio.fail_after(CHANNEL_TIMEOUT):
            await pubsub.subscribe(self._channel)
            while (await pubsub.get_message(timeout=PING_INTERVAL) or {}).get("type") != "subscribe":
                pass
        self._trust(True)
        _log.debug("integration_status.redis.cache.channel_up", channel=self._channel)

    async def _follow(self, pubsub: Any) -> None:
        heard_at = anyio.current_time()
        ping_at = heard_at + PING_INTERVAL
        while not self._stopping:
            with self._s.errors("following cache invalidations"):
                message = await pubsub.get_message(timeout=PING_INTERVAL / 2)
            now = anyio.current_time()
            if message is not None:
                heard_at = now
                if message.get("type") == "message":
                    self._hear(message.get("data"))
            if now - heard_at > CHANNEL_TIMEOUT:
                raise BackendUnavailable(
                    f"Redis at {self._s.endpoint} did not answer on the invalidation channel "
                    f"for {CHANNEL_TIMEOUT:g}s"
                )
            if now >= ping_at:
                ping_at = now + PING_INTERVAL
                with self._s.errors("pinging the invalidation channel"):
                    await pubsub.ping()


# --- idempotency --------------------------------------------------------------------------------------------

# KEYS[1] done record (hash: fp, status, body, headers); KEYS[2] lease (hash: token, fp).
# ARGV[1] fingerprint; ARGV[2] new owner token; ARGV[3] lease ms.
_BEGIN = """
local fp = redis.call('HGET', KEYS[1], 'fp')
if fp then
  if fp == ARGV[1] then
    local r = redis.call('HMGET', KEYS[1], 'status', 'body', 'headers')
    return {'replay', r[1], r[2], r[3]}
  end
  return {'mismatch'}
end
local held = redis.call('HGET', KEYS[2], 'fp')
if held then
  if held == ARGV[1] then return {'in_flight'} end
  return {'mismatch'}
end
redis.call('HSET', KEYS[2], 'token', ARGV[2], 'fp', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {'started', ARGV[2]}
"""

# KEYS[1] lease; KEYS[2] done record. ARGV: token, status, body, headers, keep ms.
# A holder whose lease expired (and was maybe taken over) must not overwrite the newer owner's result.
_COMPLETE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
local fp = redis.call('HGET', KEYS[1], 'fp')
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'fp', fp, 'status', ARGV[2], 'body', ARGV[3], 'headers', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('DEL', KEYS[1])
return 1
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisIdempotencyStore:
    """Idempotency records shared by all workers: a lease ``{prefix}:idem:{<key>}:lease`` while the action
    runs, then the finished response ``{prefix}:idem:{<key>}:done`` for replay (one cluster slot per key)."""

    def __init__(self, shared: Shared) -> None:
        self._s = shared
        self._begin = shared.client.register_script(_BEGIN)
        self._complete = shared.client.register_script(_COMPLETE)
        self._release = shared.client.register_script(_RELEASE)

    def _keys(self, key: str) -> tuple[str, str]:
        # The key in braces, before the part that differs: both records share one cluster slot.
        return self._s.tagged("idem", key, "done"), self._s.tagged("idem", key, "lease")

    async def begin(self, key: str, fingerprint: str, *, lease: float, keep_for: float) -> BeginResult:
        done, held = self._keys(key)
        with self._s.errors("checking an idempotency key"):
            reply = await self._begin(keys=[done, held], args=[fingerprint, uuid.uuid4().hex, to_ms(lease)])
        state = reply[0]
        if state == "started":
            return BeginResult(state="started", token=reply[1])
        if state == "replay":
            response = StoredResponse(
                status=int(reply[1]), body=json.loads(reply[2]), headers=json.loads(reply[3])
            )
            return BeginResult(state="replay", response=response)
        if state == "in_flight":
            return BeginResult(state="in_flight")
        return BeginResult(state="mismatch")

    async def complete(self, key: str, token: str, response: StoredResponse, *, keep_for: float) -> None:
        done, held = self._keys(key)
        args: list[str | int] = [
            token,
            response.status,
            dumps(dict(response.body)),
            dumps(dict(response.headers)),
            to_ms(keep_for),
        ]
        with self._s.errors("storing an idempotent response"):
            stored = await self._complete(keys=[held, done], args=args)
        if not stored:
            _log.warning("integration_status.redis.idempotency.lease_lost", status=response.status)

    async def release(self, key: str, token: str) -> None:
        with self._s.errors("releasing an idempotency key"):
            await self._release(keys=[self._keys(key)[1]], args=[token])


# --- rate limiting ------------------------------------------------------------------------------------------

# A sliding-window log of admitted hits. KEYS[1] the sorted set; ARGV: now ms, window ms, limit, a unique
# member.
# Scores are returned as strings because Lua numbers come back from Redis truncated to integers.
_HIT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  count = count + 1
  allowed = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if newest[2] then
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(tonumber(newest[2]) + window - now)))
end
return {allowed, count, oldest[2] or '', newest[2] or ''}
"""


def decide(
    *,
    allowed: bool,
    count: int,
    limit: int,
    window: float,
    now: float,
    oldest: float | None,
    newest: float | None,
) -> RateDecision:
    """The decision from the script's raw answer (times in seconds).

    >>> decide(allowed=False, count=5, limit=5, window=60, now=130, oldest=100, newest=120).retry_after
    30.0
    """
    # Rounded to microseconds: epoch milliseconds as doubles carry noise far below that.
    retry_after = 0.0 if allowed or oldest is None else round(max(0.0, oldest + window - now), 6)
    reset = 0.0 if newest is None else round(max(0.0, newest + window - now), 6)
    return RateDecision(
        allowed=allowed, limit=limit, remaining=max(0, limit - count), retry_after=retry_after, reset=reset
    )


class RedisRateLimiter:
    """An exact sliding-window limit shared by all workers (``{prefix}:rl:{key}``).

    Time comes from the injected clock, not from the Redis server, so workers' clocks must agree to well
    under a second (NTP); a worker whose clock runs behind sees hits from the others as slightly "future".
    """

    def __init__(self, shared: Shared) -> None:
        self._s = shared
        self._hit = shared.client.register_script(_HIT)

    async def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        if limit < 1 or window <= 0:
            raise ValueError("a rate limit needs limit >= 1 and window > 0")
        now = self._s.clock.time()
        args: list[str | int] = [repr(now * 1000), repr(window * 1000), limit, uuid.uuid4().hex]
        with self._s.errors("counting a rate-limited action"):
            allowed, count, oldest, newest = await self._hit(keys=[self._s.key("rl", key)], args=args)
        return decide(
            allowed=bool(allowed),
            count=int(count),
            limit=limit,
            window=window,
            now=now,
            oldest=float(oldest) / 1000 if oldest else None,
            newest=float(newest) / 1000 if newest else None,
        )


# --- webhook deliveries -------------------------------------------------------------------------------------


class RedisDeliveryLog:
    """Webhook replay protection shared by all workers: ``{prefix}:delivery:{id}``."""

    def __init__(self, shared: Shared) -> None:
        self._s = shared

    async def first_seen(self, delivery_id: str, ttl: float) -> bool:
        """True the first time a delivery id is seen within ``ttl`` seconds, False for every repeat."""
        with self._s.errors("checking a webhook delivery id"):
            fresh = await self._s.client.set(
                self._s.key("delivery", delivery_id), "1", nx=True, px=to_ms(ttl)
            )
        return bool(fresh)

    async def forget(self, delivery_id: str) -> None:
        """Drop a recorded delivery id (its events could not be published: the provider's retry must count)."""
        with self._s.errors("forgetting a webhook delivery id"):
            await self._s.client.delete(self._s.key("delivery", delivery_id))
