"""The demo server behind ``integration-status demo``: simulated providers, the in-memory engine (or Redis with
``--redis``), the API under ``/api/integrations`` and the status bar page at ``/``.

Demo-only authentication: the viewer comes from two headers (or the same-named query parameters, because a
browser's EventSource cannot send headers): ``X-User`` (user id, default ``demo``) and ``X-Role`` (``owner``,
``admin``, ``member``, ``viewer``; default ``owner``). Never use this scheme in a real app.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from integration_status.core.clock import SYSTEM_CLOCK, Clock
from integration_status.demo.simulated import World, simulated_adapters
from integration_status.protocols import ProjectConnections, ProviderConnection, RequestInfo, Viewer
from integration_status.service import Settings, StatusService
from integration_status.web.starlette import routes as api_routes

ROLES = ("owner", "admin", "member", "viewer")
STATIC = Path(__file__).resolve().parent.parent / "web" / "static"


class DemoConnections:
    """Two projects: ``demo`` (all four linked) and ``empty`` (none). Any other id does not exist."""

    async def __call__(self, project_id: str) -> ProjectConnections | None:
        if project_id == "demo":
            return ProjectConnections(
                project_id="demo",
                providers={
                    "github": ProviderConnection(provider="github", settings={"repository": "acme/storefront"}),
                    "vercel": ProviderConnection(provider="vercel", settings={"project": "storefront"}),
                    "sanity": ProviderConnection(provider="sanity", settings={"project_id": "demo1234"}),
                    "supabase": ProviderConnection(provider="supabase", settings={"project_ref": "demoref"}),
                },
            )
        if project_id == "empty":
            return ProjectConnections(project_id="empty")
        return None


async def demo_authenticator(request: RequestInfo) -> Viewer | None:
    """Demo only: trust the X-User / X-Role headers (or ``user`` / ``role`` query parameters)."""
    user = request.headers.get("x-user") or request.query.get("user") or "demo"
    role = (request.headers.get("x-role") or request.query.get("role") or "owner").lower()
    if role not in ROLES:
        return None
    return Viewer(user_id=user, roles={role})


def build_service(*, clock: Clock = SYSTEM_CLOCK, engine: Any = None, seed: int = 7) -> tuple[StatusService, World]:
    world = World(clock=clock, seed=seed)
    service = StatusService(
        connections=DemoConnections(),
        adapters=simulated_adapters(world),
        authenticator=demo_authenticator,
        settings=Settings(),
        engine=engine,
        clock=clock,
    )
    return service, world


def build_app(*, clock: Clock = SYSTEM_CLOCK, redis_url: str | None = None, seed: int = 7) -> Starlette:
    """The demo ASGI app."""
    engine = None
    if redis_url:
        from integration_status.backends.redis import RedisEngine

        engine = RedisEngine.from_url(redis_url, clock=clock)
    service, world = build_service(clock=clock, engine=engine, seed=seed)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with service:
            publish = getattr(service, "publish", None)
            if publish is not None:

                async def pump() -> None:
                    # Turn the world's happenings (pushes, document edits) into events, as webhooks would.
                    while True:
                        await clock.sleep(1.0)
                        for event in world.drain_events():
                            await publish(event["projectId"], event)

                service.spawn(pump)
            yield

    async def index(request: Any) -> RedirectResponse:
        return RedirectResponse("/static/index.html?projectId=demo")

    app = Starlette(
        routes=[
            Route("/", index),
            *api_routes(service),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.world = world
    return app


def run(*, host: str = "127.0.0.1", port: int = 8000, redis_url: str | None = None) -> None:
    """Serve the demo with uvicorn until interrupted."""
    import uvicorn

    print(f"integration-status demo: open http://{host}:{port}/  (API: /api/integrations/status?projectId=demo)")
    uvicorn.run(build_app(redis_url=redis_url), host=host, port=port, log_level="warning")
