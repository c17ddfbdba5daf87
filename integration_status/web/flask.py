"""Flask mount (extra ``[flask]``): the :class:`IntegrationStatus` extension.

::

    from flask import Flask
    from integration_status.web.flask import IntegrationStatus

    app = Flask(__name__)
    app.config["INTEGRATION_STATUS_PREFIX"] = "/api/integrations"   # the default
    status = IntegrationStatus(app, service=service)

or with an application factory::

    status = IntegrationStatus(service=service)

    def create_app() -> Flask:
        app = Flask(__name__)
        status.init_app(app)
        return app

The service is async; Flask views are not. Each extension runs one event loop in a background thread (an anyio
blocking portal), started on the first request (or by :meth:`IntegrationStatus.start`), and enters the
service there once: ``async with service`` lasts until :meth:`IntegrationStatus.close` or interpreter exit.
Views hand each request to the same framework-neutral handlers as the Starlette mount through that portal.

Configuration keys:

``INTEGRATION_STATUS_PREFIX``
    Where the endpoints live (default ``/api/integrations``); the ``prefix`` argument wins when given.
``INTEGRATION_STATUS_EAGER_START``
    Start the portal and the service in :meth:`~IntegrationStatus.init_app` instead of on the first request
    (default ``False``: a server that forks workers after loading the app must not start threads before it).
``INTEGRATION_STATUS_SSE_BUFFER``
    How many event-stream chunks may wait for a slow client before the stream waits too (default 16).
``INTEGRATION_STATUS_MAX_STREAMS``
    How many event streams this process holds at once (default ``None``: derived from the server, see
    :func:`server_stream_cap`). Each holds a server thread; one over the cap is answered at once with a
    ``retry:`` frame and ends, so streams never take the threads that status requests need.
``INTEGRATION_STATUS_STREAM_RETRY_MS``
    The ``retry:`` hint of a stream refused over the cap (default 15000): when the browser tries again.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import CancelledError
from contextlib import AbstractContextManager, suppress
from typing import Any, Final, Literal, TypeVar

import anyio
import anyio.abc
from anyio.from_thread import BlockingPortal, start_blocking_portal
from anyio.streams.memory import MemoryObjectReceiveStream

from integration_status._logging import get_logger

try:
    from flask import Blueprint, Flask, current_app, request
    from flask import Response as FlaskResponse
    from werkzeug.exceptions import HTTPException
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "integration_status.web.flask needs Flask: pip install 'integration-status[flask]'"
    ) from exc

from integration_status.core.sse import SSE_HEADERS, encode_event
from integration_status.exceptions import ConfigurationError
from integration_status.protocols import RequestInfo
from integration_status.service.facade import StatusService
from integration_status.service.webhooks import DEFAULT_MAX_BODY as _DEFAULT_MAX_BODY
from integration_status.web import handlers
from integration_status.web.handlers import Response, Write
from integration_status.web.params import QueryParams

__all__ = [
    "DEFAULT_PREFIX",
    "EXTENSION_KEY",
    "MAX_WEBHOOK_BODY",
    "UNKNOWN_SERVER_STREAMS",
    "IntegrationStatus",
    "server_stream_cap",
]

DEFAULT_PREFIX: Final = "/api/integrations"
#: The key of the extension's state in ``app.extensions``.
EXTENSION_KEY: Final = "integration_status"
MAX_WEBHOOK_BODY: Final = _DEFAULT_MAX_BODY

_log = get_logger("integration_status.web.flask")
_T = TypeVar("_T")

#: The stream cap on a threaded server whose thread count cannot be read: small, so it never takes them all.
UNKNOWN_SERVER_STREAMS: Final = 2


def server_stream_cap(environ: Mapping[str, Any]) -> int | None:
    """How many event streams the WSGI server running this request can hold without starving other requests.

    - gunicorn ``gthread``: half its ``--threads`` (at least 1), read from the worker serving this process; the
      other half stays free for status requests and for refusing streams over the cap.
    - gunicorn ``sync`` (one request at a time, and a request held past ``--timeout`` gets the worker
      killed): 0, every stream is refused with a ``retry:`` hint (serve streams with gthread).
    - gunicorn's async workers (gevent, eventlet) and werkzeug's threaded dev server (a thread per request):
      None, no cap of this kind (the service's per-process cap still applies).
    - any other server: :data:`UNKNOWN_SERVER_STREAMS` when it is multithreaded, else 0; no server at all
      (no ``SERVER_SOFTWARE``: Flask's test client runs the request on the caller's thread): None.

    >>> server_stream_cap({"SERVER_SOFTWARE": "waitress", "wsgi.multithread": True})
    2
    """
    software = str(environ.get("SERVER_SOFTWARE", ""))
    if not software:
        return None
    if software.startswith("gunicorn"):
        worker = _gunicorn_worker()
        if worker is not None:
            kind = type(worker).__name__
            if kind == "ThreadWorker":
                return max(1, int(worker.cfg.threads) // 2)
            if kind == "SyncWorker":
                return 0
            return None
    if software.startswith("Werkzeug") and environ.get("wsgi.multithread"):
        return None
    return UNKNOWN_SERVER_STREAMS if environ.get("wsgi.multithread") else 0


def _gunicorn_worker() -> Any:
    """The gunicorn worker object of this process: it handles SIGTERM with a bound method of its own, which
    is the one place where a WSGI app can see the worker's settings without being passed them."""
    handler = signal.getsignal(signal.SIGTERM)
    worker = getattr(handler, "__self__", None)
    return worker if hasattr(getattr(worker, "cfg", None), "threads") else None


class IntegrationStatus:
    """Flask extension serving the integration-status endpoints from a Blueprint.

    ``service`` is required (here or before :meth:`init_app`); ``prefix`` overrides the
    ``INTEGRATION_STATUS_PREFIX`` config key. One extension object may be initialised on several apps: they
    share its service and its event loop.
    """

    def __init__(
        self, app: Flask | None = None, *, service: StatusService | None = None, prefix: str | None = None
    ) -> None:
        self.service = service
        self.prefix = prefix
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._service_cm: AbstractContextManager[StatusService] | None = None
        self._pid: int | None = None
        self._streams = 0  # event streams open in this process, under ``_lock``
        self._stream_cap: int | Literal["unset"] | None = "unset"
        self._watching: int | None = None  # the pid whose server's exit is watched
        if app is not None:
            self.init_app(app)

    # --- Flask extension protocol ---------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Register the endpoints on ``app`` and store this extension in ``app.extensions``."""
        if self.service is None:
            raise ConfigurationError("IntegrationStatus needs a service: IntegrationStatus(app, service=...)")
        app.config.setdefault("INTEGRATION_STATUS_PREFIX", DEFAULT_PREFIX)
        app.config.setdefault("INTEGRATION_STATUS_EAGER_START", False)
        app.config.setdefault("INTEGRATION_STATUS_SSE_BUFFER", 16)
        app.config.setdefault("INTEGRATION_STATUS_MAX_STREAMS", None)
        app.config.setdefault("INTEGRATION_STATUS_STREAM_RETRY_MS", 15_000)
        prefix = self.prefix if self.prefix is not None else app.config["INTEGRATION_STATUS_PREFIX"]
        prefix = str(prefix).rstrip("/")
        app.extensions[EXTENSION_KEY] = self
        app.register_blueprint(_blueprint(prefix), url_prefix=prefix or None)
        # Routing's own 404/405 under the prefix answer in the error object; the rest of the app is left alone.
        for code in handlers.HTTP_ERROR_CODES:
            app.register_error_handler(code, _http_error_under(prefix))
        if app.config["INTEGRATION_STATUS_EAGER_START"]:
            self.start()

    # --- the event loop -------------------------------------------------------------------------------------

    @property
    def portal(self) -> BlockingPortal:
        """The blocking portal running the service, started on first use. Hosts may use it too, e.g.
        ``ext.portal.call(service.publish, project_id, event)`` from a view."""
        with self._lock:
            if self._portal is None:
                return self._start_locked()
            if self._pid != os.getpid():
                # A fork copies the running service's state but not the loop's thread: nothing can run it.
                raise ConfigurationError(
                    "IntegrationStatus was started before this process forked; start it in each worker "
                    "(leave INTEGRATION_STATUS_EAGER_START off with a pre-forking server)"
                )
            return self._portal

    def start(self) -> None:
        """Start the event loop thread and enter the service now (otherwise the first request does it)."""
        self.portal  # noqa: B018 - the property starts it

    def _start_locked(self) -> BlockingPortal:
        assert self.service is not None
        portal_cm = start_blocking_portal()
        portal = portal_cm.__enter__()
        try:
            service_cm = portal.wrap_async_context_manager(self.service)
            service_cm.__enter__()
        except BaseException as exc:
            portal_cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._portal, self._portal_cm, self._service_cm, self._pid = (
            portal,
            portal_cm,
            service_cm,
            os.getpid(),
        )
        atexit.register(self.close)
        _log.info("integration_status.flask.started")
        return portal

    def close(self) -> None:
        """Leave the service (open event streams end) and stop the event loop thread. Idempotent; also run at
        interpreter exit."""
        with self._lock:
            portal, portal_cm, service_cm = self._portal, self._portal_cm, self._service_cm
            self._portal = self._portal_cm = self._service_cm = None
            if portal is None or portal_cm is None or service_cm is None or self._pid != os.getpid():
                return
            atexit.unregister(self.close)
            try:
                service_cm.__exit__(None, None, None)
            finally:
                # Requests still in flight are cut short: the process is going away.
                with suppress(RuntimeError):
                    portal.call(portal.stop, True)
                portal_cm.__exit__(None, None, None)
            _log.info("integration_status.flask.stopped")

    def call(self, fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Run ``await fn(*args)`` on the extension's event loop and return its result (blocking)."""
        return self.portal.call(fn, *args)

    # --- stream slots (server threads) ----------------------------------------------------------------------

    def _take_stream(self, configured: Any, environ: Mapping[str, Any]) -> bool:
        with self._lock:
            if self._stream_cap == "unset":
                self._stream_cap = server_stream_cap(environ) if configured is None else int(configured)
                _log.info("integration_status.flask.stream_cap", cap=self._stream_cap)
            if self._stream_cap is not None and self._streams >= self._stream_cap:
                return False
            self._streams += 1
            return True

    def _watch_server(self, environ: Mapping[str, Any]) -> None:
        """Once per process: under gunicorn, end the streams when the worker is told to stop."""
        if self._watching == os.getpid() or not str(environ.get("SERVER_SOFTWARE", "")).startswith(
            "gunicorn"
        ):
            return
        worker = _gunicorn_worker()
        if worker is None or not hasattr(worker, "alive") or self.service is None:
            return
        self._watching = os.getpid()
        self.portal.start_task_soon(_end_streams_when_stopping, self.service, worker)

    def _release_stream(self) -> None:
        with self._lock:
            self._streams = max(0, self._streams - 1)


# --- views --------------------------------------------------------------------------------------------------


def _extension() -> IntegrationStatus:
    ext: IntegrationStatus = current_app.extensions[EXTENSION_KEY]
    return ext


def _info() -> RequestInfo:
    # The concrete request object, not the proxy: the handler runs on the portal's thread.
    raw = request._get_current_object()  # type: ignore[attr-defined]
    # WSGI servers already join repeated header lines; repeated query names are kept for refuse_repeated.
    return handlers.request_info(
        request.method,
        request.script_root + request.path,
        dict(request.headers),
        QueryParams(request.args.items(multi=True)),
        raw=raw,
    )


def _read_body(limit: int) -> bytes:
    """The raw body, at most ``limit + 1`` bytes (the handler refuses anything past ``limit``)."""
    stream = request.stream
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _to_flask(
    response: Response, ext: IntegrationStatus, on_close: Callable[[], None] | None = None
) -> FlaskResponse:
    headers = list(response.headers)
    if response.writer is None:
        if on_close is not None:
            on_close()
        return FlaskResponse(response=response.body, status=response.status, headers=headers)
    try:
        stream = _EventStream(
            ext.portal,
            response.writer,
            buffer=int(current_app.config.get("INTEGRATION_STATUS_SSE_BUFFER", 16)),
            on_close=on_close,
        )
    except BaseException:
        if on_close is not None:
            on_close()
        raise
    # direct_passthrough: the WSGI server gets our iterable itself, and so calls its close() on disconnect.
    return FlaskResponse(response=stream, status=response.status, headers=headers, direct_passthrough=True)


def _http_error_under(prefix: str) -> Callable[[HTTPException], Any]:
    def handle(exc: HTTPException) -> Any:
        path = request.path
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return exc  # not ours: Flask renders it as it would have
        code = exc.code or 500
        body = {
            "error": {"code": handlers.HTTP_ERROR_CODES.get(code, "invalid_request"), "message": exc.name}
        }
        allow = exc.get_headers()
        headers = tuple((k, v) for k, v in allow if k.lower() == "allow")
        return _to_flask(handlers.json_response(code, body, headers), _extension())

    return handle


def _blueprint(prefix: str) -> Blueprint:
    bp = Blueprint("integration_status", __name__)

    @bp.get("/status")
    def status() -> FlaskResponse:
        ext = _extension()
        assert ext.service is not None
        return _to_flask(ext.call(handlers.handle_status, ext.service, _info()), ext)

    @bp.post("/actions")
    def actions() -> FlaskResponse:
        ext = _extension()
        assert ext.service is not None
        body = _read_body(handlers.MAX_ACTION_BODY)
        return _to_flask(ext.call(handlers.handle_action, ext.service, _info(), body), ext)

    @bp.get("/events")
    def events() -> FlaskResponse:
        ext = _extension()
        assert ext.service is not None
        config = current_app.config
        if not ext._take_stream(config.get("INTEGRATION_STATUS_MAX_STREAMS"), request.environ):
            # Answered on this thread without the event loop: the refusal itself must never wait.
            _log.info("integration_status.sse.refused", reason="server threads")
            retry = int(config.get("INTEGRATION_STATUS_STREAM_RETRY_MS", 15_000))
            frame = encode_event(data="too many open streams on this worker", event="overloaded", retry=retry)
            return FlaskResponse(response=frame, status=200, headers=list(SSE_HEADERS.items()))
        try:
            ext._watch_server(request.environ)
            response = ext.call(handlers.handle_events, ext.service, _info())
        except BaseException:
            ext._release_stream()
            raise
        return _to_flask(response, ext, on_close=ext._release_stream)

    @bp.post("/webhooks/<provider>")
    def webhooks(provider: str) -> FlaskResponse:
        ext = _extension()
        assert ext.service is not None
        body = _read_body(MAX_WEBHOOK_BODY)
        return _to_flask(ext.call(handlers.handle_webhook, ext.service, provider, _info(), body), ext)

    @bp.get("/health")
    def health() -> FlaskResponse:
        ext = _extension()
        assert ext.service is not None
        return _to_flask(ext.call(handlers.handle_health, ext.service, _info()), ext)

    @bp.get("/openapi.json")
    def openapi() -> FlaskResponse:
        # Under a WSGI mount point (SCRIPT_NAME), the document lists the full paths clients use.
        return _to_flask(handlers.handle_openapi(request.script_root + prefix), _extension())

    return bp


# --- event streams ------------------------------------------------------------------------------------------


async def _end_streams_when_stopping(service: StatusService, worker: Any) -> None:
    """A gunicorn worker told to stop (SIGTERM) waits up to ``--graceful-timeout`` for its requests, streams
    included: end them as soon as its ``alive`` flag drops, each with a ``retry:`` hint, so it need not wait."""
    while worker.alive:  # noqa: ASYNC110 - gunicorn exposes a flag, not an event
        await anyio.sleep(0.1)
    _log.info("integration_status.flask.server_stopping", streams=len(service.streams))
    service.streams.shutdown()


class _EventStream:
    """A WSGI response iterable fed by a handler's writer running on the portal.

    The writer starts at once and puts its chunks into a bounded memory stream; each ``next()`` takes one
    from the server's thread. ``close()`` (the server calls it when the client goes away, or when the
    response ends) cancels the writer and waits for its ``finally`` blocks, so subscriptions and connection
    slots are released before the server thread moves on.
    """

    def __init__(
        self,
        portal: BlockingPortal,
        writer: Callable[[Write], Awaitable[None]],
        *,
        buffer: int,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._portal = portal
        self._closed = False
        self._on_close = on_close
        self._future, started = portal.start_task(_run_writer, writer, buffer)
        self._scope: anyio.CancelScope = started[0]
        self._receive: MemoryObjectReceiveStream[bytes] = started[1]

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        try:
            return self._portal.call(self._receive.receive)
        except (anyio.EndOfStream, anyio.ClosedResourceError, RuntimeError, CancelledError):
            # The writer ended (or the loop is stopping): the stream is over.
            self.close()
            raise StopIteration from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            self._on_close()  # the server thread is free again
        try:
            self._portal.call(self._scope.cancel)
            self._future.result()
        except (RuntimeError, CancelledError):
            pass  # the loop is already gone, and with it the writer
        except Exception:
            _log.exception("integration_status.flask.stream_failed")
        try:
            self._portal.call(self._receive.aclose)
        except RuntimeError:
            self._receive.close()  # the loop is gone, so nothing waits on the stream: closing here is safe


async def _run_writer(
    writer: Callable[[Write], Awaitable[None]],
    buffer: int,
    *,
    task_status: anyio.abc.TaskStatus[tuple[anyio.CancelScope, MemoryObjectReceiveStream[bytes]]],
) -> None:
    send, receive = anyio.create_memory_object_stream[bytes](max_buffer_size=buffer)
    with anyio.CancelScope() as scope:
        task_status.started((scope, receive))
        async with send:

            async def write(chunk: bytes) -> None:
                try:
                    await send.send(chunk)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    # Nobody reads any more: stop the writer, which cleans up in its finally blocks.
                    raise OSError("event stream closed") from None

            with suppress(OSError):
                await writer(write)
