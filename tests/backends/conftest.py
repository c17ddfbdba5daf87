"""Fixtures for the backend tests. Redis fixtures run on the test's ``redis_target`` (the server on
127.0.0.1:6379, or the local Redis Cluster: see tests/conftest.py), use a unique key prefix per test, and delete
every key under that prefix afterwards."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from integration_status.testing import FakeClock
from tests.redis_cluster import RedisTarget

if TYPE_CHECKING:
    from integration_status.backends.redis import RedisEngine

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _redis_reachable() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    """The test Redis; skips (or fails when CI=true) if nothing listens there."""
    if not _redis_reachable():
        message = f"Redis not reachable on {REDIS_HOST}:{REDIS_PORT}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
def redis_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_prefix(redis_target: RedisTarget) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted afterwards (on every cluster node)."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield prefix
    redis_target.purge(prefix)


@pytest.fixture
async def redis_raw(redis_target: RedisTarget) -> AsyncIterator[Any]:
    """A client for looking at (and tampering with) the keys an engine wrote: cluster-aware on the cluster."""
    client = redis_target.raw()
    yield client
    await client.aclose()


EngineFactory = Callable[..., Awaitable["RedisEngine"]]


@pytest.fixture
async def redis_engines(
    redis_target: RedisTarget, redis_prefix: str, redis_clock: FakeClock
) -> AsyncIterator[EngineFactory]:
    """Make started engines (each with its own connection pools, like separate workers) sharing the prefix and
    the FakeClock, on the test's target (single Redis or cluster); all are closed at the end. Keyword arguments
    go to ``RedisEngine.from_url``; ``url=`` (a proxy in front of the single Redis) needs a ``redis_single``
    test."""
    from integration_status.backends.redis import RedisEngine

    async with AsyncExitStack() as stack:

        async def make(**kwargs: Any) -> RedisEngine:
            options: dict[str, Any] = {"prefix": redis_prefix, "clock": redis_clock, **kwargs}
            url = options.pop("url", None)
            if url is None:
                engine = redis_target.engine(**options)
            else:
                assert not redis_target.cluster, "a URL of its own is for the single Redis: mark the test"
                engine = RedisEngine.from_url(url, **options)
            return await stack.enter_async_context(engine)

        yield make


@pytest.fixture
async def redis_engine(redis_engines: EngineFactory) -> RedisEngine:
    return await redis_engines()


@pytest.fixture
async def redis_engine_b(redis_engines: EngineFactory) -> RedisEngine:
    """A second engine on the same Redis and prefix with its own pools: another worker."""
    return await redis_engines()


class RedisProxy:
    """A loopback TCP proxy in front of the test Redis that a test can cut (as if the server went away) and
    restore on the same port (as if it came back). It runs on threads: it holds no cancel scope of the test.
    """

    def __init__(self, upstream: tuple[str, int] = (REDIS_HOST, REDIS_PORT)) -> None:
        #: The server behind the proxy: the test Redis unless another loopback server is named.
        self.upstream = upstream
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        # Set while the proxy forwards; cleared while it is hung (the pipes block on it, no polling).
        self._flowing = threading.Event()
        self._flowing.set()
        #: Seconds added before each reply chunk is passed back (a slow server or network).
        self.latency = 0.0
        with self._lock:
            self._listener: socket.socket | None = self._listen(0)
            self.port: int = self._listener.getsockname()[1]

    @property
    def hung(self) -> bool:
        """While True the proxy forwards nothing, either way, on old and new connections (a hung server)."""
        return not self._flowing.is_set()

    @hung.setter
    def hung(self, value: bool) -> None:
        if value:
            self._flowing.clear()
        else:
            self._flowing.set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.upstream)
            except OSError:
                return
            with self._lock:
                if listener is not self._listener:  # cut while this connection was being accepted
                    for sock in (client, upstream):
                        self._close(sock)
                    return
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while chunk := src.recv(65536):
                self._flowing.wait()  # returns when un-hung, or cut (which also un-hangs)
                if replies and self.latency:
                    time.sleep(self.latency)
                dst.sendall(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Stop listening and drop every forwarded connection: the "server" is gone."""
        self.hung = False
        with self._lock:
            if self._listener is not None:
                self._close(self._listener)
            self._listener = None
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            self._close(sock)

    def reset(self) -> None:
        """Reset every forwarded connection (TCP RST, not a clean close) and keep listening: what a restarted
        server or a load balancer dropping idle connections looks like to the client."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    def restore(self) -> None:
        """Listen again on the same port: the "server" is back (empty connections, same data)."""
        with self._lock:
            self._listener = self._listen(self.port)

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[RedisProxy]:
    """A cuttable loopback proxy to the test Redis (``redis_proxy.url``, ``.cut()``, ``.restore()``)."""
    proxy = RedisProxy()
    yield proxy
    proxy.cut()


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A PostgreSQL schema unique to this test (skips without the server); dropped with its tables afterwards."""
    import psycopg

    from tests.services import POSTGRES_DSN, require_postgres

    require_postgres()
    schema = f"test_{uuid.uuid4().hex[:10]}"
    yield schema
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


PostgresFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def postgres_stores(postgres_schema: str, redis_clock: FakeClock) -> AsyncIterator[PostgresFactory]:
    """Make open PostgresIdempotencyStores (each with its own pool, like separate workers) on the test schema
    and the shared FakeClock; all are closed at the end."""
    from integration_status.backends.postgres import PostgresIdempotencyStore
    from tests.services import POSTGRES_DSN

    async with AsyncExitStack() as stack:

        async def make(**kwargs: Any) -> PostgresIdempotencyStore:
            options: dict[str, Any] = {"schema": postgres_schema, "clock": redis_clock, **kwargs}
            store = PostgresIdempotencyStore.from_dsn(POSTGRES_DSN, **options)
            return await stack.enter_async_context(store)

        yield make


async def until_store(store: Any, predicate: Callable[[], bool], *, within: float = 10.0) -> None:
    """Wait (bounded) until ``predicate`` holds of a Redis cache store, looking again after each change the
    store makes or is told of (``wait_changed``): its channel's messages and its trust coming and going."""
    with anyio.fail_after(within):
        while not predicate():
            await store.wait_changed(store.generation)
