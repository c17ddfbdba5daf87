"""The protective uvicorn settings on a real server on 127.0.0.1: idle, slow and oversized requests are cut off
within their bounds (answered with the error object where an answer is possible) while normal requests go on.

The limits are a fraction of a second so that each wait for the server to act stays short and bounded.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import uvicorn

from integration_status.web.serving import ServerLimits, uvicorn_options
from integration_status.web.starlette import create_app
from tests.web.mounts import StartedServer, make_service

pytestmark = pytest.mark.anyio

LIMITS = ServerLimits(
    header_timeout=0.3,
    body_timeout=0.3,
    keep_alive=0.3,
    max_header_bytes=4096,
    max_connections=20,
    max_requests=3,
)
#: Bound on waiting for the server to act on a deadline: the deadline plus generous scheduling slack.
WITHIN = 3.0
STATUS = b"GET /api/integrations/status?projectId=p HTTP/1.1\r\nHost: t\r\nX-Role: owner\r\n\r\n"


@contextlib.asynccontextmanager
async def served(limits: ServerLimits = LIMITS) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    service = make_service()
    config = uvicorn.Config(
        create_app(service, lifespan=False), lifespan="off", log_level="warning", **uvicorn_options(limits)
    )
    server = StartedServer(config)
    async with service, anyio.create_task_group() as tg:
        await server.serve_until_ready(tg, sock)
        try:
            yield port
        finally:
            server.should_exit = True
    sock.close()


async def read_all(stream: anyio.abc.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection (bounded by WITHIN)."""
    chunks: list[bytes] = []
    with anyio.fail_after(WITHIN):
        while True:
            try:
                chunks.append(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return b"".join(chunks)


def answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body) if body else None


async def status_ok(port: int) -> bool:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(STATUS.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        return answer(await read_all(stream))[0] == 200


async def test_a_connection_that_sends_nothing_is_closed_and_others_still_answer() -> None:
    """An idle new connection is hung up after header_timeout without an answer; status requests go on."""
    async with served() as port, await anyio.connect_tcp("127.0.0.1", port) as idle:
        assert await status_ok(port)
        assert await read_all(idle) == b""
        assert await status_ok(port)


async def test_a_slow_head_gets_a_408_error_object() -> None:
    """Half a request head and then silence: 408 in the error object, then the connection closes."""
    async with served() as port, await anyio.connect_tcp("127.0.0.1", port) as slow:
        await slow.send(b"GET /api/integrations/status?projectId=p HTTP/1.1\r\nHost: t\r\n")
        status, headers, body = answer(await read_all(slow))
        assert status == 408
        assert headers["content-type"] == "application/json"
        assert body["error"]["code"] == "invalid_request"


async def test_an_oversized_head_gets_a_431_error_object() -> None:
    """A head beyond max_header_bytes is cut off with 431 in the error object."""
    async with served() as port, await anyio.connect_tcp("127.0.0.1", port) as big:
        await big.send(b"GET / HTTP/1.1\r\nHost: t\r\nIf-None-Match: " + b"a" * 20_000)
        status, _, body = answer(await read_all(big))
        assert status == 431
        assert body["error"]["code"] == "invalid_request"


async def test_a_slow_body_is_cut_off() -> None:
    """A body that stops half way is not waited for past body_timeout: the connection is closed."""
    async with served() as port, await anyio.connect_tcp("127.0.0.1", port) as slow:
        head = (
            b"POST /api/integrations/actions HTTP/1.1\r\nHost: t\r\nX-Role: owner\r\nIdempotency-Key: k\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        await slow.send(head + b'{"projectId"')
        raw = await read_all(slow)
        assert b"200 OK" not in raw


async def test_an_idle_keep_alive_connection_is_closed_after_keep_alive() -> None:
    """After a response, a connection that asks nothing more is closed after keep_alive."""
    async with served() as port, await anyio.connect_tcp("127.0.0.1", port) as kept:
        await kept.send(STATUS)
        raw = await read_all(kept)
        assert raw.startswith(b"HTTP/1.1 200")


async def test_connections_over_the_bound_are_closed_at_once() -> None:
    """Beyond max_connections a new connection is closed before it can send anything; freed, it works again."""
    async with served() as port, contextlib.AsyncExitStack() as stack:
        for _ in range(LIMITS.max_connections):
            await stack.enter_async_context(await anyio.connect_tcp("127.0.0.1", port))
        async with await anyio.connect_tcp("127.0.0.1", port) as extra:
            assert await read_all(extra) == b""
        await stack.aclose()
        assert await status_ok(port)


async def test_requests_over_the_bound_get_a_503_error_object() -> None:
    """With max_requests event streams open, the next request is a 503 error object with Retry-After."""
    stream = b"GET /api/integrations/events?projectId=p HTTP/1.1\r\nHost: t\r\nX-Role: owner\r\n\r\n"
    async with served() as port, contextlib.AsyncExitStack() as stack:
        for user in range(LIMITS.max_requests):
            conn = await stack.enter_async_context(await anyio.connect_tcp("127.0.0.1", port))
            await conn.send(stream.replace(b"X-Role", f"X-User: u{user}\r\nX-Role".encode()))
            with anyio.fail_after(WITHIN):
                assert b"200" in await conn.receive()
        async with await anyio.connect_tcp("127.0.0.1", port) as late:
            await late.send(STATUS)
            status, headers, body = answer(await read_all(late))
        assert status == 503
        assert headers["retry-after"] == "1"
        assert body["error"]["code"] == "unknown"
