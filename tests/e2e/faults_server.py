"""A misbehaving HTTP server on loopback for the fault-injection tests: one switchable ``mode`` decides how
every request is answered (well, or by hanging, dripping, resetting, erroring ...). Raw asyncio, so that a
reset is a real RST and a drip really trickles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

GOOD_REPO = {"default_branch": "main", "full_name": "acme/storefront", "permissions": {"push": True}}


def good_activity() -> list[dict[str, str]]:
    """A push two minutes ago (relative to the wall clock: the adapter calls older pushes stale)."""
    pushed = datetime.now(UTC) - timedelta(minutes=2)
    return [{"timestamp": pushed.strftime("%Y-%m-%dT%H:%M:%SZ"), "after": "a" * 40, "ref": "refs/heads/main"}]


BIG = 2_000_000  # over HttpClient's default max_body of 1 MB


class FaultServer:
    """``mode`` is one of :data:`MODES`; ``open_connections`` counts the connections held right now."""

    MODES = (
        "ok", "hang", "drip", "reset", "500", "502_html", "429", "403_exhausted", "401", "404",
        "malformed", "truncated", "enormous",
    )  # fmt: skip

    def __init__(self) -> None:
        self.mode = "ok"
        self.open_connections = 0
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self._idle.clear()
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.requests += 1
                path = head.split(b" ", 2)[1].decode()
                if not await self._answer(path, reader, writer):
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            self.open_connections -= 1
            if not self.open_connections:
                self._idle.set()
            writer.close()

    async def _answer(self, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must end."""
        mode = self.mode
        if mode == "hang":
            # Until the client goes away (the read sees EOF) or the server stops.
            await reader.read()
            return False
        if mode == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if mode == "drip":
            writer.write(_head(200, {"Content-Type": "application/json", "Content-Length": "4096"}))
            for _ in range(4096):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.05)
            return False
        if mode == "truncated":
            body = json.dumps(GOOD_REPO).encode()
            writer.write(_head(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}))
            writer.write(body[: len(body) // 2])
            await writer.drain()
            return False
        if mode == "enormous":
            writer.write(_head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}))
            chunk = b" " * 65536
            for _ in range(BIG // len(chunk) + 1):
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        status, headers, body = _canned(mode, path)
        writer.write(_head(status, {**headers, "Content-Length": str(len(body))}) + body)
        await writer.drain()
        return True

    async def drained(self) -> None:
        """Wait (2 s at most) until the server holds no connection; it notices closed ones a moment later."""
        await asyncio.wait_for(self._idle.wait(), 2.0)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FaultServer]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _canned(mode: str, path: str) -> tuple[int, dict[str, str], bytes]:
    as_json = {"Content-Type": "application/json"}
    if mode == "ok":
        body: Any = good_activity() if path.split("?")[0].endswith("/activity") else GOOD_REPO
        return 200, as_json, json.dumps(body).encode()
    if mode == "500":
        return 500, as_json, b'{"message":"Server Error"}'
    if mode == "502_html":
        return 502, {"Content-Type": "text/html"}, b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    if mode == "429":
        return 429, {**as_json, "Retry-After": "120"}, b'{"message":"slow down"}'
    if mode == "403_exhausted":
        headers = {**as_json, "x-ratelimit-remaining": "0", "x-ratelimit-reset": "9999999999"}
        return 403, headers, b'{"message":"API rate limit exceeded"}'
    if mode == "401":
        return 401, as_json, b'{"message":"Bad credentials"}'
    if mode == "404":
        return 404, as_json, b'{"message":"Not Found"}'
    if mode == "malformed":
        return 200, as_json, b'{"default_branch": "main", '
    raise ValueError(f"unknown mode {mode!r}")
