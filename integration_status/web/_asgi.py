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
from integration_status.web.params import QueryParams, join_header_lines

__all__ = ["ScopeHeaders", "StatusEndpoint", "query_dict", "raw_headers", "scope_info"]


class ScopeHeaders(Mapping[str, str]):
    """The request headers of an ASGI scope as ``RequestInfo.headers`` has them (lower-case names, repeated lines
    joined as one value: see :mod:`integration_status.web.params`), read from the raw pairs on demand: a lookup
    scans the few raw pairs instead of decoding all of them into a dict on every request."""

    __slots__ = ("_all", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._all: dict[str, str] | None = None

    def _dict(self) -> dict[str, str]:
        if self._all is None:
            lines: dict[str, list[str]] = {}
            for name, value in self._raw:
                lines.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
            self._all = {k: v[0] if len(v) == 1 else join_header_lines(k, v) for k, v in lines.items()}
        return self._all

    def get(self, key: str, default: Any = None) -> Any:  # the hot path: authenticators call get()
        if self._all is None and key.isascii() and key.islower():
            wanted = key.encode("ascii")
            found: bytes | None = None
            more: list[str] | None = None
            for name, value in self._raw:
                # ASGI servers send lower-case names (the spec asks them to): lower() only for the others.
                if name == wanted or (not name.islower() and name.lower() == wanted):
                    if found is None:
                        found = value
                    elif more is None:
                        more = [found.decode("latin-1"), value.decode("latin-1")]
                    else:
                        more.append(value.decode("latin-1"))
            if found is None:
                return default
            return found.decode("latin-1") if more is None else join_header_lines(key, more)
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


def query_dict(query_string: bytes) -> QueryParams:
    """The query string's parameters as Starlette decodes them (blank values kept), the first value of a
    repeated name, and the repeated names (see :mod:`integration_status.web.params`); without escapes it is
    split directly instead of through ``parse_qsl``."""
    # Tested on the decoded text: ``b"%" in some_bytes`` goes through the buffer protocol and costs ten times
    # what ``"%" in some_str`` does.
    text = query_string.decode("latin-1")
    if "%" in text or "+" in text:
        return QueryParams(parse_qsl(text, keep_blank_values=True))
    if "&" not in text:  # one parameter (``?projectId=...``): the polled form
        if not text:
            return QueryParams()
        name, _, value = text.partition("=")
        return QueryParams.one(name, value)
    pairs: list[tuple[str, str]] = []
    for part in text.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return QueryParams(pairs)


def scope_info(scope: Scope, receive: Receive) -> RequestInfo:
    """The RequestInfo of an ASGI request, the same as the Starlette ``Request`` based one (``raw`` is a
    ``Request``), built from the scope without Starlette's URL, header and query objects."""
    # Request.url.path is the scope path with these three characters escaped.
    path = scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    # RequestInfo(method=..., ...) without attrs' frozen __init__ (one bound __setattr__ call per field): the
    # same slots filled through their descriptors, in a third of the time.
    info: RequestInfo = _new_info(RequestInfo)
    _set_method(info, scope["method"].upper())
    _set_path(info, path)
    _set_headers(info, ScopeHeaders(scope["headers"]))
    _set_query(info, query_dict(scope.get("query_string", b"")))
    _set_raw(info, Request(scope, receive))
    return info


_new_info: Final = object.__new__
_set_method, _set_path, _set_headers, _set_query, _set_raw = (
    RequestInfo.__dict__[name].__set__ for name in ("method", "path", "headers", "query", "raw")
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
        pairs: list[tuple[bytes, bytes]] | None = response.wire.get("asgi")
        headers = raw_headers(response) if pairs is None else list(pairs)  # raw_headers, without the call
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
