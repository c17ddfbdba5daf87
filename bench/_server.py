"""Bench servers, one uvicorn worker each: ``python -m bench._server KIND --port N``.

Kinds:

- ``throughput``: the status endpoint on a warm cache (simulated providers, long TTL) beside ``/bare`` and
  ``/bare304``, bare Starlette endpoints answering the very bytes and headers the status endpoint answers.
- ``deadline``: github hangs forever, vercel answers in 2 s, the others at once.
- ``demo``: the demo app with the server settings ``integration-status demo`` uses (``web.serving``).
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

    return Starlette(
        routes=[
            *api_routes(service),
            Route("/bare", bare_200),
            Route("/bare304", bare_304),
            Route("/etag", etag),
        ],
        lifespan=lifespan,
    )


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


APPS = {"throughput": throughput_app, "deadline": deadline_app, "sse": sse_app, "demo": demo_app}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=sorted(APPS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--header-timeout", type=float, default=None, help="demo only: the head deadline")
    args = parser.parse_args()
    from bench._common import raise_nofile

    raise_nofile(65_536)
    # An application may configure logging: keep warnings, on stderr (stdout only says "ready").
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
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
    config = uvicorn.Config(APPS[args.kind](), log_level="warning", access_log=False, **options)
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
