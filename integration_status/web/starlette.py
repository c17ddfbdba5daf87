"""Starlette mount (extra ``[starlette]``): an ASGI app exposing the endpoints under a prefix.

Standalone::

    app = create_app(service)                       # serves /api/integrations/...; runs the service's lifespan

Inside FastAPI (mounted apps do not get lifespan events, so hand the service's lifespan to the outer app)::

    app = FastAPI(lifespan=service.lifespan)
    app.mount("/api/integrations", create_app(service, prefix=""))
"""

from __future__ import annotations

import contextlib
import signal
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Final, TypeAlias

import anyio

try:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response as StarletteResponse
    from starlette.routing import BaseRoute, Route
    from starlette.types import Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "integration_status.web.starlette needs Starlette: pip install 'integration-status[starlette]'"
    ) from exc

from integration_status._logging import get_logger
from integration_status.exceptions import ConfigurationError
from integration_status.protocols import RequestInfo
from integration_status.service.facade import StatusService
from integration_status.service.webhooks import DEFAULT_MAX_BODY as _DEFAULT_MAX_BODY
from integration_status.web import handlers
from integration_status.web._asgi import ScopeHeaders, StatusEndpoint, query_dict, scope_info
from integration_status.web.handlers import Response, Write

__all__ = [
    "DEFAULT_PREFIX",
    "ERROR_HANDLERS",
    "EXIT_POLL",
    "MAX_WEBHOOK_BODY",
    "create_app",
    "routes",
    "running_server",
    "watch_server_exit",
]

DEFAULT_PREFIX: Final = "/api/integrations"
MAX_WEBHOOK_BODY: Final = _DEFAULT_MAX_BODY
#: Seconds between two looks at the server's exit flag (uvicorn itself looks every 0.1 s).
EXIT_POLL: Final = 0.1

_log = get_logger("integration_status.web.starlette")
#: Services whose server's exit is watched already (one watch per service and process).
_watched: weakref.WeakSet[StatusService] = weakref.WeakSet()


def running_server() -> Any:
    """The uvicorn ``Server`` running this process, or None.

    uvicorn waits for open connections to close *before* it sends the lifespan shutdown, so an app holding
    event streams learns that the server stops only from the server itself. uvicorn handles SIGTERM and SIGINT
    with a bound method of its ``Server``, whose ``should_exit`` flag it sets on the signal: the handler
    installed for SIGTERM leads to that flag without patching anything.
    """
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    if server is None or not type(server).__module__.startswith("uvicorn"):
        return None
    return server if isinstance(getattr(server, "should_exit", None), bool) else None


def watch_server_exit(service: StatusService, server: Any = None) -> None:
    """Once per service: end every open event stream (each gets a final ``retry:`` hint) as soon as the ASGI
    server starts to stop, so that it need not wait for the clients. Started with the first stream; under a
    server that announces its end only by the lifespan shutdown, that shutdown ends the streams instead."""
    if service in _watched or not service.running:
        return
    server = server if server is not None else running_server()
    if server is None:
        return
    _watched.add(service)

    async def watch() -> None:
        try:
            while not server.should_exit:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
                await anyio.sleep(EXIT_POLL)
            _log.info("integration_status.starlette.server_stopping", streams=len(service.streams))
            service.streams.shutdown()
        finally:
            _watched.discard(service)

    service.spawn(watch)


_Spawn: TypeAlias = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


class _WriterResponse(StarletteResponse):
    """Streams what a handler's writer sends while a second task watches for the client going away; a
    disconnect cancels the writer (which cleans up in ``finally``).

    The watch is a plain task of the service (``spawn``: :meth:`StatusService.spawn_plain`), so a stream costs
    the server's request task and that one small task, with no task group of its own; without ``spawn`` (or
    with the service stopped) the writer and the watch share a task group of their own.
    """

    def __init__(
        self,
        writer: Callable[[Write], Awaitable[None]],
        status_code: int,
        headers: tuple[tuple[str, str], ...],
        spawn: _Spawn | None = None,
    ) -> None:
        # Not Response.__init__: no ``body`` and no Content-Length (a stream).
        self.status_code = status_code
        self.background = None
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        self._writer = writer
        self._spawn = spawn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The watch and the writes are methods on this response, not closures: a stream lives long and there
        # are thousands, so each object less is less for the collector to walk.
        self._receive = receive
        self._send = send
        self._disconnected = False
        self._writing = writing = anyio.CancelScope()
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if self._spawn_watch(self._watch):
            disconnected = await self._write(self._send_body, writing)
        else:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch)
                disconnected = await self._write(self._send_body, writing)
                tg.cancel_scope.cancel()
        if not (disconnected or self._disconnected):
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch(self) -> None:
        receive = self._receive
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:  # a broken receive channel means the client is gone too
            pass
        self._disconnected = True
        self._writing.cancel()

    async def _send_body(self, chunk: bytes) -> None:
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    def _spawn_watch(self, watch: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Start ``watch`` as the service's task; False when there is none (not running). The watch is
        not stopped when the writer ends: once the response is complete, receive() answers http.disconnect
        (ASGI), so it ends by itself."""
        if self._spawn is None:
            return False
        try:
            self._spawn(watch)
        except ConfigurationError:
            return False
        return True

    async def _write(self, write: Write, writing: anyio.CancelScope) -> bool:
        """Run the writer; True when the client went away (the watch cancelled it, or a write broke)."""
        with writing:
            try:
                await self._writer(write)
            except OSError:  # the connection broke while writing
                return True
        return writing.cancel_called


class _EventsEndpoint:
    """``GET /events`` as a plain ASGI app (a Starlette ``Route`` treats a non-function endpoint as one). A
    stream lives as long as its client, and a worker holds thousands: Starlette's request/response wrapper
    would keep its coroutines, closures and a second ``Request`` alive for each of them, some twenty objects
    more per stream for every full garbage collection to walk."""

    def __init__(self, service: StatusService) -> None:
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = self._service
        watch_server_exit(service)
        response = await handlers.handle_events(service, scope_info(scope, receive))
        await _to_starlette(response, service.spawn_plain)(scope, receive, send)


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, reading at most ``limit + 1`` bytes (the handler answers 413/400 past ``limit``)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    except ClientDisconnect:
        pass
    return b"".join(chunks)


def _info(request: Request) -> Any:
    return RequestInfo(
        method=request.method.upper(),
        path=request.url.path,
        headers=ScopeHeaders(request.scope["headers"]),
        query=query_dict(request.scope.get("query_string", b"")),
        raw=request,
    )


def _to_starlette(response: Response, spawn: _Spawn | None = None) -> StarletteResponse:
    if response.writer is not None:
        return _WriterResponse(response.writer, response.status, response.headers, spawn)
    return StarletteResponse(
        content=response.body, status_code=response.status, headers=dict(response.headers)
    )


def routes(service: StatusService, *, prefix: str = DEFAULT_PREFIX) -> list[BaseRoute]:
    """The endpoints as Starlette routes, for hosts that add them to their own router."""
    prefix = prefix.rstrip("/")

    async def actions(request: Request) -> StarletteResponse:
        body = await _read_body(request, handlers.MAX_ACTION_BODY)
        return _to_starlette(await handlers.handle_action(service, _info(request), body))

    async def webhooks(request: Request) -> StarletteResponse:
        body = await _read_body(request, MAX_WEBHOOK_BODY)
        provider = request.path_params["provider"]
        return _to_starlette(await handlers.handle_webhook(service, provider, _info(request), body))

    async def health(request: Request) -> StarletteResponse:
        return _to_starlette(await handlers.handle_health(service, _info(request)))

    async def openapi(request: Request) -> StarletteResponse:
        # Mounted (e.g. inside FastAPI), the mount's path is the root_path: the document lists full paths.
        return _to_starlette(handlers.handle_openapi(request.scope.get("root_path", "") + prefix))

    return [
        Route(f"{prefix}/status", StatusEndpoint(service), methods=["GET"], name="integration_status:status"),
        Route(f"{prefix}/actions", actions, methods=["POST"], name="integration_status:actions"),
        Route(
            f"{prefix}/events", _EventsEndpoint(service), methods=["GET"], name="integration_status:events"
        ),
        Route(
            f"{prefix}/webhooks/{{provider}}", webhooks, methods=["POST"], name="integration_status:webhooks"
        ),
        Route(f"{prefix}/health", health, methods=["GET"], name="integration_status:health"),
        Route(f"{prefix}/openapi.json", openapi, methods=["GET"], name="integration_status:openapi"),
    ]


async def _http_error(request: Request, exc: Exception) -> StarletteResponse:
    """Routing's own 404 and 405 answers in the error object every endpoint uses (``Allow`` kept)."""
    assert isinstance(exc, HTTPException)
    code = handlers.HTTP_ERROR_CODES.get(exc.status_code, "invalid_request")
    body = {"error": {"code": code, "message": exc.detail}}
    return _to_starlette(handlers.json_response(exc.status_code, body, tuple((exc.headers or {}).items())))


async def _server_error(request: Request, exc: Exception) -> StarletteResponse:
    """An unexpected failure as the error object too (the server still logs the exception)."""
    body = {"error": {"code": "unknown", "message": "Internal error"}}
    return _to_starlette(handlers.json_response(500, body))


#: The exception handlers that make routing's 404/405 and unexpected 500s answer with the error object; pass
#: them to a Starlette app that serves the routes among its own (the demo does).
ERROR_HANDLERS: Final[Mapping[Any, Callable[[Request, Exception], Awaitable[StarletteResponse]]]] = {
    HTTPException: _http_error,
    Exception: _server_error,
}


def create_app(service: StatusService, *, prefix: str = DEFAULT_PREFIX, lifespan: bool = True) -> Starlette:
    """An ASGI app serving the endpoints under ``prefix``. With ``lifespan=True`` it starts and stops the service
    with the app (when mounted inside another app, pass ``lifespan=service.lifespan`` to the outer app). Unknown
    paths and wrong methods answer 404 / 405 with the error object every endpoint uses."""
    return Starlette(
        routes=routes(service, prefix=prefix),
        lifespan=service.lifespan if lifespan else None,
        exception_handlers=dict(ERROR_HANDLERS),
    )
