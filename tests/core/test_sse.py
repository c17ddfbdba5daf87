from __future__ import annotations

import json
import re

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status.core.sse import SSE_HEADERS, encode_comment, encode_event


@attrs.frozen
class Parsed:
    type: str
    data: str
    last_event_id: str


@attrs.define
class Parser:
    """The WHATWG HTML "event stream interpretation" algorithm, as a browser runs it."""

    events: list[Parsed] = attrs.field(factory=list)
    retry: int | None = None
    comments: int = 0

    def feed(self, raw: bytes) -> list[Parsed]:
        text = raw.decode("utf-8")
        text = text.removeprefix("\ufeff")
        data, event_type, last_id = "", "", ""
        lines = re.split(r"\r\n|\r|\n", text)
        # The final element is what follows the last line end: an unterminated line, which is not processed.
        for line in lines[:-1]:
            if line == "":
                if data == "":
                    event_type = ""
                    continue
                self.events.append(Parsed(event_type or "message", data.removesuffix("\n"), last_id))
                data, event_type = "", ""
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            field, sep, value = line.partition(":")
            if sep:
                value = value.removeprefix(" ")
            if field == "event":
                event_type = value
            elif field == "data":
                data += value + "\n"
            elif field == "id":
                if "\0" not in value:
                    last_id = value
            elif field == "retry" and value and all(c in "0123456789" for c in value):
                self.retry = int(value)
        return self.events


def test_event_frame_layout() -> None:
    """id, event, data lines in that order, ended by a blank line."""
    frame = encode_event(data={"type": "github:push", "ts": 1}, event="github:push", id="1764136800000-0")
    assert frame == b'id: 1764136800000-0\nevent: github:push\ndata: {"type":"github:push","ts":1}\n\n'


def test_mapping_data_is_compact_utf8_json() -> None:
    """JSON data has no whitespace and keeps non-ASCII text as UTF-8."""
    frame = encode_event(data={"summary": "Linked · main", "n": [1, 2]})
    assert frame == 'data: {"summary":"Linked · main","n":[1,2]}\n\n'.encode()
    (event,) = Parser().feed(frame)
    assert json.loads(event.data) == {"summary": "Linked · main", "n": [1, 2]}


def test_multiline_data_becomes_several_data_lines() -> None:
    """Every CR, LF or CRLF in data starts a new data line."""
    assert encode_event(data="a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"


def test_retry_is_in_milliseconds() -> None:
    """retry: carries the reconnection delay the browser adopts."""
    parser = Parser()
    parser.feed(encode_event(data="x", retry=5000))
    assert parser.retry == 5000


@pytest.mark.parametrize("retry", [-1, True, 1.5])
def test_bad_retry_is_refused(retry: object) -> None:
    """retry must be a non-negative integer."""
    with pytest.raises(ValueError, match="retry"):
        encode_event(data="x", retry=retry)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", "1-0\nevent: x"), ("id", "1\r"), ("id", "1\0"), ("event", "a\nid: 9"), ("event", "a\rb")],
)
def test_line_breaks_in_id_or_event_are_refused(field: str, value: str) -> None:
    """A value that could inject another field (or an id with NUL) is refused."""
    with pytest.raises(ValueError, match=field):
        encode_event(data="x", **{field: value})  # type: ignore[arg-type]


def test_comment_is_ignored_by_clients_and_multiline_safe() -> None:
    """Comments dispatch nothing, however many lines the text has."""
    parser = Parser()
    assert parser.feed(encode_comment("a\nb\r\ndata: injected")) == []
    assert parser.comments == 3
    assert encode_comment() == b":\n\n"
    assert encode_comment("heartbeat") == b": heartbeat\n\n"


def test_headers() -> None:
    """Event-stream headers: no caching, no proxy buffering, no Connection header."""
    assert SSE_HEADERS == {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
    }
    assert "Connection" not in SSE_HEADERS


def normalized(text: str) -> str:
    return re.sub(r"\r\n|\r", "\n", text)


safe_field = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=30)


@given(
    data=st.text(st.characters(codec="utf-8"), min_size=1),
    event=st.one_of(st.none(), safe_field.filter(bool)),
    event_id=st.one_of(st.none(), safe_field),
)
def test_round_trip_through_a_whatwg_parser(data: str, event: str | None, event_id: str | None) -> None:
    """Whatever the data (CR, LF, CRLF, leading spaces, colons), a browser decodes exactly what was sent."""
    frame = encode_event(data=data, event=event, id=event_id)
    (parsed,) = Parser().feed(frame)
    assert parsed.data == normalized(data)
    assert parsed.type == (event or "message")
    assert parsed.last_event_id == (event_id or "")


@given(st.lists(st.text(st.characters(codec="utf-8"), min_size=1), min_size=1, max_size=5))
def test_consecutive_frames_stay_separate(datas: list[str]) -> None:
    """Frames concatenated on one stream decode as separate events, comments in between change nothing."""
    stream = b"".join(encode_event(data=d, id=str(i)) + encode_comment("hb") for i, d in enumerate(datas))
    parsed = Parser().feed(stream)
    assert [p.data for p in parsed] == [normalized(d) for d in datas]
    assert [p.last_event_id for p in parsed] == [str(i) for i in range(len(datas))]
