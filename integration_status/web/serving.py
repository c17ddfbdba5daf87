"""Server settings that protect by default, for where the library itself starts uvicorn (the demo, the
examples): a deadline for request heads and bodies, a bound on head size, on open connections and on requests
in flight.

uvicorn on its own holds a connection that never sends a request, or sends its head a byte at a time, forever
(its keep-alive timeout only runs between requests and is cancelled by any byte), parses a head of any size with
httptools, and its ``limit_concurrency`` counts idle connections too (so idle sockets would turn legitimate
requests into 503s). :func:`uvicorn_options` gives uvicorn a protocol that adds, per connection:

- ``header_timeout``: a request head must be complete this long after the connection opened or the previous
  response ended; otherwise 408 (in the error object) if part of a head came, and the connection is closed.
- ``body_timeout``: a body must be complete this long after its head; otherwise the connection is closed.
- ``max_header_bytes``: a head larger than this answers 431 and the connection is closed (checked as data
  arrives, so a megabyte header is cut off after one read past the bound).
- ``max_connections``: connections beyond it are closed as soon as they open (fds stay available).
- ``max_requests``: requests in flight (event streams included) beyond it answer 503 with ``Retry-After``.

Idle keep-alive connections are closed by uvicorn after ``keep_alive`` seconds. Behind a proxy, set the same
bounds there too (docs/operations.md, "Hardening").
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import resource
from typing import Any, Final

import attrs

from integration_status._logging import get_logger

__all__ = ["ServerLimits", "guarded_protocol", "raise_fd_limit", "uvicorn_options"]

_log = get_logger("integration_status.web")


@attrs.frozen(kw_only=True)
class ServerLimits:
    """The bounds the demo's server runs with (seconds, bytes, counts)."""

    header_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    body_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    keep_alive: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    max_header_bytes: int = attrs.field(default=16_384, validator=attrs.validators.ge(1024))
    max_connections: int = attrs.field(default=8_192, validator=attrs.validators.ge(1))
    max_requests: int = attrs.field(default=4_096, validator=attrs.validators.ge(1))
    backlog: int = attrs.field(default=2_048, validator=attrs.validators.ge(1))


def _raw_answer(status: int, reason: str, code: str, message: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    ).encode()
    return head + extra + b"\r\n" + body


_TOO_LARGE: Final = _raw_answer(
    431, "Request Header Fields Too Large", "invalid_request", "Request head too large"
)
_TOO_SLOW: Final = _raw_answer(408, "Request Timeout", "invalid_request", "Request head not received in time")
_BUSY_BODY: Final = json.dumps(
    {"error": {"code": "unknown", "message": "The server is busy", "hint": "Try again"}},
    separators=(",", ":"),
).encode()


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI answer to a request over ``max_requests``: 503 in the error object."""
    headers = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
        (b"content-length", str(len(_BUSY_BODY)).encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _BUSY_BODY})


def guarded_protocol(limits: ServerLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the deadlines and bounds of ``limits`` (see the module docstring)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _guard: asyncio.TimerHandle | None = None
        _head_bytes = 0
        _in_head = True

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                _log.warning("integration_status.server.connection_refused", reason="max_connections")
                transport.close()
                return
            self._arm(limits.header_timeout, self._head_late)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, delay: float, callback: Any) -> None:
            self._disarm()
            self._guard = self.loop.call_later(delay, callback)

        def _disarm(self) -> None:
            if self._guard is not None:
                self._guard.cancel()
                self._guard = None

        def _serving(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _close_with(self, answer: bytes) -> None:
            if not self.transport.is_closing():
                if not self._serving():  # never interleave with a response being written
                    self.transport.write(answer)
                self.transport.close()

        def _head_late(self) -> None:
            self._guard = None
            if self._serving() or self.transport.is_closing():
                return
            if self._head_bytes:
                self._close_with(_TOO_SLOW)
            else:
                self.transport.close()  # nothing was asked: just hang up

        def _body_late(self) -> None:
            self._guard = None
            if not self.transport.is_closing():
                self.transport.close()  # the app sees a disconnect and stops waiting for the body

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            super().data_received(data)
            if self._in_head:
                self._head_bytes += len(data)
                if self._head_bytes > limits.max_header_bytes:
                    self._close_with(_TOO_LARGE)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_bytes = 0
            self._arm(limits.body_timeout, self._body_late)
            if len(self.tasks) < limits.max_requests:
                super().on_headers_complete()
                return
            _log.warning("integration_status.server.request_refused", reason="max_requests")
            app, self.app = self.app, _busy
            try:
                super().on_headers_complete()
            finally:
                self.app = app

        def on_message_complete(self) -> None:
            self._disarm()
            self._in_head = True
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and not self.pipeline:
                self._arm(limits.header_timeout, self._head_late)

    return GuardedHttpToolsProtocol


def uvicorn_options(limits: ServerLimits | None = None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that apply ``limits``. Without httptools
    installed, h11 gets the head-size bound and the keep-alive timeout only (no head or body deadline)."""
    limits = limits or ServerLimits()
    options: dict[str, Any] = {
        "timeout_keep_alive": limits.keep_alive,
        "backlog": limits.backlog,
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "timeout_graceful_shutdown": 1,
    }
    if importlib.util.find_spec("httptools") is not None:
        options["http"] = guarded_protocol(limits)
    else:
        _log.warning("integration_status.server.unguarded", reason="httptools is not installed")
        options["http"] = "h11"
    return options


def raise_fd_limit(want: int) -> int:
    """Raise the soft open-files limit towards ``want`` (never past the hard limit); the new soft limit. A server
    that holds ``max_connections`` sockets needs that many descriptors and some to spare."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
