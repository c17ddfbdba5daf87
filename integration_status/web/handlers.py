"""Framework-neutral request handlers: a :class:`~integration_status.protocols.RequestInfo` in, a
:class:`Response` out. The Starlette and Flask mounts only translate to and from their own types.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Concatenate, Final, NoReturn, ParamSpec

import attrs

from integration_status._logging import get_logger
from integration_status.core.events import resume_event_id
from integration_status.core.health import LIVENESS
from integration_status.core.sse import SSE_HEADERS
from integration_status.exceptions import BackendUnavailable, InvalidRequest, RequestError
from integration_status.protocols import RequestInfo
from integration_status.service.facade import StatusService
from integration_status.service.streams import Write, Writer
from integration_status.web.params import QueryParams, refuse_repeated, refuse_repeated_keys

__all__ = [
    "HTTP_ERROR_CODES",
    "MAX_ACTION_BODY",
    "Response",
    "Write",
    "Writer",
    "error_response",
    "handle_action",
    "handle_events",
    "handle_health",
    "handle_openapi",
    "handle_status",
    "handle_webhook",
    "json_response",
    "parse_json_body",
    "request_info",
]

_log = get_logger("integration_status.web")

JSON_TYPE: Final = "application/json"
NO_STORE: Final = ("Cache-Control", "no-store")

SSE_RESPONSE_HEADERS: Final = tuple(SSE_HEADERS.items())

#: ``error.code`` of the answers routing itself gives (unknown path, wrong method).
HTTP_ERROR_CODES: Final = {404: "not_found", 405: "invalid_request"}


@attrs.frozen(kw_only=True)
class Response:
    """What a mount sends: status, headers, and either a body or a ``writer`` that streams chunks (SSE).

    The mount runs ``writer(write)`` and cancels it when the client disconnects; the writer cleans up in
    ``finally`` blocks.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    writer: Writer | None = None
    #: Encodings of this response made by a mount (e.g. its raw ASGI headers), for responses that are reused.
    wire: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False, hash=False)


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
    """The error object every endpoint answers with; ``envelope=True`` wraps it as the actions endpoint does
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
    """503 with the error object (code ``unknown``): state-changing requests fail closed while the store
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
        query=query if isinstance(query, QueryParams) else dict(query),
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


async def handle_status(service: StatusService, request: RequestInfo) -> Response:
    """``GET {prefix}/status?projectId=``: 200 with the envelope and its ETag, or 304 when ``If-None-Match``
    matches; 401/400/404 first (they win over ``If-None-Match``). Timed for ``service.metrics`` as ``status``
    (inline rather than by :func:`_timed`: this is the most polled path, and a wrapper is one more frame)."""
    clock = service.clock
    started = clock.monotonic()
    try:
        if getattr(request.query, "repeated", None):
            refuse_repeated(request)
        viewer = await service.authenticate(request)
        result = await service.status(
            request.query.get("projectId"), viewer, if_none_match=request.headers.get("if-none-match")
        )
    except RequestError as exc:
        response = error_response(exc)
    else:
        # One result object per rendering and answer, shared by every request of a viewer class: so is the
        # response.
        answer: Response | None = result.wire.get("response")
        if answer is None:
            headers = (("ETag", result.etag), NO_STORE)
            if result.not_modified:
                answer = Response(status=304, headers=headers)
            else:
                answer = Response(
                    status=200, headers=(("Content-Type", JSON_TYPE), *headers), body=result.body
                )
            result.wire["response"] = answer
        response = answer
    service.metrics.observe_request("status", clock.monotonic() - started, response.status)
    return response


# --- actions ------------------------------------------------------------------------------------------------

MAX_ACTION_BODY: Final = 64 * 1024


_NOT_FINITE: Final = "body holds a number that is not finite (NaN, Infinity, or out of range)"


def _finite(text: str) -> float:
    value = float(text)  # a decimal beyond a float's range (1e999) comes out as an infinity
    if not math.isfinite(value):
        raise InvalidRequest(_NOT_FINITE)
    return value


def _not_a_number(name: str) -> NoReturn:
    raise InvalidRequest(_NOT_FINITE)


def parse_json_body(body: bytes) -> Any:
    """A request body as JSON, more strictly than Python's parser takes it: a key repeated in one object (see
    :mod:`~integration_status.web.params`), ``NaN``, ``Infinity`` and a number beyond a float's range are
    refused. Any of them, or a body that is not UTF-8 JSON, is a 400 ``invalid_request``.

    >>> parse_json_body(b'{"projectId": "demo", "payload": {"n": 1.5}}')
    {'projectId': 'demo', 'payload': {'n': 1.5}}
    """
    try:
        return json.loads(
            body.decode("utf-8"),
            object_pairs_hook=refuse_repeated_keys,
            parse_float=_finite,
            parse_constant=_not_a_number,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise InvalidRequest("body is not valid JSON") from None


@_timed("actions")
async def handle_action(service: StatusService, request: RequestInfo, body: bytes) -> Response:
    """``POST {prefix}/actions``: see :mod:`integration_status.service.actions` for the order of checks."""
    try:
        refuse_repeated(request)
        viewer = await service.authenticate(request)
        if len(body) > MAX_ACTION_BODY:
            raise InvalidRequest(f"body larger than {MAX_ACTION_BODY} bytes")
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise InvalidRequest("Content-Type must be application/json")
        result = await service.act(
            viewer,
            parse_json_body(body),
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
    """``GET {prefix}/events?projectId=``: a Server-Sent Events stream, redacted for this viewer (see
    :mod:`integration_status.service.streams` for what it sends)."""
    try:
        refuse_repeated(request, "last-event-id")
        viewer = await service.authenticate(request)
        connections = await service.project(request.query.get("projectId"), viewer)
    except RequestError as exc:
        return error_response(exc)
    last_event_id = resume_event_id(request.headers.get("last-event-id") or request.query.get("lastEventId"))
    try:
        # Before the 200: a stream that cannot start (the store is down) is a 503, not a body that breaks.
        await service.events_ready(connections.project_id)
    except BackendUnavailable as exc:
        return store_unavailable(exc, retry_after=STORE_RETRY_AFTER)
    writer = service.open_stream(viewer, connections, last_event_id=last_event_id)
    return Response(status=200, headers=SSE_RESPONSE_HEADERS, writer=writer)


# --- health -------------------------------------------------------------------------------------------------


async def handle_health(service: StatusService, request: RequestInfo) -> Response:
    """``GET {prefix}/health``: for an authenticated viewer the host's ``health_authorizer`` allows, 200 when every
    check of :func:`integration_status.core.health.evaluate` passes over the service's recent statistics, else
    503, the body listing each check; for everyone else the liveness answer ``{"status": "ok"}`` (200), which
    says nothing about providers."""
    try:
        refuse_repeated(request)
    except RequestError as exc:
        return error_response(exc)
    if await _may_read_health(service, request):
        report = service.health.report()
        return json_response(report.http_status, report.to_json())
    return json_response(200, LIVENESS)


async def _may_read_health(service: StatusService, request: RequestInfo) -> bool:
    allow = service.health_authorizer
    if allow is None:
        return False
    try:
        viewer = await service.authenticate(request)
    except RequestError:  # unauthenticated: the liveness answer, not a 401 (probes carry no credentials)
        return False
    return bool(await allow(viewer))


# --- openapi ------------------------------------------------------------------------------------------------


def handle_openapi(prefix: str) -> Response:
    """``GET {prefix}/openapi.json``: the OpenAPI 3.1 document of every endpoint under this prefix."""
    from integration_status.web.openapi import openapi_document

    return json_response(200, openapi_document(prefix=prefix))
