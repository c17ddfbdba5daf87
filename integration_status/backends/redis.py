"""The scale-out engine: provider cache, idempotency, rate limits, webhook replay protection and events in
Redis, shared by every worker that uses the same Redis and key prefix. Needs the ``redis`` extra.

>>> engine = RedisEngine.from_url("redis://127.0.0.1:6379/0", prefix="myapp")
>>> engine
RedisEngine(endpoint='127.0.0.1:6379', prefix='myapp')

Use it as ``async with engine:`` (it checks the connection and runs the event readers; a Redis that does not
answer yet only delays what needs it, see :meth:`RedisEngine.__aenter__`), then hand
``engine.cache_store``, ``engine.idempotency``, ``engine.rate_limiter``, ``engine.events`` and
``engine.deliveries`` to the service. Key layout and operations: ``docs/operations.md``.
"""

from __future__ import annotations

try:
    import redis.asyncio as _redis
    import redis.exceptions as _rexc
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry as _Retry
    from redis.backoff import NoBackoff as _NoBackoff
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "the Redis engine needs the redis package: pip install 'integration-status[redis]'"
    ) from exc

from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import anyio

from integration_status._env import engine_values, environ, redis_url
from integration_status._logging import get_logger
from integration_status.backends._redis_base import (
    BoundedCluster,
    Shared,
    describe_endpoint,
    only_unreachable,
)
from integration_status.backends._redis_etag import agree_on_etag_value
from integration_status.backends._redis_events import RedisEventBus, RedisSubscription
from integration_status.backends._redis_stores import (
    RedisCacheStore,
    RedisDeliveryLog,
    RedisIdempotencyStore,
    RedisRateLimiter,
)
from integration_status.core.clock import SYSTEM_CLOCK, Clock
from integration_status.core.etag import etag_key
from integration_status.exceptions import BackendUnavailable, ConfigurationError, SubscriberLagging
from integration_status.protocols import IdempotencyStore, PublishDelivery

__all__ = [
    "RedisCacheStore",
    "RedisDeliveryLog",
    "RedisEngine",
    "RedisEventBus",
    "RedisIdempotencyStore",
    "RedisRateLimiter",
    "RedisSubscription",
    "SubscriberLagging",
]

_log = get_logger(__name__)


class RedisEngine:
    """All Redis-backed stores over one connection pool and one key prefix. Build it with :meth:`from_url`."""

    def __init__(
        self,
        shared: Shared,
        *,
        stream_maxlen: int,
        stream_ttl: float,
        queue_size: int,
        block: float,
        idempotency: IdempotencyStore | None = None,
    ) -> None:
        """Internal: use :meth:`from_url`."""
        self._s = shared
        self._cache = RedisCacheStore(shared)
        self._idempotency: IdempotencyStore = idempotency or RedisIdempotencyStore(shared)
        # A store of its own (e.g. PostgreSQL) is opened and closed with the engine.
        self._own_store: Any = idempotency
        self._rate_limiter = RedisRateLimiter(shared)
        self._deliveries = RedisDeliveryLog(shared)
        self._events = RedisEventBus(
            shared, maxlen=stream_maxlen, ttl=stream_ttl, queue_size=queue_size, block=block
        )
        self._stack: AsyncExitStack | None = None
        self._closed = False
        # The value the ETag key is derived from, as last agreed (offered again when Redis comes back), and
        # who is told of each agreement (see on_etag_key).
        self._etag_value: str | None = None
        self._etag_users: list[Callable[[bytes], None]] = []

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, clock: Clock | None = None) -> RedisEngine:
        """From ``INTEGRATION_STATUS_REDIS_URL`` (required) and ``INTEGRATION_STATUS_REDIS_*`` in ``env``."""
        env = environ(env)
        url = redis_url(env)
        if url is None:
            raise ConfigurationError("INTEGRATION_STATUS_REDIS_URL is not set")
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        return cls.from_url(url, **engine_values(env, "REDIS"), **extra)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "integration-status",
        clock: Clock = SYSTEM_CLOCK,
        pool_size: int = 50,
        socket_timeout: float = 1.0,
        stream_maxlen: int = 500,
        stream_ttl: float = 3_600.0,
        queue_size: int = 256,
        block: float = 0.1,
        idempotency: IdempotencyStore | None = None,
        cluster: bool = False,
    ) -> RedisEngine:
        """An engine for the Redis at ``url`` (``redis://[:password@]host:port/db``, ``rediss://``, ``unix://``).

        No connection is made here; :meth:`connect` (or ``async with``) checks it. ``prefix`` namespaces every
        key, so several apps can share one Redis. ``pool_size`` bounds the connections for ordinary commands
        (event readers use one more connection per project with local subscribers). ``stream_maxlen`` is how
        many events each project's stream keeps (approximately) for ``Last-Event-ID`` replay, ``stream_ttl``
        how long an idle stream lives, ``queue_size`` how far one subscriber may fall behind, ``block`` the
        reader's ``XREAD BLOCK`` time in seconds. ``idempotency`` replaces the Redis idempotency records with
        another store (e.g. :class:`~integration_status.backends.postgres.PostgresIdempotencyStore`, which
        survives a Redis restart); the engine opens and closes it with itself.

        ``cluster=True``: ``url`` is one node of a Redis Cluster (``redis://`` or ``rediss://``, database 0); the
        engine learns the other nodes from it when it connects and sends every command to the node holding its
        key's slot. ``pool_size`` then bounds the commands in flight (and so the connections to each node).
        """
        if not prefix or any(c.isspace() or c in "{}" for c in prefix):
            # Braces are Redis Cluster hash tags: the key layout puts its own around each project.
            raise ConfigurationError(
                "the Redis key prefix must be a non-empty string without whitespace or braces"
            )
        if pool_size < 1 or socket_timeout <= 0 or block <= 0 or queue_size < 1 or stream_maxlen < 1:
            raise ConfigurationError(
                "pool_size, queue_size and stream_maxlen must be >= 1; socket_timeout and block must be > 0"
            )
        endpoint, password = describe_endpoint(url)
        # No driver-level retries: a command that fails is reported at once (fail closed) instead of being
        # re-sent, which could run a non-idempotent script twice. Stale pooled connections are re-opened by
        # the pool's own health check before use. (A cluster client still follows MOVED, ASK and TRYAGAIN
        # answers: with those the node ran nothing.)
        common = {
            "decode_responses": True,
            "retry": _Retry(_NoBackoff(), 0),
            "socket_connect_timeout": socket_timeout,
        }
        client: _redis.Redis | RedisCluster
        reader: _redis.Redis | RedisCluster
        try:
            if cluster:
                client, reader = _cluster_clients(url, endpoint, pool_size, socket_timeout, block, common)
            else:
                pool = _redis.BlockingConnectionPool.from_url(
                    url,
                    max_connections=pool_size,
                    timeout=socket_timeout,
                    socket_timeout=socket_timeout,
                    **common,
                )
                # Readers block in XREAD for ``block`` seconds, so their socket timeout is longer by that much.
                reader_pool = _redis.ConnectionPool.from_url(
                    url, socket_timeout=socket_timeout + block, **common
                )
                client, reader = _redis.Redis.from_pool(pool), _redis.Redis.from_pool(reader_pool)
        except (ValueError, _rexc.RedisClusterException) as exc:
            raise ConfigurationError(
                f"the Redis URL for {endpoint} is invalid ({type(exc).__name__})"
            ) from None
        shared = Shared(
            client=client,
            reader=reader,
            prefix=prefix,
            clock=clock,
            endpoint=endpoint,
            password=password,
            socket_timeout=socket_timeout,
            cluster=cluster,
        )
        return cls(
            shared,
            stream_maxlen=stream_maxlen,
            stream_ttl=stream_ttl,
            queue_size=queue_size,
            block=block,
            idempotency=idempotency,
        )

    # --- the stores ---

    @property
    def cache_store(self) -> RedisCacheStore:
        return self._cache

    @property
    def idempotency(self) -> IdempotencyStore:
        return self._idempotency

    @property
    def rate_limiter(self) -> RedisRateLimiter:
        return self._rate_limiter

    @property
    def events(self) -> RedisEventBus:
        return self._events

    @property
    def deliveries(self) -> RedisDeliveryLog:
        return self._deliveries

    @property
    def publish_delivery(self) -> PublishDelivery:
        """A webhook delivery's log keys recorded and its events published in one step (one script, one
        round trip; see ``RedisEventBus.publish_delivery``), on a single Redis and on a cluster alike."""
        return self._events.publish_delivery

    @property
    def prefix(self) -> str:
        return self._s.prefix

    async def shared_etag_key(self) -> bytes:
        """The ETag key all workers on this Redis and prefix share (``{prefix}:etag-key``, set once); raises
        :class:`BackendUnavailable` when Redis does not answer."""
        self._etag_value = await agree_on_etag_value(self._s, self._etag_value)
        return etag_key(self._etag_value)

    def on_etag_key(self, use: Callable[[bytes], None]) -> None:
        """Call ``use(key)`` with the shared ETag key each time the workers agree on it again: whenever this
        worker's connection to Redis comes back (its invalidation channel is subscribed again). A worker that
        started while Redis was away, and so signs with a key of its own, then takes the deployment's; after a
        Redis restart that kept nothing, the first worker back stores its key again and the others keep
        agreeing with it. The service registers its renderer here; each callable is registered once."""
        if use not in self._etag_users:
            self._etag_users.append(use)

    async def _follow_etag_key(self) -> None:
        """Agree on the ETag key again every time the invalidation channel comes up after the engine started
        (the first subscription is the service's own agreement at start)."""
        seen = self._cache.channel_ups
        while True:
            seen = await self._cache.wait_channel_up(seen)
            if not self._etag_users:
                continue
            try:
                key = await self.shared_etag_key()
            except BackendUnavailable as exc:  # gone again: the next time it comes back
                _log.info("integration_status.redis.etag_key_pending", error=str(exc))
                continue
            for use in list(self._etag_users):
                try:
                    use(key)
                except Exception:  # a failing callable must not end the engine's readers
                    _log.exception("integration_status.redis.etag_key_listener_failed")

    # --- lifecycle ---

    async def connect(self) -> None:
        """Check that Redis answers (``PING``); raise :class:`ConfigurationError` naming host:port if not.
        A host that would rather not start at all without Redis calls this before starting the service."""
        try:
            with self._s.errors("connecting"):
                await self._s.initialize()  # a cluster's nodes and slots
                await self._s.client.ping()
        except BackendUnavailable as exc:
            raise ConfigurationError(f"cannot use Redis at {self._s.endpoint}: {exc}") from exc.__cause__
        _log.debug("integration_status.redis.connected", endpoint=self._s.endpoint, prefix=self._s.prefix)

    async def aclose(self) -> None:
        """Stop the event readers and close every connection. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        await self._s.aclose()
        if self._own_store is not None and hasattr(self._own_store, "aclose"):
            await self._own_store.aclose()

    async def __aenter__(self) -> RedisEngine:
        """Check the connection and start the event readers and the near cache's listener.

        A Redis that answers and refuses this engine (a wrong password or user, a plain Redis where a cluster
        was configured) raises :class:`ConfigurationError` naming host:port. A Redis that does not answer (down,
        restarting, unreachable for now) is logged (``integration_status.redis.unavailable_at_start``) and the
        engine starts anyway: everything that needs Redis raises :class:`BackendUnavailable` until it is back,
        and the engine recovers by itself. A worker started or restarted during an outage (a crash, a recycle,
        a deploy) so serves what it can instead of failing its server's start, which under uvicorn's and
        gunicorn's supervisors stops every worker. For the strict check, call :meth:`connect` first."""
        try:
            await self.connect()
        except ConfigurationError as exc:
            if not only_unreachable(exc.__cause__):
                raise
            _log.warning(
                "integration_status.redis.unavailable_at_start", endpoint=self._s.endpoint, error=str(exc)
            )
        own = self._own_store
        if own is not None and hasattr(own, "__aenter__"):
            await (
                own.__aenter__()
            )  # as a service starts it (a store may wait out an outage); closed in aclose()
        elif own is not None and hasattr(own, "connect"):
            await own.connect()
        stack = AsyncExitStack()
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(self._events._detach)
        stack.callback(tg.cancel_scope.cancel)  # the readers loop forever; leaving the engine stops them
        self._events._attach(tg)
        # The near cache's invalidation listener: started once its first subscribe attempt is over, so the
        # first requests already find the near cache trusted when Redis is fine.
        await tg.start(self._cache.listen)
        stack.push_async_callback(
            self._cache.stop
        )  # runs first: the listener ends before the group is cancelled
        tg.start_soon(self._follow_etag_key)
        self._stack = stack
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)
        await self.aclose()

    def __repr__(self) -> str:
        cluster = ", cluster=True" if self._s.cluster else ""
        return f"RedisEngine(endpoint={self._s.endpoint!r}, prefix={self._s.prefix!r}{cluster})"


def _cluster_clients(
    url: str, endpoint: str, pool_size: int, socket_timeout: float, block: float, common: dict[str, Any]
) -> tuple[RedisCluster, RedisCluster]:
    """The ordinary and the reader client for a Redis Cluster reached through the node at ``url``."""
    if not url.startswith(("redis://", "rediss://")):
        raise ConfigurationError(
            f"a Redis Cluster is reached over redis:// or rediss://, not {url.split(':')[0]}://"
        )
    if urlsplit(url).path.strip("/") not in ("", "0"):
        raise ConfigurationError(
            f"a Redis Cluster has database 0 only; drop the /db from the URL for {endpoint}"
        )
    # A MOVED answer names the slot's new node, and the driver patches its slot map with it
    # (reinitialize_steps=0). By default it would instead learn the whole layout again on every fifth MOVED
    # by closing every connection it holds, failing the commands in flight on healthy nodes too: a failover
    # would cost requests errors that it need not. A lost connection or CLUSTERDOWN still makes it learn the
    # layout again.
    cluster = {"reinitialize_steps": 0, **common}
    client = BoundedCluster.from_url(
        url,
        limit=pool_size,
        wait=socket_timeout,
        max_connections=pool_size,
        socket_timeout=socket_timeout,
        **cluster,
    )
    # The readers' connections are not bounded, as on a single Redis: one per project being read, and one
    # for the invalidation channel.
    reader = RedisCluster.from_url(
        url, max_connections=2**31, socket_timeout=socket_timeout + block, **cluster
    )
    return client, reader
