"""One rule for values a client sends more than once: a value the library reads once must come once.

- **Query parameters**: a repeated name (``?projectId=a&projectId=b``) is a 400 ``invalid_request``. Frameworks
  disagree on which copy wins (Starlette takes the last, Flask the first) and so may a proxy, a WAF or the host's
  own middleware in front: whichever copy the library picked, some layer would have judged the other one.
  Refusing leaves no copy to disagree about.
- **Headers**: repeated field lines are one comma-joined value (RFC 9110 section 5.3), as WSGI servers already
  hand them to Flask; the Starlette mount joins them the same way (``Cookie`` with ``"; "``), so both mounts see
  the same value. A list header (``If-None-Match``) simply gains tags. A header that carries one value
  (``Idempotency-Key``, ``Last-Event-ID``) with a bare comma is exactly what two lines look like once joined,
  so it is refused as a 400 too; webhook signature headers joined that way no longer parse and are a 401.
- **JSON object keys** in the actions body: a key that comes twice in one object, at any depth
  (``{"projectId": "a", "projectId": "b"}``), is a 400 ``invalid_request``. Parsers disagree on which copy
  wins (Python's and JavaScript's the last, some the first, some refuse), so a layer that read the body before
  the library could have judged the other copy. Webhook bodies are the providers' own bytes, covered by their
  signatures, and are parsed as they come.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from integration_status.exceptions import InvalidRequest
from integration_status.protocols import RequestInfo

__all__ = ["QueryParams", "join_header_lines", "refuse_repeated", "refuse_repeated_keys"]


class QueryParams(dict[str, str]):
    """A query string's parameters, the first value of each name, and the names that came more than once."""

    __slots__ = ("repeated",)

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        repeated: set[str] = set()
        for name, value in pairs:
            if name in self:
                repeated.add(name)
            else:
                self[name] = value
        self.repeated: frozenset[str] = frozenset(repeated)

    @classmethod
    def one(cls, name: str, value: str) -> QueryParams:
        """The parameters of a query string with one pair (what a poll sends), built without the loop."""
        params = _new_dict(cls)  # no __init__: nothing to loop over
        params[name] = value
        params.repeated = _NONE
        return params


_NONE: frozenset[str] = frozenset()
_new_dict = dict.__new__


def join_header_lines(name: str, values: list[str]) -> str:
    """Repeated field lines as one value (RFC 9110 section 5.3; ``Cookie`` lines join with ``"; "``)."""
    return ("; " if name == "cookie" else ",").join(values)


def refuse_repeated(request: RequestInfo, *single_headers: str) -> None:
    """:class:`InvalidRequest` (400) when a query parameter came twice, or one of ``single_headers`` (lower-case
    names of one-value headers) holds a comma, the form two lines of it take once joined."""
    repeated: frozenset[str] = getattr(request.query, "repeated", frozenset())
    if repeated:
        name = min(repeated)[:64]
        raise InvalidRequest(f"The query parameter {name!r} is repeated", hint="Send each parameter once")
    for header in single_headers:
        value = request.headers.get(header)
        if value and "," in value:
            raise InvalidRequest(f"The {header} header must be sent once, with one value")


def refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """One JSON object from its ``pairs`` (a ``json.loads`` ``object_pairs_hook``); :class:`InvalidRequest`
    (400) when a key comes twice, naming the key, never a value."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidRequest(
                    f"The key {key[:64]!r} is repeated in the body", hint="Send each key once"
                )
            seen.add(key)
    return obj
