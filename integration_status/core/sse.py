"""Server-Sent Events frames, encoded by pure functions (WHATWG HTML, "Server-sent events").

A frame is a block of ``field: value`` lines ended by a blank line. CR, LF and CRLF all end a line for the
browser, so data is split on any of them into several ``data:`` lines (the browser joins them with
``\\n``), and ``id`` / ``event`` values containing a line break are refused: a line break there would let a
value inject fields of its own. An ``id`` containing NUL is ignored by browsers, so it is refused too.

>>> encode_event(data={"a": 1}, event="status:update", id="5-0")
b'id: 5-0\\nevent: status:update\\ndata: {"a":1}\\n\\n'
>>> encode_comment("ping")
b': ping\\n\\n'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["SSE_HEADERS", "encode_comment", "encode_event"]

#: Headers of an event stream. No ``Connection`` header: it is hop-by-hop and forbidden in HTTP/2.
#: ``X-Accel-Buffering: no`` stops nginx from buffering the stream.
SSE_HEADERS: Final[Mapping[str, str]] = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _field_value(name: str, value: str, *, forbid_nul: bool = False) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"an SSE {name} must not contain a line break")
    if forbid_nul and "\0" in value:
        raise ValueError(f"an SSE {name} must not contain NUL")
    return value


def encode_event(
    *,
    data: str | Mapping[str, Any],
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """One event frame, UTF-8. A Mapping ``data`` is sent as compact JSON; a string as is, one ``data:`` line
    per line. ``retry`` is the reconnection delay in milliseconds.

    An empty ``data`` string is encoded, but browsers do not dispatch an event whose data is empty.

    >>> encode_event(data="a\\r\\nb", retry=3000)
    b'retry: 3000\\ndata: a\\ndata: b\\n\\n'
    """
    lines: list[str] = []
    if id is not None:
        lines.append("id: " + _field_value("id", id, forbid_nul=True))
    if event is not None:
        lines.append("event: " + _field_value("event", event))
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError("an SSE retry must be a non-negative integer of milliseconds")
        lines.append(f"retry: {retry}")
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    # "data: " with its space: the parser drops exactly one leading space, so a leading space survives.
    lines.extend("data: " + line for line in _LINE_BREAK.split(text))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    """A comment frame (ignored by clients), e.g. a heartbeat that keeps proxies from closing an idle stream.

    >>> encode_comment("a\\nb")
    b': a\\n: b\\n\\n'
    >>> encode_comment()
    b':\\n\\n'
    """
    lines = (": " + line if line else ":" for line in _LINE_BREAK.split(text))
    return ("\n".join(lines) + "\n\n").encode("utf-8")
