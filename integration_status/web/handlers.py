"""Framework-neutral request handlers: a :class:`~integration_status.protocols.RequestInfo` in, a
:class:`Response` out. The Starlette and Flask mounts only translate to and from their own types.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

import attrs
import structlog

from integration_status.exceptions import RequestError
from integration_status.protocols import RequestInfo
from integration_status.service import StatusService

_log = structlog.get_logger("integration_status.web")

JSON_TYPE: Final = "application/json"
NO_STORE: Final = ("Cache-Control", "no-store")


@attrs.frozen(kw_only=True)
class Response:
    """What a mount sends: status, headers, and either a body or a stream of chunks (SSE)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    stream: Callable[[], AsyncIterator[bytes]] | None = None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON, as every endpoint sends it."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(status: int, data: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status=status, headers=(("Content-Type", JSON_TYPE), NO_STORE, *headers), body=dumps(data))


def error_response(exc: RequestError, headers: tuple[tuple[str, str], ...] = (), *, envelope: bool = False) -> Response:
    """The SPEC.md error object; ``envelope=True`` wraps it as the actions endpoint does
    (``{"success": false, "error": {...}}``)."""
    body: dict[str, Any] = {"error": exc.to_json()}
    if envelope:
        body = {"success": False, **body}
    extra = headers
    if exc.retry_after is not None:
        extra = (("Retry-After", str(exc.retry_after)), *headers)
    return json_response(exc.http_status, body, extra)


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
    headers = (("ETag", result.etag), NO_STORE)
    if result.not_modified:
        return Response(status=304, headers=headers)
    return Response(
        status=200, headers=(("Content-Type", JSON_TYPE), *headers), body=dumps(result.envelope.to_json())
    )
