"""Bench servers, one uvicorn worker each: ``python -m bench._server KIND --port N``.

Kinds:

- ``throughput``: the status endpoint on a warm cache (simulated providers, long TTL) beside ``/bare`` and
  ``/bare304``, bare Starlette endpoints answering the very bytes and headers the status endpoint answers.
- ``deadline``: github hangs forever, vercel answers in 2 s, the others at once.
- ``demo``: the demo app with the server settings ``integration-status demo`` uses (``web.serving``).
- ``engines``: the warm status endpoint on the memory engine and on the Redis engine, and the bare endpoints,
  side by side (``--redis-url``).
- ``redis_faults``: the status endpoint on the Redis engine at ``--redis-url`` (a fault proxy), 1 s TTL.
- ``real_adapters``: the real GitHub and Vercel adapters against loopback providers, one hung, one at 2 s.
- ``sse``: the events endpoint plus ``POST /bench/publish`` (publishes a ``github:push`` stamped with the wall
  time) and ``GET /bench/stats`` (open streams, asyncio tasks).

Prints ``ready`` on stdout once it accepts connections. uvloop and httptools are used when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integration_status.demo.server import DemoConnections
from integration_status.demo.simulated import World, simulated_adapters
from integration_status.protocols import RequestInfo, Viewer
from integration_status.service import Settings, StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.testing import ScriptedAdapter, StaticConnections, hang_on, snapshot
from integration_status.web import handlers
from integration_status.web.starlette import routes as api_routes

STATUS_PATH = "/api/integrations/status?projectId=demo"
#: The Redis the bench servers use (the fault benchmark puts its proxy in front of it).
REDIS_DIRECT = "redis://127.0.0.1:6379/0"


def server_options() -> dict[str, str]:
    """The uvicorn loop and HTTP parser: uvloop and httptools when installed."""
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


async def header_viewer(request: RequestInfo) -> Viewer | None:
    """Bench only: the user id comes from ``X-User``; everyone is an owner."""
    return Viewer(user_id=request.headers.get("x-user", "bench"), roles={"owner"})


def throughput_app() -> Starlette:
    world = World(clock=_system_clock())
    service = StatusService(
        authorizer=allow_global_roles,
        connections=DemoConnections(),
        adapters=simulated_adapters(world),
        authenticator=header_viewer,
        settings=Settings(cache_ttl=3600.0, cache_jitter=0.0),
    )
    bare: dict[str, Response] = {}
    bare_headers: dict[str, dict[str, str]] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with service:
            info = handlers.request_info("GET", "/api/integrations/status", {}, {"projectId": "demo"})
            answer = await handlers.handle_status(service, info)
            headers = dict(answer.headers)
            bare["200"] = Response(content=answer.body, status_code=200, headers=headers)
            etag = headers["ETag"]
            bare["304"] = Response(status_code=304, headers={"ETag": etag, "Cache-Control": "no-store"})
            bare_headers["200"] = headers
            bare_headers["304"] = {"ETag": etag, "Cache-Control": "no-store"}
            yield

    # Like any endpoint, the bare ones build their Response per request; only the bytes are prepared.
    async def bare_200(request: Request) -> Response:
        return Response(content=bare["200"].body, headers=bare_headers["200"])

    async def bare_304(request: Request) -> Response:
        return Response(status_code=304, headers=bare_headers["304"])

    async def etag(request: Request) -> Response:
        return Response(content=bare["200"].headers["etag"])

    return ByFirstSegment(
        {
            "api": Starlette(routes=api_routes(service)),
            "bare": Starlette(routes=[Route("/bare", bare_200)]),
            "bare304": Starlette(routes=[Route("/bare304", bare_304)]),
            "etag": Starlette(routes=[Route("/etag", etag)]),
        },
        lifespan=Starlette(lifespan=lifespan),
    )


class ByFirstSegment:
    """Sends each request to the Starlette app of its path's first segment (``/bare304`` -> ``"bare304"``),
    and the lifespan to ``lifespan``. Every endpoint compared is the first route of an app of its own, so
    none pays for the failed route matches of the others (about 5,000 instructions each: in one flat route
    list, the endpoint listed last is measured with that handicap)."""

    def __init__(self, apps: dict[str, Any], *, lifespan: Any) -> None:
        self._apps = apps
        self._lifespan = lifespan

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self._apps[scope["path"].split("/", 2)[1]](scope, receive, send)


def _system_clock() -> Any:
    from integration_status.core.clock import SYSTEM_CLOCK

    return SYSTEM_CLOCK


def deadline_app() -> Starlette:
    async def two_seconds() -> Any:
        await anyio.sleep(2.0)
        return snapshot("vercel", "connected", "Live")

    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("demo", "github", "vercel", "sanity", "supabase"),
        adapters=[
            ScriptedAdapter("github", hang_on()),
            ScriptedAdapter("vercel", two_seconds),
            ScriptedAdapter("sanity", snapshot("sanity")),
            ScriptedAdapter("supabase", snapshot("supabase")),
        ],
        authenticator=header_viewer,
    )
    return Starlette(routes=api_routes(service), lifespan=service.lifespan)


def sse_app() -> Starlette:
    world = World(clock=_system_clock())
    service = StatusService(
        authorizer=allow_global_roles,
        connections=DemoConnections(),
        adapters=simulated_adapters(world),
        authenticator=header_viewer,
        settings=Settings(cache_ttl=3600.0, sse_per_viewer=100_000, sse_per_process=100_000, heartbeat=60.0),
    )

    async def publish(request: Request) -> Response:
        event_id = await service.publish(
            "demo",
            {
                "type": "github:push",
                "projectId": "demo",
                "branch": "main",
                "sha": "0" * 40,
                "sentAt": time.time(),
            },
        )
        return Response(content=event_id)

    async def stats(request: Request) -> Response:
        body = {"streams": service.sse_connections.count, "tasks": len(asyncio.all_tasks())}
        return Response(content=json.dumps(body), media_type="application/json")

    return Starlette(
        routes=[
            *api_routes(service),
            Route("/bench/publish", publish, methods=["POST"]),
            Route("/bench/stats", stats),
        ],
        lifespan=service.lifespan,
    )


def demo_app() -> Starlette:
    from integration_status.demo.server import build_app

    return build_app()


def _redis_engine(url: str) -> Any:
    """A Redis engine on a key prefix of its own; its keys are deleted when the server stops."""
    import uuid

    from integration_status.backends.redis import RedisEngine

    return RedisEngine.from_url(url, prefix=f"bench-{uuid.uuid4().hex[:10]}")


async def _drop_keys(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def _comparable(body: bytes) -> Any:
    """A status body without what differs between two fetches of the same world: when, and the hash over it."""
    envelope = json.loads(body)
    envelope.pop("hash", None)
    for item in envelope.get("items", []):
        item.pop("updatedAt", None)
    return envelope


def engines_app(redis_url: str) -> Starlette:
    """The status endpoint on the memory engine (``/mem``) and on the Redis engine (``/redis``) over one
    simulated world, beside ``/bare`` and ``/bare304`` answering the memory endpoint's bytes: all warm, all in
    one server, so one run compares the three under the same settings."""
    world = World(clock=_system_clock())
    settings = Settings(cache_ttl=3600.0, cache_jitter=0.0)
    engine = _redis_engine(redis_url)
    services = {
        name: StatusService(
            authorizer=allow_global_roles,
            connections=DemoConnections(),
            adapters=simulated_adapters(world),
            authenticator=header_viewer,
            settings=settings,
            engine=engine if name == "redis" else None,
        )
        for name in ("mem", "redis")
    }
    bare: dict[str, tuple[bytes, dict[str, str]]] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with services["mem"], services["redis"]:  # the Redis service enters its engine itself
            info = handlers.request_info("GET", "/api/integrations/status", {}, {"projectId": "demo"})
            answers = {name: await handlers.handle_status(svc, info) for name, svc in services.items()}
            # Each engine's service fetched on its own, a few ms apart: only those moments (and the content
            # hash over them) may differ. Anything else would make the comparison unfair.
            if _comparable(answers["mem"].body) != _comparable(answers["redis"].body):
                print("[engines] the two engines answer different content", file=sys.stderr)
            headers = dict(answers["mem"].headers)
            bare["200"] = (answers["mem"].body, headers)
            bare["304"] = (b"", {"ETag": headers["ETag"], "Cache-Control": "no-store"})
            try:
                yield
            finally:
                await _drop_keys(redis_url, engine.prefix)

    async def bare_200(request: Request) -> Response:
        return Response(content=bare["200"][0], headers=bare["200"][1])

    async def bare_304(request: Request) -> Response:
        return Response(status_code=304, headers=bare["304"][1])

    # Each endpoint the first route of its own app (a Mount would cost a sub-router per request).
    return ByFirstSegment(
        {
            "bare": Starlette(routes=[Route("/bare", bare_200)]),
            "bare304": Starlette(routes=[Route("/bare304", bare_304)]),
            "redis": Starlette(routes=api_routes(services["redis"], prefix="/redis/api/integrations")),
            "mem": Starlette(routes=api_routes(services["mem"], prefix="/mem/api/integrations")),
        },
        lifespan=Starlette(lifespan=lifespan),
    )


def redis_faults_app(redis_url: str) -> Starlette:
    """The status endpoint on the Redis engine (reached through the bench's fault proxy), providers answering
    at once and a 1 s TTL, so that entries go past their TTL while the proxy hangs or lags."""
    engine = _redis_engine(redis_url)
    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("demo", "github", "vercel", "sanity", "supabase"),
        adapters=[ScriptedAdapter(p, snapshot(p)) for p in ("github", "vercel", "sanity", "supabase")],
        authenticator=header_viewer,
        settings=Settings(cache_ttl=1.0, cache_jitter=0.0),
        engine=engine,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with service:  # it enters its engine itself
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    await _drop_keys(REDIS_DIRECT, engine.prefix)  # not through the proxy: it may be cut

    return Starlette(routes=api_routes(service), lifespan=lifespan)


async def _slow_provider(seconds: float) -> tuple[asyncio.Server, str]:
    """A loopback HTTP server answering every request with ``{}`` after ``seconds``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                await asyncio.sleep(seconds)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def real_adapters_app() -> Starlette:
    """The real GitHub and Vercel adapters (httpx, the library's HTTP client) against loopback providers: GitHub
    accepts and never answers, Vercel answers after 2 s; Sanity and Supabase are not linked."""
    from integration_status.adapters.defaults import provider_adapters
    from integration_status.adapters.http import HttpClient
    from integration_status.protocols import ProjectConnections, ProviderConnection
    from tests.e2e.faults_server import FaultServer

    http = HttpClient()
    hung = FaultServer()
    hung.mode = "hang"
    holder: dict[str, Any] = {}

    class Lazy:
        """Connections resolved once the loopback providers listen (in the lifespan)."""

        async def __call__(self, project_id: str) -> ProjectConnections | None:
            if project_id != "demo":
                return None
            return ProjectConnections(
                project_id="demo",
                providers={
                    "github": ProviderConnection(
                        provider="github", settings={"repository": "acme/storefront"}, token="gh-bench-token"
                    ),
                    "vercel": ProviderConnection(
                        provider="vercel", settings={"project": "prj_bench"}, token="vc-bench-token"
                    ),
                },
            )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with hung.running():
            slow, slow_url = await _slow_provider(2.0)
            service = StatusService(
                authorizer=allow_global_roles,
                connections=Lazy(),
                adapters=provider_adapters(http, urls={"github": hung.url, "vercel": slow_url}),
                authenticator=header_viewer,
            )
            holder["service"] = service
            app.router.routes.extend(api_routes(service))
            try:
                async with service:
                    yield
            finally:
                slow.close()
                await http.aclose()

    return Starlette(routes=[], lifespan=lifespan)


APPS: dict[str, Any] = {
    "real_adapters": real_adapters_app,
    "throughput": throughput_app,
    "deadline": deadline_app,
    "sse": sse_app,
    "engines": engines_app,
    "redis_faults": redis_faults_app,
    "demo": demo_app,
}
#: The kinds that take ``--redis-url``.
REDIS_KINDS = {"engines", "redis_faults"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=sorted(APPS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--header-timeout", type=float, default=None, help="demo only: the head deadline")
    parser.add_argument("--redis-url", default=REDIS_DIRECT)
    args = parser.parse_args()
    from bench._common import raise_nofile

    raise_nofile(65_536)
    # An application may configure logging: keep warnings, on stderr (stdout only says "ready").
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    app = APPS[args.kind](args.redis_url) if args.kind in REDIS_KINDS else APPS[args.kind]()
    if args.kind == "demo":
        # The demo as `integration-status demo` serves it: the protective settings of web.serving.
        from integration_status.web.serving import ServerLimits, uvicorn_options

        limits = (
            ServerLimits()
            if args.header_timeout is None
            else ServerLimits(header_timeout=args.header_timeout)
        )
        options: dict[str, Any] = {"loop": server_options()["loop"], **uvicorn_options(limits)}
    else:
        options = {"backlog": 4096, "timeout_graceful_shutdown": 1, **server_options()}
    run_uvicorn(app, args.port, options)


def run_uvicorn(app: Any, port: int, options: dict[str, Any]) -> None:
    """Serve ``app`` with uvicorn on 127.0.0.1:``port``; print ``ready`` once it accepts connections."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(app, log_level="warning", access_log=False, **options)
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        print("ready", flush=True)
        await task

    # Python 3.11's asyncio.run takes no loop factory: use a Runner.
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(run())


if __name__ == "__main__":
    main()
