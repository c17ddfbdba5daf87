"""What every Redis-backed store shares: the clients, the key prefix, the clock, and one error translation.

Private to :mod:`integration_status.backends.redis`; nothing here is public API.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import anyio
import attrs
import redis.asyncio as _redis
import redis.exceptions as _rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.typing import EncodableT, KeyT, ScriptTextT

from integration_status.core.clock import Clock
from integration_status.exceptions import BackendUnavailable, ConfigurationError


def describe_endpoint(url: str) -> tuple[str, str | None]:
    """``host:port`` (or the socket path) of a Redis URL, and its password (to scrub it from messages).

    >>> describe_endpoint("redis://:hunter2@cache.internal:6380/1")
    ('cache.internal:6380', 'hunter2')
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigurationError("the Redis URL is malformed (expected redis://host:port/db)") from None
    if parts.scheme == "unix":
        return parts.path or "unix socket", parts.password
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError(
            f"the Redis URL must start with redis://, rediss:// or unix://, not {parts.scheme or '(nothing)'}://"
        )
    return f"{parts.hostname or 'localhost'}:{port or 6379}", parts.password


def dumps(value: Any) -> str:
    """Compact JSON, the form every value takes in Redis."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def to_ms(seconds: float) -> int:
    """A duration for ``PX``/``PEXPIRE``: whole milliseconds, at least 1 (Redis refuses 0)."""
    return max(1, math.ceil(seconds * 1000))


class BoundedCluster(RedisCluster):
    """A cluster client that waits (up to ``wait`` seconds) for one of ``limit`` command slots instead of failing.

    The cluster driver keeps a connection pool per node that raises ``MaxConnectionsError`` at once when it is
    exhausted; the single-Redis engine uses a pool that waits for a free connection. Bounding the commands in
    flight to ``limit`` (= the per-node pool size) keeps the single-Redis behaviour: a burst of requests queues
    for ``wait`` seconds, then fails closed, and no node is ever asked for more than ``limit`` connections.
    """

    def __init__(self, *args: Any, limit: int, wait: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = anyio.Semaphore(limit)
        self._wait = wait

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        with anyio.move_on_after(self._wait) as waited:
            await self._slots.acquire()
        if waited.cancelled_caught:
            raise _rexc.ConnectionError("No connection available.")
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._slots.release()

    def register_script(self, script: ScriptTextT) -> AsyncScript:  # type: ignore[override]
        return ClusterScript(self, script)


class ClusterScript(AsyncScript):
    """A script that is sent whole (``EVAL``) when the node holding its slot does not know it even after the
    driver loaded it.

    The driver answers a ``NOSCRIPT`` with ``SCRIPT LOAD`` on the masters it knows of, then runs the script by
    its digest again. Replicas do not get scripts from their master, so in a failover the load can go to the
    master that is stepping down while the retry reaches the replica just promoted: the retry fails too. A node
    that answers ``NOSCRIPT`` ran nothing, so sending the script itself is safe, and caches it on that node.
    """

    async def __call__(
        self,
        keys: Sequence[KeyT] | None = None,
        args: Iterable[EncodableT] | None = None,
        client: Any = None,
    ) -> Any:
        try:
            return await super().__call__(keys, args, client)
        except _rexc.NoScriptError:
            keys, args = list(keys or ()), list(args or ())
            target: Any = client if client is not None else self.registered_client
            return await target.eval(self.script, len(keys), *keys, *args)  # the text it was registered with


Client = _redis.Redis | RedisCluster


@attrs.define(kw_only=True, eq=False)
class Shared:
    """One engine's connections and namespace, shared by all its stores.

    ``client`` runs ordinary commands on a bounded pool; ``reader`` is a separate pool for the event readers'
    blocking ``XREAD`` calls and the invalidation channel, so a busy bus never starves status requests of
    connections. Both are cluster clients when ``cluster`` is set.
    """

    client: Client
    reader: Client
    prefix: str
    clock: Clock
    endpoint: str
    password: str | None = attrs.field(repr=False)
    socket_timeout: float
    cluster: bool = False
    _channel_node: int = attrs.field(default=0, init=False)

    async def initialize(self) -> None:
        """Learn the cluster's slots and nodes (both clients), if not known yet; nothing on a single Redis."""
        for client in (self.client, self.reader):
            if isinstance(client, RedisCluster):
                await client.initialize()

    async def aclose(self) -> None:
        """Close both clients' connections. The cluster driver's own ``aclose()`` closes nothing while it is
        due to learn the layout again (as after any lost connection, e.g. in a failover), so the nodes of a
        cluster client are closed here as well."""
        for client in (self.client, self.reader):
            await client.aclose()
            if isinstance(client, RedisCluster):
                manager = client.nodes_manager
                for node in [*manager.nodes_cache.values(), *manager.startup_nodes.values()]:
                    with suppress(Exception):  # closing is best effort: the node may be gone
                        await node.disconnect()

    async def reader_route(self, key: str) -> dict[str, Any]:
        """Keyword arguments that send a reader command on ``key`` straight to the node holding its slot (the
        cluster driver would otherwise ask a node which of ``XREAD``'s arguments are keys, every call). Decided
        by the ``cluster`` flag: ``isinstance`` against the driver's classes walks a typing protocol, every
        read of every project's reader."""
        if not self.cluster or not isinstance(self.reader, RedisCluster):
            return {}
        await self.reader.initialize()
        return {"target_nodes": self.reader.get_node_from_key(key)}

    async def channel_node(self) -> ClusterNode | None:
        """The node to subscribe to the invalidation channel through (None on a single Redis: the server).

        A cluster forwards every ``PUBLISH`` to all its nodes, so any node hears every write; each new
        subscription takes the next node, so a node that is down costs the listener one attempt, not all."""
        if not isinstance(self.reader, RedisCluster):
            return None
        await self.reader.initialize()
        nodes = sorted(self.reader.get_nodes(), key=lambda node: node.name)
        self._channel_node += 1
        return nodes[self._channel_node % len(nodes)]

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def tagged(self, kind: str, tag: str, *rest: str) -> str:
        """``{prefix}:{kind}:{<tag>}[:rest...]``: the braces make ``tag`` the key's Redis Cluster hash tag, so
        every key with the same tag (and anything after it) lives in one slot, as multi-key scripts need."""
        return ":".join((self.prefix, kind, f"{{{tag}}}", *rest))

    def scrub(self, text: str) -> str:
        """``text`` without the password, should a driver message ever echo it."""
        if self.password:
            text = text.replace(self.password, "***")
        return text[:200]

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn any failure of the driver or its transport raised inside into :class:`BackendUnavailable`
        with a message that names the endpoint and the operation, never a secret.

        This is the one place the engine maps errors, so it catches everything a broken connection can raise
        on either event loop: the driver's own errors (the cluster client's too), socket errors it did not wrap
        (a reset, a timeout), an ``EOFError`` (``IncompleteReadError``) from a stream cut mid-reply, the
        ``RuntimeError`` uvloop raises when the driver writes to a transport that has already been closed under
        it, and the ``AttributeError`` the driver raises from its own code when another task closed the
        connection under a command (the cluster client closes all its connections when it learns the layout
        again, e.g. during a failover). Only driver code runs inside, so a RuntimeError here is the
        connection's, not a bug of ours; an AttributeError is mapped only when the driver raised it.
        Cancellation passes through.
        """
        try:
            yield
        except (_rexc.TimeoutError, TimeoutError) as exc:
            raise BackendUnavailable(
                f"Redis at {self.endpoint} did not answer within {self.socket_timeout:g}s while {doing}"
            ) from exc
        except _rexc.ConnectionError as exc:
            raise BackendUnavailable(
                f"Redis at {self.endpoint} is unreachable while {doing} ({self.scrub(str(exc))})"
            ) from exc
        except (_rexc.RedisError, _rexc.RedisClusterException) as exc:
            # On a cluster also ClusterDownError, TryAgainError, MovedError/AskError past the driver's
            # redirections, and the driver's own RedisClusterException (no node reachable, slot not covered).
            raise BackendUnavailable(
                f"Redis at {self.endpoint} refused a command while {doing} "
                f"({type(exc).__name__}: {self.scrub(str(exc))})"
            ) from exc
        except (OSError, EOFError, RuntimeError) as exc:  # the transport, unwrapped by the driver
            raise BackendUnavailable(
                f"Redis at {self.endpoint} is unreachable while {doing} ({type(exc).__name__})"
            ) from exc
        except AttributeError as exc:
            if not raised_by_driver(exc):
                raise
            # A connection closed under the command by another task: its socket writer is gone.
            raise BackendUnavailable(
                f"Redis at {self.endpoint} is unreachable while {doing} (connection closed under the command)"
            ) from exc


def raised_by_driver(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by the redis package's own code (the innermost frame of its traceback)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).partition(".")[0] == "redis"


def only_unreachable(exc: BaseException | None) -> bool:
    """Whether a failure of the driver only says that Redis did not answer now (refused, reset, timed out, a
    cluster with no node reachable or no quorum yet), which waiting can mend, rather than that it answered and
    refused us (a wrong password or user, a plain Redis where a cluster was configured, a bad database), which
    only a change of configuration can."""
    if isinstance(exc, (_rexc.AuthenticationError, _rexc.AuthorizationError)):
        return False
    if isinstance(exc, (_rexc.ClusterDownError, _rexc.TryAgainError)):
        return True
    if isinstance(exc, _rexc.RedisClusterException):
        # "cannot be connected" is raised from the connection error of the last node tried; a node that
        # answered but is not in cluster mode is raised without a cause.
        return exc.__cause__ is not None and only_unreachable(exc.__cause__)
    if isinstance(exc, _rexc.ResponseError):
        return False
    return isinstance(exc, (_rexc.TimeoutError, _rexc.ConnectionError, OSError, EOFError, RuntimeError))
