"""Run a StatusService behind a real HTTP server on 127.0.0.1 (port 0), for every web mount alike.

The ``mount`` fixture is parametrized over the mounts (``starlette``, ``flask``) and gives a factory; a test
builds its own service and serves it::

    async def test_x(mount: MountFactory) -> None:
        service = make_service(clock=FakeClock())
        async with mount(service) as m, m.client() as client:
            r = await client.post(ACTIONS, ...)

``m.call(fn, *args)`` runs ``fn`` (sync or async) where the service lives: in the test's own event loop for
Starlette, through the extension's portal thread for Flask. Everything that touches the service's loop
(``service.publish``, ``clock.advance``, setting an ``anyio.Event`` a handler waits on) goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import anyio
import attrs
import httpx
import pytest
import uvicorn

from integration_status.protocols import (
    ActionHandler,
    ProjectConnections,
    ProviderConnection,
    RequestInfo,
    Viewer,
)
from integration_status.service import Settings, StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections, snapshot
from integration_status.web.starlette import create_app

PREFIX = "/api/integrations"
ACTIONS = f"{PREFIX}/actions"
EVENTS = f"{PREFIX}/events"
STATUS = f"{PREFIX}/status"
MOUNTS = ("starlette", "flask")
#: Upper bound for anything that waits on a socket-level effect (a real server is involved).
SOCKET_WAIT = 2.0
#: Heartbeats a WSGI server may need to notice a client that went away (the first write may still pass).
HEARTBEATS_TO_NOTICE = 5


async def header_auth(request: RequestInfo) -> Viewer | None:
    """Tests only: ``X-User`` (default ``u1``) and ``X-Role``; no ``X-Role`` header means unauthenticated."""
    role = request.headers.get("x-role")
    if not role:
        return None
    user = request.headers.get("x-user") or "u1"
    return Viewer(user_id=user, roles=set() if role == "none" else {role})


def connections(*project_ids: str) -> StaticConnections:
    """Projects with all four providers linked; the GitHub token is a secret no response may show."""
    return StaticConnections(
        {
            pid: ProjectConnections(
                project_id=pid,
                providers={
                    "github": ProviderConnection(
                        provider="github", settings={"repository": "acme/shop"}, token="ghp_TOPSECRET"
                    ),
                    "vercel": ProviderConnection(provider="vercel", token="vercel_TOPSECRET"),
                    "sanity": ProviderConnection(provider="sanity"),
                    "supabase": ProviderConnection(provider="supabase"),
                },
            )
            for pid in project_ids
        }
    )


def make_service(
    *,
    clock: FakeClock | None = None,
    handlers: Mapping[tuple[str, str], ActionHandler] | None = None,
    settings: Settings | None = None,
    adapters: Iterable[Any] | None = None,
    projects: Iterable[str] = ("p", "q"),
    **kwargs: Any,
) -> StatusService:
    """A service over scripted adapters (all four connected), header authentication and a FakeClock.

    A FakeClock stands still unless a test moves it, so by default the streams write every event at once
    (``sse_write_interval=0``); the write interval has tests of its own, which move the clock."""
    clock = clock or FakeClock()
    if adapters is None:
        adapters = [ScriptedAdapter(p, snapshot(p)) for p in ("github", "vercel", "sanity", "supabase")]
    return StatusService(
        authorizer=allow_global_roles,
        connections=connections(*projects),
        adapters=list(adapters),
        authenticator=header_auth,
        action_handlers=handlers,
        settings=settings or Settings(sse_write_interval=0),
        clock=clock,
        **kwargs,
    )


def viewer_headers(role: str = "owner", user: str = "u1", key: str | None = None) -> dict[str, str]:
    headers = {"X-Role": role, "X-User": user}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


@attrs.define
class Served:
    """One running server: where it listens, the service behind it, and how to reach the service's loop."""

    kind: str
    base_url: str
    service: StatusService
    _call: Callable[..., Awaitable[Any]]
    #: Returns once the requests the server has taken are over (their clean-up included).
    _settle: Callable[[], Awaitable[None]]

    @property
    def clock(self) -> FakeClock:
        clock = self.service.clock
        assert isinstance(clock, FakeClock), "this test needs a service on a FakeClock"
        return clock

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` (awaited when async) in the service's event loop."""
        return await self._call(fn, *args)

    async def until(
        self, wait: Callable[..., Awaitable[Any]], *args: Any, within: float = SOCKET_WAIT
    ) -> None:
        """Await ``wait(*args)`` in the service's event loop, bounded there by ``within`` seconds: for what the
        service's own tasks bring about (``clock.until_sleepers``, a handler's ``until_calls``)."""
        await self.call(_bounded, within, wait, *args)

    async def advance(self, seconds: float) -> None:
        """Move the service's FakeClock forward, waking its sleepers in their own loop."""
        await self.call(self.clock.advance, seconds)

    async def publish(self, project_id: str, event: Mapping[str, Any]) -> str:
        result: str = await self.call(self.service.publish, project_id, event)
        return result

    async def wait_released(self) -> None:
        """Return once the streams the client closed are over on the server, their clean-up done (bounded).
        On Starlette the server notices a closed connection at once and its request tasks end. A WSGI server
        notices only when a write fails, so on Flask each round moves the clock one heartbeat to make the
        open streams write, and waits for the server thread to ask for its next chunk (the write went
        through) or to close the response."""
        await self._settle()

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=SOCKET_WAIT * 2, **kwargs)


async def _bounded(within: float, wait: Callable[..., Awaitable[Any]], *args: Any) -> None:
    with anyio.fail_after(within):
        await wait(*args)


class StartedServer(uvicorn.Server):
    """uvicorn's server with an event for the end of its start-up (uvicorn itself only sets a flag)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    async def serve_until_ready(self, tg: anyio.abc.TaskGroup, sock: socket.socket) -> None:
        """Start serving on ``sock`` in ``tg``; return once the server accepts connections (bounded)."""
        tg.start_soon(self.serve, [sock])
        with anyio.fail_after(SOCKET_WAIT):
            await self.ready.wait()


async def settle_tasks(server: uvicorn.Server, service: StatusService) -> None:
    """Wait (bounded) until every request task of an in-loop uvicorn ``server``, every plain task of
    ``service`` (the disconnect watches) and every task being cancelled (a project's collector, cancelled
    by its last stream) has ended: woken by the tasks' ends, not by polling."""

    def ending() -> set[asyncio.Task[Any]]:
        tasks = {*server.server_state.tasks, *service._plain}
        tasks.update(task for task in asyncio.all_tasks() if task.cancelling())
        tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
        return {task for task in tasks if not task.done()}

    with anyio.fail_after(SOCKET_WAIT):
        while pending := ending():
            await asyncio.wait(pending)


class ResponseProgress:
    """WSGI middleware that tells when the server thread asks a response for its next chunk (the previous
    one is written) or closes it (its clean-up is over): what a test of a threaded WSGI server waits for
    instead of polling."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._changed = threading.Condition()
        self.steps = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return _Tracked(self, self._app(environ, start_response))

    def step(self) -> None:
        with self._changed:
            self.steps += 1
            self._changed.notify_all()

    def wait_beyond(self, seen: int, within: float = SOCKET_WAIT) -> None:
        """Block until some response made a step after ``seen`` steps (bounded: AssertionError)."""
        with self._changed:
            assert self._changed.wait_for(lambda: self.steps > seen, within), "the server made no step"


class _Tracked:
    def __init__(self, progress: ResponseProgress, body: Iterable[bytes]) -> None:
        self._progress = progress
        self._body = body
        self._chunks = iter(body)

    def __iter__(self) -> _Tracked:
        return self

    def __next__(self) -> bytes:
        self._progress.step()
        return next(self._chunks)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        try:
            if close is not None:
                close()
        finally:
            self._progress.step()


def events_stream(
    client: httpx.AsyncClient, project: str = "p", *, role: str = "owner", user: str = "u1", **headers: str
) -> contextlib.AbstractAsyncContextManager[httpx.Response]:
    """``GET {prefix}/events?projectId=`` as a streaming response; extra headers as keyword arguments."""
    return client.stream(
        "GET", EVENTS, params={"projectId": project}, headers={**viewer_headers(role, user), **headers}
    )


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it; without it Nagle and delayed ACKs add ~40 ms to every keep-alive request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _in_loop(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


@contextlib.asynccontextmanager
async def serve_starlette(service: StatusService) -> AsyncIterator[Served]:
    """uvicorn in this event loop, serving ``create_app(service, lifespan=False)`` while the test holds the
    service open."""
    sock = _bound_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(service, lifespan=False),
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        ws="none",
        timeout_graceful_shutdown=1,
    )
    server = StartedServer(config)
    try:
        async with service, anyio.create_task_group() as tg:
            await server.serve_until_ready(tg, sock)
            try:
                base_url = f"http://127.0.0.1:{port}"
                yield Served(
                    kind="starlette",
                    base_url=base_url,
                    service=service,
                    call=_in_loop,
                    settle=functools.partial(settle_tasks, server, service),
                )
            finally:
                server.should_exit = True
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def serve_flask(service: StatusService) -> AsyncIterator[Served]:
    """The Flask extension under werkzeug's threaded server; the extension runs the service's lifecycle in its
    own portal thread, so the test never enters ``async with service``."""
    try:
        from flask import Flask

        from integration_status.web.flask import IntegrationStatus  # type: ignore[import-not-found]
    except ImportError:
        reason = "integration_status.web.flask is not available"
        print(reason)
        pytest.skip(reason)
    from werkzeug.serving import make_server

    flask_app = Flask(__name__)
    ext = IntegrationStatus(flask_app, service=service)
    progress = ResponseProgress(flask_app.wsgi_app)
    flask_app.wsgi_app = progress  # type: ignore[method-assign]
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="werkzeug-test-server", daemon=True
    )
    thread.start()
    portal = getattr(ext, "portal", None)

    async def across(fn: Callable[..., Any], *args: Any) -> Any:
        if portal is None:
            pytest.skip("the Flask extension exposes no portal to reach the service's event loop")
        return await anyio.to_thread.run_sync(portal.call, _in_loop, fn, *args)

    async def settle() -> None:
        # Each round: the open streams write a heartbeat; one whose client is gone fails and closes.
        for _ in range(HEARTBEATS_TO_NOTICE):
            if not service.sse_connections.count:
                return
            seen = progress.steps
            await across(service.clock.advance, service.settings.heartbeat)
            await anyio.to_thread.run_sync(progress.wait_beyond, seen)

    try:
        base_url = f"http://127.0.0.1:{server.server_port}"
        yield Served(kind="flask", base_url=base_url, service=service, call=across, settle=settle)
    finally:
        await anyio.to_thread.run_sync(server.shutdown)
        thread.join(SOCKET_WAIT)
        server.server_close()
        await anyio.to_thread.run_sync(ext.close)


MountFactory = Callable[[StatusService], contextlib.AbstractAsyncContextManager[Served]]


@pytest.fixture(params=MOUNTS)
def mount(request: pytest.FixtureRequest) -> MountFactory:
    """A factory serving a service on the parametrized mount: ``async with mount(service) as m``."""
    return serve_starlette if request.param == "starlette" else serve_flask


# --- helpers for the suites ---------------------------------------------------------------------------------


def action(
    provider: str = "vercel", name: Any = "deploy", project: Any = "p", **extra: Any
) -> dict[str, Any]:
    """An actions request body."""
    return {"projectId": project, "provider": provider, "action": name, **extra}


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is the error object with ``status`` and ``code``; its ``error`` member."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


# --- a small Server-Sent Events reader ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Frame:
    """One SSE block: its fields, and its comment lines (heartbeats)."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: tuple[str, ...] = ()

    def json(self) -> Any:
        assert self.data is not None
        return json.loads(self.data)


class SSEReader:
    """Reads frames from a streaming httpx response, line by line, with a bound on every wait."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def frame(self, within: float = SOCKET_WAIT) -> Frame:
        fields: dict[str, Any] = {}
        data: list[str] = []
        comments: list[str] = []
        with anyio.fail_after(within):
            async for line in self._lines:
                if line == "":
                    if fields or data or comments:
                        return Frame(
                            **fields, data="\n".join(data) if data else None, comments=tuple(comments)
                        )
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    comments.append(value)
                elif name == "data":
                    data.append(value)
                elif name == "retry":
                    fields["retry"] = int(value)
                elif name in ("id", "event"):
                    fields[name] = value
        raise EOFError("the stream ended")

    async def event(self, within: float = SOCKET_WAIT) -> Frame:
        """The next frame that carries data (comments skipped)."""
        with anyio.fail_after(within):
            while True:
                frame = await self.frame(within)
                if frame.data is not None:
                    return frame

    async def ended(self, within: float = SOCKET_WAIT) -> bool:
        """True once the server closes the stream (frames before the end are skipped)."""
        with anyio.fail_after(within):
            try:
                while True:
                    await self.frame(within)
            except EOFError:
                return True
