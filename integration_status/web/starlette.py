"""Starlette mount (extra ``[starlette]``): an ASGI app exposing the endpoints under a prefix.

Standalone::

    app = create_app(service)                       # serves /api/integrations/...; runs the service's lifespan

Inside FastAPI (mounted apps do not get lifespan events, so hand the service's lifespan to the outer app)::

    app = FastAPI(lifespan=service.lifespan)
    app.mount("/api/integrations", create_app(service, prefix=""))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

try:
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response as StarletteResponse
    from starlette.routing import BaseRoute, Route
    from starlette.types import Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "integration_status.web.starlette needs Starlette: pip install 'integration-status[starlette]'"
    ) from exc

from integration_status.service import StatusService
from integration_status.web import handlers
from integration_status.web.handlers import Response, Write

DEFAULT_PREFIX = "/api/integrations"
MAX_WEBHOOK_BODY = 1_048_576


class _WriterResponse(StarletteResponse):
    """Streams what a handler's writer sends; the writer, a disconnect watch and the end of the body run in
    one task group, so a client that goes away cancels the writer (which cleans up in ``finally``)."""

    def __init__(self, writer: Callable[[Write], Awaitable[None]], status_code: int, headers: dict[str, str]) -> None:
        # Not Response.__init__: with no ``body`` attribute, init_headers adds no Content-Length (a stream).
        self.status_code = status_code
        self.background = None
        self.init_headers(headers)
        self._writer = writer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        disconnected = False
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal disconnected
                while (await receive())["type"] != "http.disconnect":
                    pass
                disconnected = True
                tg.cancel_scope.cancel()

            async def write(chunk: bytes) -> None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

            tg.start_soon(watch)
            try:
                await self._writer(write)
            except OSError:  # the connection broke while writing
                disconnected = True
            tg.cancel_scope.cancel()
        if not disconnected:
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass


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
    return handlers.request_info(
        request.method, request.url.path, dict(request.headers), dict(request.query_params), raw=request
    )


def _to_starlette(response: Response) -> StarletteResponse:
    headers = dict(response.headers)
    if response.writer is not None:
        return _WriterResponse(response.writer, response.status, headers)
    return StarletteResponse(content=response.body, status_code=response.status, headers=headers)


def routes(service: StatusService, *, prefix: str = DEFAULT_PREFIX) -> list[BaseRoute]:
    """The endpoints as Starlette routes, for hosts that add them to their own router."""
    prefix = prefix.rstrip("/")

    async def status(request: Request) -> StarletteResponse:
        return _to_starlette(await handlers.handle_status(service, _info(request)))

    async def actions(request: Request) -> StarletteResponse:
        body = await _read_body(request, handlers.MAX_ACTION_BODY)
        return _to_starlette(await handlers.handle_action(service, _info(request), body))

    async def events(request: Request) -> StarletteResponse:
        return _to_starlette(await handlers.handle_events(service, _info(request)))

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
        Route(f"{prefix}/status", status, methods=["GET"], name="integration_status:status"),
        Route(f"{prefix}/actions", actions, methods=["POST"], name="integration_status:actions"),
        Route(f"{prefix}/events", events, methods=["GET"], name="integration_status:events"),
        Route(f"{prefix}/webhooks/{{provider}}", webhooks, methods=["POST"], name="integration_status:webhooks"),
        Route(f"{prefix}/health", health, methods=["GET"], name="integration_status:health"),
        Route(f"{prefix}/openapi.json", openapi, methods=["GET"], name="integration_status:openapi"),
    ]


def create_app(service: StatusService, *, prefix: str = DEFAULT_PREFIX, lifespan: bool = True) -> Starlette:
    """An ASGI app serving the endpoints under ``prefix``. With ``lifespan=True`` it starts and stops the service
    with the app (when mounted inside another app, pass ``lifespan=service.lifespan`` to the outer app)."""
    return Starlette(routes=routes(service, prefix=prefix), lifespan=service.lifespan if lifespan else None)
