"""The status route's direct ASGI path reads requests and writes responses exactly as Starlette's Request and
Response objects would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import Response as StarletteResponse

from integration_status.web._asgi import ScopeHeaders, query_dict, raw_headers, scope_info
from integration_status.web.handlers import Response

# ASGI servers send lower-cased header names (the ASGI spec asks for it; Starlette relies on it).
NAMES = st.sampled_from([b"host", b"x-user", b"if-none-match", b"accept", b"x-role", b"\xe9t\xe9"])
VALUES = st.binary(max_size=12)
HEADERS = st.lists(st.tuples(NAMES, VALUES), max_size=6)
QUERY = st.lists(
    st.text(alphabet="ab=&%+;é2F0", max_size=6).map(lambda s: s.encode("utf-8")), max_size=4
).map(lambda parts: b"&".join(parts))


def _scope(headers: list[tuple[bytes, bytes]], query: bytes = b"", path: str = "/s") -> dict[str, object]:
    return {"type": "http", "method": "get", "path": path, "query_string": query, "headers": headers}


def _joined(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """What a WSGI server hands Flask: lower-case names, repeated lines joined with commas."""
    lines: dict[str, list[str]] = {}
    for name, value in headers:
        lines.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return {k: ("; " if k == "cookie" else ",").join(v) for k, v in lines.items()}


@given(headers=HEADERS, probe=st.sampled_from(["x-user", "X-User", "if-none-match", "missing", "été", "ét"]))
def test_scope_headers_join_repeated_lines(headers: list[tuple[bytes, bytes]], probe: str) -> None:
    """Lookups, iteration and length equal the lower-cased headers with repeated lines joined by commas, as a
    WSGI server gives them to Flask; a single line is Starlette's own value."""
    expected = _joined(headers)
    lazy = ScopeHeaders(headers)
    assert lazy.get(probe) == expected.get(probe)
    assert (probe in lazy) == (probe in expected)
    assert dict(lazy) == expected
    assert len(lazy) == len(expected)
    single = {k.lower(): v for k, v in dict(Request(_scope(headers)).headers).items()}
    for name in expected:
        if sum(1 for n, _ in headers if n.decode("latin-1").lower() == name) == 1:
            assert expected[name] == single[name]


def test_repeated_cookie_lines_join_with_semicolons() -> None:
    """Cookie lines split by an HTTP/2 hop are joined with "; ", as RFC 9113 8.2.3 asks."""
    lazy = ScopeHeaders([(b"cookie", b"a=1"), (b"cookie", b"b=2")])
    assert lazy.get("cookie") == "a=1; b=2"


@given(query=QUERY)
def test_query_dict_keeps_the_first_value_and_the_repeated_names(query: bytes) -> None:
    """The query mapping decodes like Starlette, keeps the first value of a name and records repeated names."""
    pairs = Request(_scope([], query)).query_params.multi_items()
    parsed = query_dict(query)
    first: dict[str, str] = {}
    for name, value in pairs:
        first.setdefault(name, value)
    assert dict(parsed) == first
    assert parsed.repeated == {name for name, _ in pairs if [n for n, _ in pairs].count(name) > 1}


@given(path=st.text(alphabet="/ab?#\\%é", min_size=1, max_size=8).map(lambda p: "/" + p))
def test_scope_info_path_and_method_match_starlette(path: str) -> None:
    """RequestInfo.path is request.url.path and the method is upper-cased; raw is a Starlette Request."""
    scope = _scope([(b"host", b"example.com")], b"projectId=p", path)
    info = scope_info(scope, None)  # type: ignore[arg-type]
    request = Request(scope)
    assert (info.method, info.path, info.query) == ("GET", request.url.path, {"projectId": "p"})
    assert isinstance(info.raw, Request)


@given(
    status=st.sampled_from([200, 304, 204, 401, 503]),
    headers=st.lists(
        st.tuples(
            st.sampled_from(["ETag", "Cache-Control", "content-type", "Retry-After", "Content-Length"]),
            st.text(alphabet='abc"1', max_size=5),
        ),
        max_size=4,
    ),
    body=st.binary(max_size=20),
)
def test_raw_headers_match_a_starlette_response(
    status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    """The header pairs equal those of the Starlette response the other routes build, every time asked."""
    response = Response(status=status, headers=tuple(headers), body=body)
    expected = StarletteResponse(content=body, status_code=status, headers=dict(headers)).raw_headers
    first = raw_headers(response)
    assert first == expected
    first.append((b"x-added", b"by middleware"))
    assert raw_headers(response) == expected
