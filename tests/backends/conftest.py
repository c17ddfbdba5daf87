"""Fixtures for the backend tests. Redis fixtures use the server on 127.0.0.1:6379, a unique key prefix per
test, and delete every key under that prefix afterwards."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import pytest

from integration_status.testing import FakeClock

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
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix unique to this test; every key under it is deleted afterwards."""
    import redis.asyncio as aioredis

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_raw(redis_url: str) -> AsyncIterator[Any]:
    """A plain client for looking at (and tampering with) the keys an engine wrote."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


EngineFactory = Callable[..., Awaitable["RedisEngine"]]


@pytest.fixture
async def redis_engines(
    redis_url: str, redis_prefix: str, redis_clock: FakeClock
) -> AsyncIterator[EngineFactory]:
    """Make started engines (each with its own connection pools, like separate workers) sharing the prefix and
    the FakeClock; all are closed at the end. Keyword arguments go to ``RedisEngine.from_url``."""
    from integration_status.backends.redis import RedisEngine

    async with AsyncExitStack() as stack:

        async def make(**kwargs: Any) -> RedisEngine:
            options: dict[str, Any] = {"prefix": redis_prefix, "clock": redis_clock, **kwargs}
            url = options.pop("url", redis_url)
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
    """A loopback TCP proxy in front of the test Redis that a test can cut, as if the server went away."""

    def __init__(self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup) -> None:
        self._listener = listener
        self._tg = tg
        self._streams: list[anyio.abc.SocketStream] = []
        self.port: int = listener.extra(anyio.abc.SocketAttribute.local_port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def serve(self) -> None:
        await self._listener.serve(self._handle, task_group=self._tg)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        upstream = await anyio.connect_tcp(REDIS_HOST, REDIS_PORT)
        self._streams += [client, upstream]
        async with client, upstream, anyio.create_task_group() as tg:
            tg.start_soon(self._pipe, client, upstream, tg)
            tg.start_soon(self._pipe, upstream, client, tg)

    @staticmethod
    async def _pipe(
        src: anyio.abc.SocketStream, dst: anyio.abc.SocketStream, tg: anyio.abc.TaskGroup
    ) -> None:
        try:
            async for chunk in src:
                await dst.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        tg.cancel_scope.cancel()

    async def cut(self) -> None:
        """Close the listener and every forwarded connection: the "server" is gone."""
        self._tg.cancel_scope.cancel()
        await self._listener.aclose()
        for stream in self._streams:
            await stream.aclose()


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[RedisProxy]:
    """A cuttable loopback proxy to the test Redis (``redis_proxy.url``, ``await redis_proxy.cut()``)."""
    async with anyio.create_task_group() as tg:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        proxy = RedisProxy(listener, tg)
        tg.start_soon(proxy.serve)
        yield proxy
        tg.cancel_scope.cancel()
    await listener.aclose()
