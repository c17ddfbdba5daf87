"""Redis implementations of the cache, idempotency, rate-limit and webhook-delivery stores.

Every multi-step decision runs as ONE Lua script, so it is atomic across all workers sharing the Redis.
"""

from __future__ import annotations

import contextlib
import json
import uuid
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import anyio
import anyio.abc
from cachetools import TTLCache

from integration_status._logging import get_logger
from integration_status.backends._redis_base import Shared, dumps, to_ms
from integration_status.core.wake import Wake
from integration_status.exceptions import BackendUnavailable, InvalidModel
from integration_status.models import Problem
from integration_status.protocols import BeginResult, CacheEntry, RateDecision, StoredResponse
from integration_status.snapshot import ProviderSnapshot

_log = get_logger(__name__)

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
        self._changed: Wake | None = None  # while someone waits for the next change (see wait_changed)
        self._listening = False
        self._ended: Wake | None = None  # while someone waits for the listener to end (see stopped)
        #: How many times the invalidation channel has been subscribed (first time and every time again).
        self.channel_ups = 0
        self._up: Wake | None = None  # while someone waits for the channel to come up (see wait_channel_up)

    def _bump(self) -> None:
        self.generation += 1
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def wait_changed(self, since: int) -> int:
        """Return :attr:`generation` once it has moved past ``since`` (at once if it already has): a change
        this worker made or was told of, or its trust in its copies going or coming back. For tests and
        probes that wait for an announcement from another worker without polling; bound it with a timeout."""
        while self.generation <= since:
            if self._changed is None:
                self._changed = Wake()
            await self._changed
        return self.generation

    async def wait_channel_up(self, since: int) -> int:
        """Return :attr:`channel_ups` once it has moved past ``since`` (at once if it already has): the
        channel was subscribed again, so this worker's connection to Redis is back (after a restart of Redis,
        perhaps one that kept nothing)."""
        while self.channel_ups <= since:
            if self._up is None:
                self._up = Wake()
            await self._up
        return self.channel_ups

    async def stopped(self) -> None:
        """Return once :meth:`listen` is not running (at once if it is not): after :meth:`stop`, its
        connection has then been given back."""
        while self._listening:
            if self._ended is None:
                self._ended = Wake()
            await self._ended

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

    def cached_many(self, keys: Sequence[str]) -> list[CacheEntry | None] | None:
        """This worker's copies of ``keys`` when it holds an entry for every one of them and trusts them (no
        round trip, so nothing to bound by a deadline), else None: :meth:`load_many` then reads. A remembered
        miss does not count: on a cold start another worker is filling that entry right now, and its
        announcement may still be on its way."""
        if not self.coherent:
            return None
        near = self._near
        try:
            entries = [near[key] for key in keys]
        except KeyError:  # not held, or expired
            return None
        return None if None in entries else entries

    async def load_many(self, keys: Sequence[str]) -> list[CacheEntry | None]:
        """:meth:`load` for several keys: the near copies, and ONE ``MGET`` per project for the rest (one
        project's keys share a slot, so this works on a cluster too)."""
        near = self._near
        found: dict[str, CacheEntry | None] = {}
        if self.coherent:
            for key in keys:
                if key in near:
                    found[key] = near[key]
        # One MGET per project (hash tag): a cluster refuses an MGET across slots. The usual call is one
        # project's keys, so one round trip.
        by_tag: dict[str, list[str]] = {}
        for key in keys:
            if key not in found:
                by_tag.setdefault(_tagged(key)[0], []).append(key)
        for missing in by_tag.values():
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
            self._bump()
            raise
        self._bump()
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
        self._bump()

    def _hear(self, data: object) -> None:
        origin, _, key = str(data).partition(" ")
        if origin == self._origin:
            return  # our own write: the copy was updated when it was made
        self._heard += 1
        self._near.pop(key, None)
        self._bump()

    async def listen(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the invalidation listener until cancelled: subscribe, trust the near cache while the channel
        answers, distrust it and subscribe again (with backoff) when it does not. ``task_status`` is set once
        the first attempt to subscribe has succeeded or failed."""
        backoff = 0.05
        first = True
        self._stopping = False
        self._listening = True
        try:
            await self._listen(task_status, first, backoff)
        finally:
            self._listening = False
            ended, self._ended = self._ended, None
            if ended is not None:
                ended.set()

    async def _listen(self, task_status: anyio.abc.TaskStatus[None], first: bool, backoff: float) -> None:
        lost = False  # since the last subscription: one warning per outage, not one per attempt
        while not self._stopping:
            pubsub: Any = None
            try:
                try:
                    pubsub = self._pubsub = await self._open()
                    await self._subscribe(pubsub)
                finally:
                    if first:
                        first = False
                        task_status.started()
                if lost:
                    lost = False
                    _log.info("integration_status.redis.cache.channel_back", channel=self._channel)
                backoff = 0.05
                await self._follow(pubsub)
            except BackendUnavailable as exc:
                if self._stopping:
                    break
                log = _log.debug if lost else _log.warning
                log("integration_status.redis.cache.channel_lost", error=str(exc))
                lost = True
            except Exception:
                # A bug here must cost this worker its near cache, not the engine's task group.
                _log.exception("integration_status.redis.cache.listener_crashed")
            finally:
                if self.coherent:
                    self._trust(False)
                if pubsub is not None:
                    await self._drop(pubsub)
                self._pubsub = None
            await anyio.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)

    async def stop(self) -> None:
        """End :meth:`listen` by closing its connection (its read then fails and it returns): the driver's
        read can outlive a cancellation, so the engine does not rely on cancelling it."""
        self._stopping = True
        if self._pubsub is not None:
            await self._disconnect(self._pubsub)

    async def _open(self) -> Any:
        """A PubSub on the reader's connections; on a cluster, through the next node (any node hears every
        ``PUBLISH``: the cluster forwards it to all of them)."""
        with self._s.errors("subscribing to cache invalidations"):
            node = await self._s.channel_node()
        return self._s.reader.pubsub() if node is None else self._s.reader.pubsub(node=node)

    async def _disconnect(self, pubsub: Any) -> None:
        """Close the channel's socket, which ends the listener's read; the listener itself gives the connection
        back (:meth:`_drop`). The driver answers a failed read by connecting again, so the connection may be
        open again by the time the listener sees the failure: only its last close is final."""
        connection = pubsub.connection
        if connection is None:
            return
        with anyio.move_on_after(CHANNEL_TIMEOUT, shield=True), contextlib.suppress(Exception):
            await connection.disconnect(nowait=True)

    async def _drop(self, pubsub: Any) -> None:
        """Close the channel's connection and give it back to its pool, once, when the listener is done with
        it: without the PubSub's own ``aclose`` (which takes a lock that a cancelled read can leave waiting),
        shielded, as the listener may be being cancelled, and bounded."""
        await self._disconnect(pubsub)
        connection, pubsub.connection = pubsub.connection, None
        if connection is None:
            return
        with anyio.move_on_after(CHANNEL_TIMEOUT, shield=True), contextlib.suppress(Exception):
            await pubsub.connection_pool.release(
                connection
            )  # the reader's pool (or its node's, on a cluster)

    async def _subscribe(self, pubsub: Any) -> None:
        with self._s.errors("subscribing to cache invalidations"), anyio.fail_after(CHANNEL_TIMEOUT):
            await pubsub.subscribe(self._channel)
            while (await pubsub.get_message(timeout=PING_INTERVAL) or {}).get("type") != "subscribe":
                pass
        self._trust(True)
        self.channel_ups += 1
        up, self._up = self._up, None
        if up is not None:
            up.set()
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

# One hash per key: fp, state ('run' | 'done'), token, until (ms: the lease of the attempt, or of the
# follow-up), cp (checkpoint JSON), exp (ms: retention end), status, body, headers. The key also expires
# after ``keep_for`` in Redis; times come from the injected clock (ARGV), like the rate limiter. A 'run'
# record without cp whose lease is over provably never started: it counts as absent.
# Every lease that a dead worker may leave to others (a checkpointed attempt, a follow-up) is also in its
# bucket's sorted set ``{prefix}:idem:{b<NN>}:leases`` (KEYS[2], member: the key, score: ``until``), where
# ``claim_abandoned`` finds the ones that ran out. The member is always the last ARGV. A record and its
# bucket's index share the hash tag ``{b<NN>}``, so each script touches one Redis Cluster slot.
_IDEM_LIVE = """
local function live(r, now)
  if not r[1] then return false end
  if r[6] and tonumber(r[6]) <= now then return false end
  if r[2] == 'run' and not r[5] and tonumber(r[4]) <= now then return false end
  return true
end
-- The record if ``token`` owns it (and it is in ``state``, unless that is nil), else nil.
local function owned(key, token, now, state)
  local r = redis.call('HMGET', key, 'fp', 'state', 'token', 'until', 'cp', 'exp')
  if not live(r, now) or r[3] ~= token or (state and r[2] ~= state) then return nil end
  return r
end
"""

# KEYS[1] record. ARGV: fingerprint, new token, now ms, lease ms, keep ms.
_BEGIN = (
    _IDEM_LIVE
    + """
local r = redis.call('HMGET', KEYS[1], 'fp', 'state', 'token', 'until', 'cp', 'exp', 'status', 'body', 'headers')
local now = tonumber(ARGV[3])
local member = ARGV[#ARGV]
if not live(r, now) then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], member)
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'run', 'token', ARGV[2], 'until', now + tonumber(ARGV[4]),
    'exp', now + tonumber(ARGV[5]))
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {'started', ARGV[2]}
end
if r[1] ~= ARGV[1] then return {'mismatch'} end
local abandoned = r[4] and tonumber(r[4]) <= now
if not abandoned then
  if r[2] == 'run' then return {'in_flight'} end
  return {'replay', r[7], r[8], r[9]}
end
redis.call('HSET', KEYS[1], 'token', ARGV[2], 'until', now + tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), member)
if r[2] == 'run' then return {'resume', ARGV[2], r[5]} end
return {'replay', r[7], r[8], r[9], ARGV[2], r[5] or ''}
"""
)

# KEYS[1] record. ARGV: token, checkpoint JSON, now ms, lease ms.
_CHECKPOINT = (
    _IDEM_LIVE
    + """
if not owned(KEYS[1], ARGV[1], tonumber(ARGV[3]), 'run') then return 0 end
redis.call('HSET', KEYS[1], 'cp', ARGV[2], 'until', tonumber(ARGV[3]) + tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[#ARGV])
return 1
"""
)

# KEYS[1] record. ARGV: token, status, body, headers, keep ms, now ms, follow-up lease ms ('' for none).
# A holder whose lease expired (and was maybe taken over) must not overwrite the newer owner's result.
_COMPLETE = (
    _IDEM_LIVE
    + """
if not owned(KEYS[1], ARGV[1], tonumber(ARGV[6]), 'run') then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3], 'headers', ARGV[4],
  'exp', tonumber(ARGV[6]) + tonumber(ARGV[5]))
if ARGV[7] == '' then
  redis.call('HDEL', KEYS[1], 'token', 'until')
  redis.call('ZREM', KEYS[2], ARGV[#ARGV])
else
  redis.call('HSET', KEYS[1], 'until', tonumber(ARGV[6]) + tonumber(ARGV[7]))
  redis.call('ZADD', KEYS[2], tonumber(ARGV[6]) + tonumber(ARGV[7]), ARGV[#ARGV])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
)

# KEYS[1] record. ARGV: token, now ms, lease ms.
_RENEW = (
    _IDEM_LIVE
    + """
local r = owned(KEYS[1], ARGV[1], tonumber(ARGV[2]), nil)
if not r then return 0 end
redis.call('HSET', KEYS[1], 'until', tonumber(ARGV[2]) + tonumber(ARGV[3]))
if r[5] or r[2] == 'done' then
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[#ARGV])
end
return 1
"""
)

# KEYS[1] record. ARGV: token.
_SETTLE = """
local r = redis.call('HMGET', KEYS[1], 'state', 'token')
if r[1] ~= 'done' or r[2] ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'token', 'until')
redis.call('ZREM', KEYS[2], ARGV[#ARGV])
return 1
"""

# KEYS[1] record. ARGV: token, now ms.
_RELEASE = (
    _IDEM_LIVE
    + """
local r = owned(KEYS[1], ARGV[1], tonumber(ARGV[2]), 'run')
if not r then return 0 end
if r[5] then
  redis.call('HSET', KEYS[1], 'until', ARGV[2])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[#ARGV])
  return 1
end
redis.call('ZREM', KEYS[2], ARGV[#ARGV])
return redis.call('DEL', KEYS[1])
"""
)

# KEYS[1] record, KEYS[2] index. ARGV: new token, now ms, lease ms, member. Takes over a lease that ran
# out, as BEGIN does for a retry; drops index entries of records that are gone or need nobody.
_CLAIM = (
    _IDEM_LIVE
    + """
local r = redis.call('HMGET', KEYS[1], 'fp', 'state', 'token', 'until', 'cp', 'exp', 'status', 'body', 'headers')
local now = tonumber(ARGV[2])
if not live(r, now) or not r[4] or (r[2] == 'done' and not r[3]) or (r[2] == 'run' and not r[5]) then
  redis.call('ZREM', KEYS[2], ARGV[4])
  return {'gone'}
end
if tonumber(r[4]) > now then
  redis.call('ZADD', KEYS[2], tonumber(r[4]), ARGV[4])
  return {'held'}
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'until', now + tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
if r[2] == 'run' then return {'resume', ARGV[1], r[5]} end
return {'replay', r[7], r[8], r[9], ARGV[1], r[5] or ''}
"""
)


def _optional_json(raw: str | None) -> Any:
    return json.loads(raw) if raw else None


def _begin_result(reply: list[Any]) -> BeginResult:
    """A BEGIN (or CLAIM) script's answer as a BeginResult."""
    state = reply[0]
    if state == "started":
        return BeginResult(state="started", token=reply[1])
    if state == "resume":
        return BeginResult(state="resume", token=reply[1], checkpoint=_optional_json(reply[2]))
    if state == "replay":
        response = StoredResponse(
            status=int(reply[1]), body=json.loads(reply[2]), headers=json.loads(reply[3])
        )
        if len(reply) > 4:
            return BeginResult(
                state="replay", response=response, token=reply[4], checkpoint=_optional_json(reply[5])
            )
        return BeginResult(state="replay", response=response)
    if state == "in_flight":
        return BeginResult(state="in_flight")
    return BeginResult(state="mismatch")


#: How many lease indexes the idempotency records are spread over: each bucket is one hash tag (one slot on a
#: Redis Cluster, spread over its nodes); ``claim_abandoned`` reads them all. Changing it moves every record.
IDEM_BUCKETS: Final = 16


def idem_bucket(key: str) -> str:
    """The bucket of an idempotency key: ``b00`` ... ``b15``, from a stable hash (the same in every worker).

    >>> idem_bucket("u1:p:k1"), idem_bucket("u1:p:k1") == idem_bucket("u1:p:k1")
    ('b01', True)
    """
    return f"b{zlib.crc32(key.encode()) % IDEM_BUCKETS:02d}"


class RedisIdempotencyStore:
    """Idempotency records shared by all workers: one hash ``{prefix}:idem:{b<NN>}:<key>`` per key, holding
    the attempt's lease and checkpoint while the action runs, then the finished response for replay; the
    leases a dead worker may leave are indexed per bucket in ``{prefix}:idem:{b<NN>}:leases``."""

    #: Other processes use these records too (so abandoned actions are swept, see ``claim_abandoned``).
    shared = True

    def __init__(self, shared: Shared) -> None:
        self._s = shared
        self._begin = shared.client.register_script(_BEGIN)
        self._checkpoint = shared.client.register_script(_CHECKPOINT)
        self._complete = shared.client.register_script(_COMPLETE)
        self._renew = shared.client.register_script(_RENEW)
        self._settle = shared.client.register_script(_SETTLE)
        self._release = shared.client.register_script(_RELEASE)
        self._claim = shared.client.register_script(_CLAIM)
        self._sweep_from = 0  # the bucket the next claim_abandoned starts with

    def _keys(self, key: str) -> list[str]:
        """The record and its bucket's lease index (one hash tag: one slot)."""
        bucket = idem_bucket(key)
        return [self._s.tagged("idem", bucket, key), self._index(bucket)]

    def _index(self, bucket: str) -> str:
        return self._s.tagged("idem", bucket, "leases")

    def _now(self) -> str:
        return repr(self._s.clock.time() * 1000)

    async def begin(self, key: str, fingerprint: str, *, lease: float, keep_for: float) -> BeginResult:
        args: list[str | int] = [fingerprint, uuid.uuid4().hex, self._now(), to_ms(lease), to_ms(keep_for)]
        with self._s.errors("checking an idempotency key"):
            return _begin_result(await self._begin(keys=self._keys(key), args=[*args, key]))

    async def checkpoint(self, key: str, token: str, data: Mapping[str, Any], *, lease: float) -> bool:
        args: list[str | int] = [token, dumps(dict(data)), self._now(), to_ms(lease)]
        with self._s.errors("recording an action checkpoint"):
            return bool(await self._checkpoint(keys=self._keys(key), args=[*args, key]))

    async def complete(
        self, key: str, token: str, response: StoredResponse, *, keep_for: float, follow: float | None = None
    ) -> None:
        args: list[str | int] = [
            token,
            response.status,
            dumps(dict(response.body)),
            dumps(dict(response.headers)),
            to_ms(keep_for),
            self._now(),
            "" if follow is None else to_ms(follow),
        ]
        with self._s.errors("storing an idempotent response"):
            stored = await self._complete(keys=self._keys(key), args=[*args, key])
        if not stored:
            _log.warning("integration_status.redis.idempotency.lease_lost", status=response.status)

    async def renew(self, key: str, token: str, *, lease: float) -> bool:
        with self._s.errors("renewing an idempotency lease"):
            return bool(await self._renew(keys=self._keys(key), args=[token, self._now(), to_ms(lease), key]))

    async def settle(self, key: str, token: str) -> None:
        with self._s.errors("settling an action's follow-up"):
            await self._settle(keys=self._keys(key), args=[token, key])

    async def release(self, key: str, token: str) -> None:
        with self._s.errors("releasing an idempotency key"):
            await self._release(keys=self._keys(key), args=[token, self._now(), key])

    async def claim_abandoned(self, *, lease: float, limit: int) -> list[tuple[str, BeginResult]]:
        """Take over up to ``limit`` attempts or follow-ups whose worker stopped (see the contract), sweeping
        the buckets' lease indexes in turn; each call starts one bucket further on, so a bucket with many due
        leases cannot keep the others waiting."""
        claimed: list[tuple[str, BeginResult]] = []
        start, self._sweep_from = self._sweep_from, (self._sweep_from + 1) % IDEM_BUCKETS
        with self._s.errors("looking for abandoned actions"):
            for step in range(IDEM_BUCKETS):
                if len(claimed) >= limit:
                    break
                index = self._index(f"b{(start + step) % IDEM_BUCKETS:02d}")
                due = await self._s.client.zrangebyscore(
                    index, "-inf", self._now(), start=0, num=limit - len(claimed)
                )
                for member in due:
                    key = str(member)  # decode_responses: members are str
                    args: list[str | int] = [uuid.uuid4().hex, self._now(), to_ms(lease), key]
                    reply = await self._claim(keys=self._keys(key), args=args)
                    if reply[0] in ("resume", "replay"):
                        claimed.append((key, _begin_result(reply)))
        return claimed


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


# KEYS the delivery ids' keys, in order. ARGV[1] ms to remember each. Set while new; how many were.
_FIRST_SEEN_ALL = """
for i, key in ipairs(KEYS) do
  if not redis.call('SET', key, '1', 'NX', 'PX', ARGV[1]) then
    return i - 1
  end
end
return #KEYS
"""


class RedisDeliveryLog:
    """Webhook replay protection shared by all workers: ``{prefix}:delivery:{id}``, one ``SET NX`` with the
    TTL per key. Keys are fixed-length digests and only authentic deliveries with new content write one (a
    replay writes nothing), so the log holds at most one small key per provider delivery per TTL. A
    delivery's keys are checked in one script (one round trip); on a cluster, where they live in different
    slots, one command each."""

    def __init__(self, shared: Shared) -> None:
        self._s = shared
        self._first_seen_all = shared.client.register_script(_FIRST_SEEN_ALL)

    async def first_seen(self, delivery_id: str, ttl: float) -> bool:
        """True the first time a delivery id is seen within ``ttl`` seconds, False for every repeat."""
        with self._s.errors("checking a webhook delivery id"):
            fresh = await self._s.client.set(
                self._s.key("delivery", delivery_id), "1", nx=True, px=to_ms(ttl)
            )
        return bool(fresh)

    async def first_seen_all(self, delivery_ids: Sequence[str], ttl: float) -> int:
        """Record ``delivery_ids`` in order while each is new, in one step; how many were (see ``DeliveryLog``)."""
        if self._s.cluster or len(delivery_ids) < 2:
            for fresh, delivery_id in enumerate(delivery_ids):
                if not await self.first_seen(delivery_id, ttl):
                    return fresh
            return len(delivery_ids)
        keys = [self._s.key("delivery", delivery_id) for delivery_id in delivery_ids]
        with self._s.errors("checking a webhook delivery id"):
            fresh = await self._first_seen_all(keys=keys, args=[to_ms(ttl)])
        return int(fresh)

    async def forget(self, delivery_id: str) -> None:
        """Drop a recorded delivery id (its events could not be published: the provider's retry must count)."""
        with self._s.errors("forgetting a webhook delivery id"):
            await self._s.client.delete(self._s.key("delivery", delivery_id))
