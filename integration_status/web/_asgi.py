"""The status route's fast path on ASGI: the most polled endpoint skips Starlette's Request/Response round trip
and sends its answer directly, with the request read from the raw scope on demand.

It runs the same handler as every other mount (:func:`integration_status.web.handlers.handle_status`); only
the translation to and from ASGI is special. ``tests/web/test_status_asgi.py`` pins it to the plain Starlette
path: the same request gives the same status, headers and body either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from integration_status.protocols import RequestInfo
from integration_status.service.facade import StatusService
from integration_status.web import handlers
from integration_status.web.handlers import Response

__all__ = ["ScopeHeaders", "StatusEndpoint", "query_dict", "raw_headers", "scope_info"]


class ScopeHeaders(Mapping[str, str]):
    """The request headers of an ASGI scope as ``RequestInfo.headers`` has them (lower-case names, the first
    value of a repeated header), read from the raw pairs on demand: a lookup scans the few raw pairs instead
    of decoding all of them into a dict on every request."""

    __slots__ = ("_all", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._all: dict[str, str] | None = None

    def _dict(self) -> dict[str, str]:
        if self._all is None:
            built: dict[str, str] = {}
            for name, value in self._raw:
                built.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
            self._all = built
        return self._all

    def get(self, key: str, default: Any = None) -> Any:  # the hot path: authenticators call get()
        if self._all is None and key.isascii() and key.islower():
            wanted = key.encode("ascii")
            for name, value in self._raw:
                if name == wanted or name.lower() == wanted:
                    return value.decode("latin-1")
            return default
        return self._dict().get(key, default)

    def __getitem__(self, key: str) -> str:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _MISSING) is not _MISSING

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"ScopeHeaders({self._dict()!r})"


_MISSING: Final = object()


def query_dict(query_string: bytes) -> dict[str, str]:
    """The query string as ``dict(request.query_params)`` has it (blank values kept, the last value of a
    repeated name wins); without escapes it is split directly instead of through ``parse_qsl``."""
    if b"%" in query_string or b"+" in query_string:
        return dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
    query: dict[str, str] = {}
    for part in query_string.decode("latin-1").split("&"):
        if part:
            name, _, value = part.partition("=")
            query[name] = value
    return query


def scope_info(scope: Scope, receive: Receive) -> RequestInfo:
    """The RequestInfo of an ASGI request, the same as the Starlette ``Request`` based one (``raw`` is a
    ``Request``), built from the scope without Starlette's URL, header and query objects."""
    # Request.url.path is the scope path with these three characters escaped.
    path = scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    return RequestInfo(
        method=scope["method"].upper(),
        path=path,
        headers=ScopeHeaders(scope["headers"]),
        query=query_dict(scope.get("query_string", b"")),
        raw=Request(scope, receive),
    )


def raw_headers(response: Response) -> list[tuple[bytes, bytes]]:
    """The ASGI header pairs a Starlette ``Response`` would send for ``response`` (names lower-cased, the last
    value of a repeated name, ``content-length`` added except on 1xx/204/304). Encoded once per response
    object (status answers are shared by every request of a viewer class); a new list each time: middleware
    may append to the list it is sent."""
    pairs: list[tuple[bytes, bytes]] | None = response.wire.get("asgi")
    if pairs is None:
        unique = dict(response.headers).items()
        pairs = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in unique]
        status = response.status
        if b"content-length" not in [k for k, _ in pairs] and not (status < 200 or status in (204, 304)):
            pairs.append((b"content-length", str(len(response.body)).encode("latin-1")))
        response.wire["asgi"] = pairs
    return list(pairs)


class StatusEndpoint:
    """``GET /status`` as a plain ASGI app (a Starlette ``Route`` treats a non-function endpoint as one): the
    most polled endpoint skips Starlette's Request/Response round trip and sends its answer directly."""

    def __init__(self, service: StatusService) -> None:
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await handlers.handle_status(self._service, scope_info(scope, receive))
        headers = raw_headers(response)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
