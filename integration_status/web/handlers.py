"""Framework-neutral request handlers: a :class:`~integration_status.protocols.RequestInfo` in, a
:class:`Response` out. The Starlette and Flask mounts only translate to and from their own types.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Concatenate, Final, ParamSpec, TypeAlias

import attrs
import structlog

from integration_status.core.sse import SSE_HEADERS, encode_comment, encode_event
from integration_status.exceptions import BackendUnavailable, InvalidRequest, RequestError, SubscriberLagging
from integration_status.protocols import RequestInfo, StoredEvent
from integration_status.service.facade import StatusService
from integration_status.service.render import StatusResult

_log = structlog.get_logger("integration_status.web")

JSON_TYPE: Final = "application/json"
NO_STORE: Final = ("Cache-Control", "no-store")

_SSE_HEADERS: Final = tuple(SSE_HEADERS.items())
#: The first frame of every event stream.
CONNECTED: Final = encode_comment("connected")

#: ``error.code`` of the answers routing itself gives (unknown path, wrong method).
HTTP_ERROR_CODES: Final = {404: "not_found", 405: "invalid_request"}

#: How a streaming handler sends one chunk; the mount implements it over its server.
Write: TypeAlias = Callable[[bytes], Awaitable[None]]


@attrs.frozen(kw_only=True)
class Response:
    """What a mount sends: status, headers, and either a body or a ``writer`` that streams chunks (SSE).

    The mount runs ``writer(write)`` and cancels it when the client disconnects; the writer cleans up in
    ``finally`` blocks.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    writer: Callable[[Write], Awaitable[None]] | None = None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON, as every endpoint sends it."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(status: int, data: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(
        status=status, headers=(("Content-Type", JSON_TYPE), NO_STORE, *headers), body=dumps(data)
    )


def error_response(
    exc: RequestError, headers: tuple[tuple[str, str], ...] = (), *, envelope: bool = False
) -> Response:
    """The SPEC.md error object; ``envelope=True`` wraps it as the actions endpoint does
    (``{"success": false, "error": {...}}``)."""
    body: dict[str, Any] = {"error": exc.to_json()}
    if envelope:
        body = {"success": False, **body}
    extra = headers
    # The rate limiter's headers may already carry Retry-After: send it once, or clients see "60, 60".
    if exc.retry_after is not None and not any(name.lower() == "retry-after" for name, _ in headers):
        extra = (("Retry-After", str(exc.retry_after)), *headers)
    return json_response(exc.http_status, body, extra)


#: What a client is told when the shared store (Redis) is unreachable: no infrastructure details.
STORE_UNAVAILABLE: Final = "The shared store is unavailable"


#: Seconds an event stream refused for a store outage is told to wait before reconnecting.
STORE_RETRY_AFTER: Final = 5


def store_unavailable(
    exc: BackendUnavailable, *, envelope: bool = False, retry_after: int | None = None
) -> Response:
    """503 with the SPEC error object (code ``unknown``): state-changing requests fail closed while the store
    is down. The endpoint named in ``exc`` goes to the log only."""
    _log.warning("integration_status.web.store_unavailable", error=str(exc))
    body: dict[str, Any] = {"error": {"code": "unknown", "message": STORE_UNAVAILABLE, "hint": "Try again"}}
    if envelope:
        body = {"success": False, **body}
    headers = () if retry_after is None else (("Retry-After", str(retry_after)),)
    return json_response(503, body, headers)


def request_info(
    method: str, path: str, headers: Mapping[str, str], query: Mapping[str, str], raw: Any = None
) -> RequestInfo:
    return RequestInfo(
        method=method.upper(),
        path=path,
        headers={k.lower(): v for k, v in headers.items()},
        query=dict(query),
        raw=raw,
    )


_P = ParamSpec("_P")


def _timed(
    endpoint: str,
) -> Callable[
    [Callable[Concatenate[StatusService, RequestInfo, _P], Awaitable[Response]]],
    Callable[Concatenate[StatusService, RequestInfo, _P], Awaitable[Response]],
]:
    """Report the handler's duration and status to ``service.metrics`` as ``endpoint``."""

    def wrap(
        fn: Callable[Concatenate[StatusService, RequestInfo, _P], Awaitable[Response]],
    ) -> Callable[Concatenate[StatusService, RequestInfo, _P], Awaitable[Response]]:
        async def timed(
            service: StatusService, request: RequestInfo, /, *args: _P.args, **kw: _P.kwargs
        ) -> Response:
            started = service.clock.monotonic()
            response = await fn(service, request, *args, **kw)
            service.metrics.observe_request(endpoint, service.clock.monotonic() - started, response.status)
            return response

        functools.update_wrapper(timed, fn)
        return timed

    return wrap


@_timed("status")
async def handle_status(service: StatusService, request: RequestInfo) -> Response:
    """``GET {prefix}/status?projectId=``: 200 with the envelope and its ETag, or 304 when ``If-None-Match``
    matches; 401/400/404 first (they win over ``If-None-Match``)."""
    try:
        viewer = await service.authenticate(request)
        result = await service.status(
            request.query.get("projectId"), viewer, if_none_match=request.headers.get("if-none-match")
        )
    except RequestError as exc:
        return error_response(exc)
    # The service hands out one result object per rendered envelope and answer: so is the response.
    known = _STATUS_RESPONSES.get(id(result))
    if known is not None and known[0] is result:
        return known[1]
    headers = (("ETag", result.etag), NO_STORE)
    if result.not_modified:
        response = Response(status=304, headers=headers)
    else:
        body = result.body or dumps(result.envelope.to_json())
        response = Response(status=200, headers=(("Content-Type", JSON_TYPE), *headers), body=body)
    if len(_STATUS_RESPONSES) >= STATUS_RESPONSES_SIZE:
        _STATUS_RESPONSES.clear()
    # Keeping the result keeps its id() from being reused while the entry lives.
    _STATUS_RESPONSES[id(result)] = (result, response)
    return response


STATUS_RESPONSES_SIZE: Final = 1024
_STATUS_RESPONSES: dict[int, tuple[StatusResult, Response]] = {}


# --- actions ------------------------------------------------------------------------------------------------

MAX_ACTION_BODY: Final = 64 * 1024


@_timed("actions")
async def handle_action(service: StatusService, request: RequestInfo, body: bytes) -> Response:
    """``POST {prefix}/actions``: see :mod:`integration_status.service.actions` for the order of checks."""
    try:
        viewer = await service.authenticate(request)
        if len(body) > MAX_ACTION_BODY:
            raise InvalidRequest(f"body larger than {MAX_ACTION_BODY} bytes")
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise InvalidRequest("Content-Type must be application/json")
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise InvalidRequest("body is not valid JSON") from None
        result = await service.act(
            viewer,
            parsed,
            idempotency_key=request.headers.get("idempotency-key"),
            method=request.method,
            path=request.path,
        )
    except RequestError as exc:
        return error_response(exc, tuple(getattr(exc, "headers", {}).items()), envelope=True)
    except BackendUnavailable as exc:
        # The idempotency key or rate limit could not be checked: refused, never run unchecked.
        return store_unavailable(exc, envelope=True)
    return json_response(result.status, result.body, tuple(result.headers.items()))


# --- webhooks -----------------------------------------------------------------------------------------------


async def handle_webhook(
    service: StatusService, provider: str, request: RequestInfo, body: bytes
) -> Response:
    """``POST {prefix}/webhooks/{provider}``: signed deliveries become events (see :mod:`~.service.webhooks`)."""
    try:
        result = await service.ingest_webhook(provider, request.headers, body)
    except BackendUnavailable as exc:
        return store_unavailable(exc)  # the provider retries the delivery later
    return json_response(result.status, result.body)


# --- events -------------------------------------------------------------------------------------------------


async def handle_events(service: StatusService, request: RequestInfo) -> Response:
    """``GET {prefix}/events?projectId=``: a Server-Sent Events stream, redacted for this viewer.

    On connect: a ``status:update`` snapshot, unless ``Last-Event-ID`` is still in the buffer, in which case
    every later event is replayed instead. A ``status:update`` is sent only when the viewer's items differ from
    the last ones this stream sent. A heartbeat comment every ``settings.heartbeat`` seconds. Over the
    connection caps: a ``retry:`` hint and the stream ends at once.
    """
    try:
        viewer = await service.authenticate(request)
        connections = await service.project(request.query.get("projectId"), viewer)
    except RequestError as exc:
        return error_response(exc)
    last_event_id = request.headers.get("last-event-id") or request.query.get("lastEventId") or None
    headers = _SSE_HEADERS
    try:
        # Before the 200: a stream that cannot start (the store is down) is a 503, not a body that breaks.
        await service.events_ready(connections.project_id)
    except BackendUnavailable as exc:
        return store_unavailable(exc, retry_after=STORE_RETRY_AFTER)

    if not service.sse_connections.acquire(viewer.user_id):
        _log.info("integration_status.sse.refused", reason="connection cap")

        async def refuse(write: Write) -> None:
            await write(encode_event(data="too many connections", event="error", retry=30_000))

        return Response(status=200, headers=headers, writer=refuse)

    async def stream(write: Write) -> None:
        # One task per stream: heartbeats and shutdown come from the service's StreamHub, which interrupts
        # the wait for the next event; frames are rendered and encoded once per kind of viewer.
        dropped = False  # ended by an error on our side (not the client going away, not shutdown)
        service.metrics.sse_connections(1)
        try:
            async with service.subscribe(connections.project_id, last_event_id=last_event_id) as subscription:
                await write(CONNECTED)
                last_items: object = None
                if last_event_id is None or subscription.gap:
                    snapshot, last_items = await service.snapshot_frame(
                        connections, viewer, event_id=subscription.resume_id
                    )
                    await write(snapshot)
                    del snapshot  # not kept while the stream lives

                async def send(stored: StoredEvent) -> None:
                    nonlocal last_items
                    frame, items = await service.event_frame(stored, connections, viewer)
                    if frame is None:
                        return
                    if items is not None:
                        # Only what changed for this viewer: several raw markers can render alike.
                        if items == last_items:
                            return
                        last_items = items
                    await write(frame)

                beat = service.streams.open()
                try:
                    await beat.pump(aiter(subscription), send, write)
                except (SubscriberLagging, BackendUnavailable) as exc:
                    # End the stream; the client reconnects and resumes with Last-Event-ID.
                    _log.info("integration_status.sse.dropped", error=type(exc).__name__)
                    dropped = True
                finally:
                    service.streams.close_stream(beat)
        except BackendUnavailable as exc:
            # The store went away between the check above and subscribing: end with a retry hint, no traceback.
            _log.info("integration_status.sse.dropped", error=type(exc).__name__)
            dropped = True
            await write(encode_event(data=STORE_UNAVAILABLE, event="error", retry=STORE_RETRY_AFTER * 1000))
        except Exception as exc:
            dropped = not isinstance(exc, OSError)  # OSError: the connection broke under the write
            raise
        finally:
            service.sse_connections.release(viewer.user_id)
            service.metrics.sse_connections(-1, dropped=dropped)

    return Response(status=200, headers=headers, writer=stream)


# --- health -------------------------------------------------------------------------------------------------


async def handle_health(service: StatusService, request: RequestInfo) -> Response:
    """``GET {prefix}/health``: 200 when every check of :func:`integration_status.core.health.evaluate` passes
    over the service's recent statistics, else 503; the body lists each check either way."""
    report = service.health.report()
    return json_response(report.http_status, report.to_json())


# --- openapi ------------------------------------------------------------------------------------------------


def handle_openapi(prefix: str) -> Response:
    """``GET {prefix}/openapi.json``: the OpenAPI 3.1 document of every endpoint under this prefix."""
    from integration_status.web.openapi import openapi_document

    return json_response(200, openapi_document(prefix=prefix))
