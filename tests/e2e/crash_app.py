"""The app the crash tests run as real worker processes (``uvicorn tests.e2e.crash_app:app``): the real Vercel
adapter against a fake Vercel on loopback, the Redis engine (idempotency in PostgreSQL when asked), and - for
the test only - a hook that SIGKILLs this process at one step of a deploy.

Configured by the environment: ``CRASH_VERCEL_URL``, ``CRASH_REDIS_URL``, ``CRASH_PREFIX``,
``CRASH_PG_DSN`` + ``CRASH_PG_SCHEMA`` (optional), ``CRASH_LEASE`` (seconds) and ``CRASH_AT``, one of
``before_call`` (just before the deployment request leaves), ``after_call`` (the provider answered, before
the adapter sees the answer), ``after_store`` (the response is stored), ``after_answer`` (the client got it).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping
from typing import Any

import httpx

from integration_status.adapters.http import HttpClient
from integration_status.adapters.vercel import VercelAdapter
from integration_status.backends.redis import RedisEngine
from integration_status.core.idempotency import IdempotencyGuard
from integration_status.protocols import (
    IdempotencyStore,
    ProjectConnections,
    ProviderConnection,
    RequestInfo,
    StoredResponse,
    Viewer,
)
from integration_status.service import Settings, StatusService
from integration_status.testing import StaticConnections
from integration_status.web.starlette import create_app

PROJECT = "proj_crash"
CRASH_AT = os.environ.get("CRASH_AT", "")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillingTransport(httpx.AsyncBaseTransport):
    """Dies around the deployment request, as a worker killed at that moment would."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        creates = request.method == "POST" and request.url.path == "/v13/deployments"
        if creates and CRASH_AT == "before_call":
            die()
        response = await self._inner.handle_async_request(request)
        if creates and CRASH_AT == "after_call":
            await response.aread()
            die()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class KillingStore:
    """The engine's idempotency store, dying right after a response was stored."""

    def __init__(self, inner: IdempotencyStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def complete(self, key: str, token: str, response: StoredResponse, **kwargs: Any) -> None:
        await self._inner.complete(key, token, response, **kwargs)
        if CRASH_AT == "after_store":
            die()


class DieAfterAnswer:
    """ASGI middleware: once an action's answer is sent, the worker dies (before following the deploy)."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/actions") or CRASH_AT != "after_answer":
            await self._app(scope, receive, send)
            return

        async def sending(message: Mapping[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                asyncio.get_running_loop().call_later(0.2, die)  # time for the bytes to leave

        await self._app(scope, receive, sending)


async def authenticate(request: RequestInfo) -> Viewer | None:
    user = request.headers.get("x-user")
    return None if user is None else Viewer(user_id=user, project_roles={PROJECT: {"owner"}})


def build() -> Any:
    idempotency: IdempotencyStore | None = None
    if os.environ.get("CRASH_PG_SCHEMA"):
        from integration_status.backends.postgres import PostgresIdempotencyStore

        idempotency = PostgresIdempotencyStore.from_dsn(
            os.environ["CRASH_PG_DSN"], schema=os.environ["CRASH_PG_SCHEMA"]
        )
    engine = RedisEngine.from_url(
        os.environ["CRASH_REDIS_URL"], prefix=os.environ["CRASH_PREFIX"], idempotency=idempotency
    )
    connection = ProviderConnection(
        provider="vercel", settings={"project": "shop"}, token="vercel-token-crash"
    )
    service = StatusService(
        connections=StaticConnections(
            {PROJECT: ProjectConnections(project_id=PROJECT, providers={"vercel": connection})}
        ),
        adapters=[
            VercelAdapter(
                http=HttpClient(transport=KillingTransport()),
                base_url=os.environ["CRASH_VERCEL_URL"],
                deploy_poll_interval=0.2,
                deploy_timeout=20,
            )
        ],
        authenticator=authenticate,
        engine=engine,
        settings=Settings(action_timeout=5),
    )
    # A short lease, so that a retry takes over within the test's patience (production: >= 60 s).
    service.idempotency = IdempotencyGuard(
        KillingStore(engine.idempotency),  # type: ignore[arg-type]
        clock=service.clock,
        lease=float(os.environ.get("CRASH_LEASE", "2")),
    )
    return DieAfterAnswer(create_app(service))


app = build()
