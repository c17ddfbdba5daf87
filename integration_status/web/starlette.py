"""Starlette mount (extra ``[starlette]``): an ASGI app exposing the endpoints under a prefix.

Standalone::

    app = create_app(service)                       # serves /api/integrations/...; runs the service's lifespan

Inside FastAPI (mounted apps do not get lifespan events, so hand the service's lifespan to the outer app)::

    app = FastAPI(lifespan=service.lifespan)
    app.mount("/api/integrations", create_app(service, prefix=""))
"""

from __future__ import annotations

from typing import Any

try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response as StarletteResponse
    from starlette.responses import StreamingResponse
    from starlette.routing import BaseRoute, Route
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "integration_status.web.starlette needs Starlette: pip install 'integration-status[starlette]'"
    ) from exc

from integration_status.service import StatusService
from integration_status.web import handlers
from integration_status.web.handlers import Response

DEFAULT_PREFIX = "/api/integrations"


def _info(request: Request) -> Any:
    return handlers.request_info(
        request.method, request.url.path, dict(request.headers), dict(request.query_params), raw=request
    )


def _to_starlette(response: Response) -> StarletteResponse:
    headers = dict(response.headers)
    if response.stream is not None:
        return StreamingResponse(response.stream(), status_code=response.status, headers=headers)
    return StarletteResponse(content=response.body, status_code=response.status, headers=headers)


def routes(service: StatusService, *, prefix: str = DEFAULT_PREFIX) -> list[BaseRoute]:
    """The endpoints as Starlette routes, for hosts that add them to their own router."""
    prefix = prefix.rstrip("/")

    async def status(request: Request) -> StarletteResponse:
        return _to_starlette(await handlers.handle_status(service, _info(request)))

    return [Route(f"{prefix}/status", status, methods=["GET"], name="integration_status:status")]


def create_app(service: StatusService, *, prefix: str = DEFAULT_PREFIX, lifespan: bool = True) -> Starlette:
    """An ASGI app serving the endpoints under ``prefix``. With ``lifespan=True`` it starts and stops the service
    with the app (when mounted inside another app, pass ``lifespan=service.lifespan`` to the outer app)."""
    return Starlette(routes=routes(service, prefix=prefix), lifespan=service.lifespan if lifespan else None)
