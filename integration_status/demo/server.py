"""The demo server behind ``integration-status demo``: simulated providers, the in-memory engine (or Redis with
``--redis``), the API under ``/api/integrations`` and the status bar page at ``/``.

Demo-only authentication: the viewer comes from two headers (or the same-named query parameters, because a
browser's EventSource cannot send headers): ``X-User`` (user id, default ``demo``) and ``X-Role`` (``owner``,
``admin``, ``member``, ``viewer``; default ``owner``). Never use this scheme in a real app.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from integration_status.adapters.http import HttpClient
from integration_status.core.clock import SYSTEM_CLOCK, Clock
from integration_status.demo.simulated import Activity, World, simulated_adapters
from integration_status.protocols import ProjectConnections, ProviderConnection, RequestInfo, Viewer
from integration_status.service.facade import StatusService
from integration_status.service.settings import Settings
from integration_status.web import STATUS_BAR_DIR
from integration_status.web.serving import ServerLimits, raise_fd_limit, uvicorn_options
from integration_status.web.starlette import ERROR_HANDLERS
from integration_status.web.starlette import routes as api_routes

ROLES = ("owner", "admin", "member", "viewer")
STATIC = STATUS_BAR_DIR


class DemoConnections:
    """Two projects: ``demo`` (all four linked) and ``empty`` (none). Any other id does not exist."""

    # The demo's links never change: built once (the status endpoint asks for them on every request).
    _PROJECTS: Mapping[str, ProjectConnections] = {
        "demo": ProjectConnections(
            project_id="demo",
            providers={
                "github": ProviderConnection(provider="github", settings={"repository": "acme/storefront"}),
                "vercel": ProviderConnection(provider="vercel", settings={"project": "storefront"}),
                "sanity": ProviderConnection(provider="sanity", settings={"project_id": "demo1234"}),
                "supabase": ProviderConnection(provider="supabase", settings={"project_ref": "demoref"}),
            },
        ),
        "empty": ProjectConnections(project_id="empty"),
    }

    async def __call__(self, project_id: str) -> ProjectConnections | None:
        return self._PROJECTS.get(project_id)


async def demo_health_authorizer(viewer: Viewer) -> bool:
    """Demo only: owners and admins read the detailed health checks; everyone else gets the liveness answer."""
    roles = set(viewer.roles).union(*viewer.project_roles.values())
    return bool(roles & {"owner", "admin"})


def demo_project_ids() -> tuple[str, ...]:
    """The projects the demo serves."""
    return tuple(DemoConnections._PROJECTS)


async def demo_authenticator(request: RequestInfo) -> Viewer | None:
    """Demo only: trust the X-User / X-Role headers (or ``user`` / ``role`` query parameters)."""
    user = request.headers.get("x-user") or request.query.get("user") or "demo"
    role = (request.headers.get("x-role") or request.query.get("role") or "owner").lower()
    if role not in ROLES:
        return None
    # The demo's projects are open to every demo user with the role asked for.
    return Viewer(user_id=user, project_roles={key: {role} for key in demo_project_ids()})


def build_service(
    *,
    clock: Clock = SYSTEM_CLOCK,
    engine: Any = None,
    seed: int = 7,
    deploy_seconds: float = 4.0,
    activity: Activity | None = None,
) -> tuple[StatusService, World]:
    """The demo's service over a simulated world (lively by default: see :class:`Activity`)."""
    world = World(clock=clock, seed=seed, activity=activity or Activity.lively())
    service = StatusService(
        connections=DemoConnections(),
        adapters=simulated_adapters(world, deploy_seconds=deploy_seconds),
        authenticator=demo_authenticator,
        health_authorizer=demo_health_authorizer,
        settings=Settings(),
        engine=engine,
        clock=clock,
    )
    return service, world


def build_real_service(
    env: Mapping[str, str], *, clock: Clock = SYSTEM_CLOCK, engine: Any = None
) -> tuple[StatusService, HttpClient]:
    """The demo against the real providers: project ``demo`` is linked with the credentials the environment
    gives (the variables of ``integration-status check``); the other providers are disconnected."""
    from integration_status.adapters.defaults import provider_adapters
    from integration_status.adapters.env import adapter_urls_from_env, connections_from_env

    from_env = connections_from_env(env)
    linked = ProjectConnections(project_id="demo", providers=dict(from_env.providers))

    async def connections(project_id: str) -> ProjectConnections | None:
        return linked if project_id == "demo" else await DemoConnections()(project_id)

    http = HttpClient()
    service = StatusService(
        connections=connections,
        adapters=provider_adapters(http, urls=adapter_urls_from_env(env)),
        authenticator=demo_authenticator,
        health_authorizer=demo_health_authorizer,
        engine=engine,
        clock=clock,
    )
    return service, http


def build_app(
    *,
    clock: Clock = SYSTEM_CLOCK,
    redis_url: str | None = None,
    redis_prefix: str = "integration-status",
    redis_cluster: bool = False,
    seed: int = 7,
    providers: str = "simulated",
    env: Mapping[str, str] | None = None,
    engine: Any = None,
    deploy_seconds: float = 4.0,
) -> Starlette:
    """The demo ASGI app, on simulated providers (default) or the real ones (``providers="real"``).

    With ``redis_url``, every demo using the same Redis and ``redis_prefix`` shares cache, actions and events
    (``redis_cluster``: the URL is one node of a Redis Cluster).
    ``engine`` reuses an existing engine (an app restarted in the same process keeps its event buffer, so
    browsers resume with ``Last-Event-ID``); ``deploy_seconds`` is how long a simulated deploy takes.
    """
    if redis_url and engine is None:
        from integration_status.backends.redis import RedisEngine

        engine = RedisEngine.from_url(redis_url, prefix=redis_prefix, clock=clock, cluster=redis_cluster)
    world: World | None = None
    http: HttpClient | None = None
    if providers == "real":
        service, http = build_real_service(os.environ if env is None else env, clock=clock, engine=engine)
    elif providers == "simulated":
        service, world = build_service(clock=clock, engine=engine, seed=seed, deploy_seconds=deploy_seconds)
    else:
        raise ValueError(f"providers must be 'simulated' or 'real', not {providers!r}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if http is not None:
                await stack.enter_async_context(http)
            await stack.enter_async_context(service)
            if world is not None:
                simulated = world

                async def pump() -> None:
                    # Turn the world's happenings (pushes, document edits) into events, as webhooks would.
                    while True:
                        await clock.sleep(1.0)
                        for event in simulated.drain_events():
                            await service.publish(event["projectId"], event)

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
        # Unknown paths, wrong methods and failures answer with the error object, like the API's own routes.
        exception_handlers=dict(ERROR_HANDLERS),
    )
    app.state.service = service
    app.state.world = world  # None with the real providers
    return app


def run(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    redis_url: str | None = None,
    redis_prefix: str = "integration-status",
    redis_cluster: bool = False,
    providers: str = "simulated",
    limits: ServerLimits | None = None,
) -> None:
    """Serve the demo with uvicorn until interrupted, with the protective server settings of ``limits`` (head
    and body deadlines, head size, connection and request bounds: see :mod:`integration_status.web.serving`)."""
    import logging

    import uvicorn

    # An application entry point may configure logging (library code never does): readable lines on stderr,
    # the library's own from INFO up (breaker transitions, stale answers, actions), everything else from WARNING.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    limits = limits or ServerLimits()
    # Every allowed connection needs a descriptor, plus some for Redis, providers and the files served.
    raise_fd_limit(limits.max_connections + 256)
    logging.getLogger("integration_status").setLevel(logging.INFO)
    app = build_app(
        redis_url=redis_url, redis_prefix=redis_prefix, redis_cluster=redis_cluster, providers=providers
    )
    print(
        f"integration-status demo: open http://{host}:{port}/  (API: /api/integrations/status?projectId=demo)"
    )
    # Event streams never end by themselves: uvicorn_options gives them a second to close on Ctrl-C.
    uvicorn.run(app, host=host, port=port, log_level="warning", **uvicorn_options(limits))
